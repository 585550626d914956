"""Run-directory files: append-only transcript, atomic parquet tables and the manifest."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from simworld.errors import ConfigError, ResumeError
from simworld.support import rundir
from simworld.support.recipients import (
    COMPACT,
    EXPLICIT,
    Recipients,
    RecipientsFormat,
    UnresolvedRecipients,
)
from simworld.support.redact import Redactor
from simworld.support.rundir import read_manifest as read_manifest  # its home; kept importable here

if TYPE_CHECKING:
    from simworld.engine.record import StepRecord
    from simworld.llm.gateway import CallOutcome

OPINION_SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("agent", pa.string()),
        ("topic", pa.string()),
        ("value", pa.float64()),
        ("answer", pa.string()),
        ("raw", pa.string()),
        ("ok", pa.bool_()),
        ("call", pa.string()),
        ("probs", pa.list_(pa.struct([("option", pa.string()), ("prob", pa.float64())]))),
        ("expected", pa.float64()),
        ("order", pa.string()),
        ("shown_answer", pa.string()),
        ("position", pa.int64()),
    ]
)
"""``opinions.parquet``: one row per probe. ``probs``: the option distribution as a list of
``{option, prob}`` in scale order. ``order`` (the topic's values in the order shown),
``shown_answer`` (the code the model gave) and ``position`` (its 0-based place) are null unless
the probe was counterbalanced (:mod:`simworld.engine.counterbalance`)."""
CALL_SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("agent", pa.string()),
        ("purpose", pa.string()),
        ("index", pa.int64()),
        ("call", pa.string()),
        ("model", pa.string()),
        ("status", pa.string()),
        ("attempts", pa.int64()),
        ("error_kinds", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("cached", pa.bool_()),
        ("latency_s", pa.float64()),
        ("prompt_tokens_est", pa.int64()),
        ("prefix_tokens", pa.int64()),
        ("cacheable_tokens", pa.int64()),
    ]
)


def option_probs(value: str | dict[str, float] | list[Any] | None) -> list[dict[str, Any]] | None:
    """A probe's option distribution as ``probs`` cells: ``[{option, prob}]`` in scale order.

    Accepts the JSON text older run directories (and the transcript) hold, a mapping, or
    cells already in this form. Numeric options are ordered numerically, others as text.
    """
    if value is None:
        return None
    if isinstance(value, list):
        return [{"option": str(c["option"]), "prob": float(c["prob"])} for c in value]
    probs = json.loads(value) if isinstance(value, str) else value
    options = sorted(probs, key=lambda o: (0, int(o), "") if o.isdigit() else (1, 0, o))
    return [{"option": o, "prob": float(probs[o])} for o in options]


def opinion_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Probe rows as ``opinions.parquet`` rows (``probs`` typed, see :func:`option_probs`)."""
    return [r | {"probs": option_probs(r.get("probs"))} for r in rows]


KILL_AT_ENV = "SIMWORLD_TEST_KILL_AT"
"""Test hook: ``N`` makes the process kill itself (``SIGKILL``) at its N-th write point."""
_write_points = 0


def write_point() -> int:
    """Count a write point (before and after every atomic rename, after every transcript
    flush) and return the count; at the count named by :data:`KILL_AT_ENV` the process
    kills itself, as ``kill -9`` would (tests of resume use it; unset, nothing happens)."""
    global _write_points
    _write_points += 1
    target = os.environ.get(KILL_AT_ENV)
    if target and target.isdigit() and _write_points == int(target):
        os.kill(os.getpid(), signal.SIGKILL)
    return _write_points


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write a file whole or not at all (temporary file, fsync, rename).

    Args:
        path: The file.
        data: Its new contents.
        durable: fsync before the rename. Without it the replacement is still atomic for
            readers and survives the process being killed, but not a power loss.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
    except OSError:  # a full disk: leave no partial temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    write_point()
    os.replace(tmp, path)
    write_point()


def sync_file(path: Path) -> None:
    """Make a file's contents durable (fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write pretty, key-sorted JSON atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)  # valid JSON only
    atomic_write_bytes(path, (text + "\n").encode())


def transcript_lines(path: Path, *, partial_tail: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The lines of a transcript with their events, checked.

    Args:
        path: The ``transcript.jsonl`` file (missing: no lines).
        partial_tail: A last line without its newline (a run killed while writing it) is
            left out instead of being an error.

    Returns:
        ``(line without newline, event)`` pairs in order.

    Raises:
        ConfigError: The file is damaged (not UTF-8, a line that is not a JSON object, or
            truncated), naming the line.
    """
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(path, f"line {line}", "damaged: not UTF-8 text") from None
    out: list[tuple[str, dict[str, Any]]] = []
    lines = text.splitlines(keepends=True)
    for n, raw in enumerate(lines, start=1):
        if not raw.endswith("\n"):
            if partial_tail and n == len(lines):
                break
            raise ConfigError(path, f"line {n}", "damaged: truncated (no end of line)")
        try:
            event = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(path, f"line {n}", f"damaged: not valid JSON ({exc.msg})") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ConfigError(path, f"line {n}", "damaged: not a transcript event")
        out.append((raw[:-1], event))
    return out


def read_transcript(run_dir: str | Path, *, explicit: bool = True) -> list[dict[str, Any]]:
    """A run directory's transcript events, in order.

    Args:
        run_dir: The run directory (a last line cut short by a crash is left out).
        explicit: Give every ``message``'s ``to`` as the list of its listeners' ids,
            whichever form the file holds (see :mod:`simworld.support.recipients`);
            ``False``: as written.

    Raises:
        ConfigError: ``run_dir`` holds no transcript, the transcript is damaged (see
            :func:`transcript_lines`), or a message's ``to`` does not resolve.
    """
    path = Path(run_dir) / rundir.TRANSCRIPT
    if not path.is_file():
        why = "give the run directory, not a file" if Path(run_dir).is_file() else "no transcript"
        raise ConfigError(run_dir, "", f"not a run directory ({why})")
    events = [event for _, event in transcript_lines(path, partial_tail=True)]
    if not explicit:
        return events
    recipients = Recipients()
    out = []
    for n, event in enumerate(events, start=1):
        recipients.observe(event)
        try:
            out.append(recipients.explicit(event) if event["type"] == "message" else event)
        except UnresolvedRecipients as exc:
            raise ConfigError(path, f"line {n}", f"damaged: {exc}") from None
    return out


def recorded_keys(path: Path, *, before_step: int | None = None) -> list[str]:
    """Cache keys of the model calls a transcript records (of steps before ``before_step``).

    Raises:
        ConfigError: The transcript is damaged (see :func:`transcript_lines`).
    """
    keys = []
    for _, event in transcript_lines(path, partial_tail=True):
        if event["type"] != "llm_call" or not isinstance(event.get("key"), str):
            continue
        if before_step is None or int(event.get("identity", {}).get("step", 0)) < before_step:
            keys.append(event["key"])
    return keys


def parquet_bytes(table: pa.Table) -> bytes:
    """Deterministic parquet bytes: equal tables give equal bytes (no statistics, no schema)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_statistics=False, store_schema=False)
    return sink.getvalue().to_pybytes()


def mask_table(table: pa.Table, redactor: Redactor) -> pa.Table:
    """The table with secrets masked in its strings, also inside list and struct columns
    (a tracker of one's own may keep a list of messages); each distinct string value of a
    string column is masked once.

    Equal to masking every string cell of the rows the table was built from (column and
    struct field names are identifiers, never secrets).
    """
    for i, field in enumerate(table.schema):
        if not _holds_strings(field.type):
            continue
        values = table.column(i).to_pylist()
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            masked = {v: redactor.text(v) for v in set(values) if v is not None}
            if any(k != v for k, v in masked.items()):
                cells = [None if v is None else masked[v] for v in values]
                table = table.set_column(i, field, pa.array(cells, type=field.type))
            continue
        nested = [_mask_nested(v, redactor) for v in values]
        if nested != values:
            table = table.set_column(i, field, pa.array(nested, type=field.type))
    return table


def _holds_strings(kind: pa.DataType) -> bool:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _holds_strings(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_holds_strings(kind.field(j).type) for j in range(kind.num_fields))
    return False


def _mask_nested(value: Any, redactor: Redactor) -> Any:
    """``value`` (a cell of a list or struct column) with its strings masked; a struct's
    field names are kept."""
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, dict):
        return {k: _mask_nested(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_nested(v, redactor) for v in value]
    return value


class GrowingTable:
    """A parquet file of rows that only ever grow, rewritten atomically as they do.

    Each batch of rows is converted to arrow (and masked) once, when it arrives; the file's
    bytes are those of one table of all the rows (deterministic, see :func:`parquet_bytes`).

    Args:
        path: The parquet file.
        schema: Its columns.
        redactor: Masks secrets in the string cells.
    """

    def __init__(self, path: Path, schema: pa.Schema, redactor: Redactor) -> None:
        self.path = path
        self._redactor = redactor
        self._table = schema.empty_table()

    def __len__(self) -> int:
        return self._table.num_rows

    def extend(self, rows: list[dict[str, Any]]) -> None:
        """Add rows (in memory; :meth:`write` puts them on disk)."""
        if rows:
            new = mask_table(pa.Table.from_pylist(rows, schema=self._table.schema), self._redactor)
            self._table = pa.concat_tables([self._table, new]).combine_chunks()

    def write(self, *, durable: bool = True) -> None:
        """Replace the file with every row so far (see :func:`atomic_write_bytes`)."""
        atomic_write_bytes(self.path, parquet_bytes(self._table), durable=durable)


def call_row(step: int, outcome: CallOutcome) -> dict[str, Any]:
    """One row of ``llm_calls.parquet``."""
    ident = outcome.identity
    return {
        "step": step,
        "agent": ident.agent,
        "purpose": ident.purpose,
        "index": ident.index,
        "call": outcome.key,
        "model": outcome.model,
        "status": outcome.status,
        "attempts": outcome.attempts,
        "error_kinds": ",".join(e["kind"] for e in outcome.errors),
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "cost_usd": outcome.cost_usd,
        "cached": outcome.cached,
        "latency_s": round(outcome.latency_s, 6),
        "prompt_tokens_est": outcome.prompt_tokens_est,
        "prefix_tokens": outcome.prefix_tokens,
        "cacheable_tokens": outcome.cacheable_tokens,
    }


class RunWriter:
    """Writes a run directory as the run goes: nothing is held back until the end.

    The transcript is appended and fsynced after every step: it is the record a resumed run
    is checked against. The parquet tables are rewritten atomically after every step (and
    made durable when the writer closes; a resumed run writes them again anyway).

    Args:
        run_dir: The run directory (created if missing; must not hold a previous run unless
            ``resume``).
        redactor: Masks secrets in everything written.
        resume: Continue the transcript already in ``run_dir`` (its completed steps must be
            reproduced line by line first).
        recipients: How messages' ``to`` is written: ``compact`` as the engine gives it, or
            ``explicit``, every one a list (the form of run directories written before the
            compact form existed, kept when they are resumed or replayed; see
            :mod:`simworld.support.recipients`).
    """

    TRANSCRIPT = rundir.TRANSCRIPT
    OPINIONS = rundir.OPINIONS
    CALLS = rundir.CALLS
    MANIFEST = rundir.MANIFEST

    def __init__(
        self,
        run_dir: Path,
        *,
        redactor: Redactor,
        resume: bool = False,
        recipients: RecipientsFormat = COMPACT,
    ) -> None:
        self.run_dir = run_dir
        self._redactor = redactor
        self._explicit = Recipients() if recipients == EXPLICIT else None
        self._expected: list[str] = []
        if resume:
            self._expected = self._keep_completed_steps(run_dir / self.TRANSCRIPT)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)  # claimed by the caller
        self._file: TextIO | None = None  # opened at the first event: the manifest comes first
        self._checked = 0
        self._calls = GrowingTable(run_dir / self.CALLS, CALL_SCHEMA, redactor)
        self._opinions = GrowingTable(run_dir / self.OPINIONS, OPINION_SCHEMA, redactor)

    @property
    def _transcript(self) -> TextIO:
        if self._file is None:
            self._file = open(self.run_dir / self.TRANSCRIPT, "a", encoding="utf-8")  # noqa: SIM115
        return self._file

    @staticmethod
    def _keep_completed_steps(path: Path) -> list[str]:
        """Cut a partial transcript back to its last completed step; return the kept lines.

        Raises:
            ConfigError: The transcript is damaged before its last line.
        """
        lines = transcript_lines(path, partial_tail=True)
        ends = [i for i, (_, event) in enumerate(lines) if event["type"] == "step_end"]
        kept = [line for line, _ in lines[: ends[-1] + 1]] if ends else []
        atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode("utf-8"))
        return kept

    @property
    def completed_step(self) -> int:
        """The last step a resumed run found complete in its transcript (-1: none)."""
        for line in reversed(self._expected):
            event = json.loads(line)
            if event.get("type") == "step_end":
                return int(event["step"])
        return -1

    def event(self, event: dict[str, Any]) -> None:
        """Append one event line (call :meth:`flush` to make it durable)."""
        if self._explicit is not None:
            self._explicit.observe(event)
            if event.get("type") == "message":
                event = self._explicit.explicit(event)
        # Masked string by string, not as serialised text: there an escape (``\n``) hides
        # where a key-shaped token starts, and a mask could break the line's JSON.
        line = json.dumps(self._redactor.deep(event), sort_keys=True, ensure_ascii=False)
        if self._checked < len(self._expected):
            if line != self._expected[self._checked]:
                raise ResumeError(
                    f"{self.run_dir / self.TRANSCRIPT}: line {self._checked + 1}: the resumed "
                    "run does not reproduce the transcript already written"
                )
            self._checked += 1
            return
        self._transcript.write(line + "\n")

    def flush(self) -> None:
        """Make appended lines durable."""
        self._transcript.flush()
        os.fsync(self._transcript.fileno())
        write_point()

    def step(self, record: StepRecord, opinions: list[dict[str, Any]]) -> None:
        """Write one finished step: events, call rows and the opinions so far."""
        for event in record.events:
            self.event(event)
        self.flush()
        self._calls.extend([call_row(record.step, c) for c in record.calls])
        self._calls.write(durable=False)
        if len(opinions) != len(self._opinions):
            self._opinions.extend(opinion_rows(opinions[len(self._opinions) :]))
            self._opinions.write(durable=False)

    def manifest(self, data: dict[str, Any]) -> None:
        """Write (or rewrite) the manifest atomically."""
        atomic_write_json(self.run_dir / self.MANIFEST, self._redactor.deep(data))

    def close(self) -> None:
        """Close the transcript; make both tables durable (written even when empty)."""
        for table in (self._calls, self._opinions):
            if table.path.exists():
                sync_file(table.path)
            else:
                table.write()
        self._transcript.close()  # (created, empty, if no event came)
