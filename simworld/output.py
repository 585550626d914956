"""Run-directory files: append-only transcript, atomic parquet tables and the manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from simworld.errors import ConfigError, ResumeError
from simworld.redact import Redactor

if TYPE_CHECKING:
    from simworld.gateway import CallOutcome
    from simworld.model import StepRecord

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
        ("probs", pa.string()),
        ("expected", pa.float64()),
    ]
)
CALL_SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("agent", pa.string()),
        ("purpose", pa.string()),
        ("index", pa.int64()),
        ("key", pa.string()),
        ("model", pa.string()),
        ("status", pa.string()),
        ("attempts", pa.int64()),
        ("error_kinds", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("cached", pa.bool_()),
        ("latency_s", pa.float64()),
    ]
)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file whole or not at all (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write pretty, key-sorted JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's ``manifest.json``.

    Raises:
        ConfigError: There is no readable manifest.
    """
    path = Path(run_dir) / RunWriter.MANIFEST
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ConfigError(path, "", "not a run directory (no manifest.json)") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(path, "", f"unreadable manifest: {exc.msg}") from exc


def parquet_bytes(table: pa.Table) -> bytes:
    """Deterministic parquet bytes: equal tables give equal bytes (no statistics, no schema)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_statistics=False, store_schema=False)
    return sink.getvalue().to_pybytes()


def atomic_write_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    """Write rows as a parquet file atomically (deterministic bytes for equal rows)."""
    atomic_write_bytes(path, parquet_bytes(pa.Table.from_pylist(rows, schema=schema)))


def call_row(step: int, outcome: CallOutcome) -> dict[str, Any]:
    """One row of ``llm_calls.parquet``."""
    ident = outcome.identity
    return {
        "step": step,
        "agent": ident.agent,
        "purpose": ident.purpose,
        "index": ident.index,
        "key": outcome.key,
        "model": outcome.model,
        "status": outcome.status,
        "attempts": outcome.attempts,
        "error_kinds": ",".join(e["kind"] for e in outcome.errors),
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "cost_usd": outcome.cost_usd,
        "cached": outcome.cached,
        "latency_s": round(outcome.latency_s, 6),
    }


class RunWriter:
    """Writes a run directory as the run goes: nothing is held back until the end.

    The transcript is appended and fsynced after every step; the parquet tables are
    rewritten atomically after every step.

    Args:
        run_dir: The run directory (created, must not hold a previous run).
        redactor: Masks secrets in everything written.
    """

    TRANSCRIPT = "transcript.jsonl"
    OPINIONS = "opinions.parquet"
    CALLS = "llm_calls.parquet"
    MANIFEST = "manifest.json"

    def __init__(self, run_dir: Path, *, redactor: Redactor, resume: bool = False) -> None:
        self.run_dir = run_dir
        self._redactor = redactor
        self._expected: list[str] = []
        if resume:
            self._expected = self._keep_completed_steps(run_dir / self.TRANSCRIPT)
        else:
            run_dir.mkdir(parents=True, exist_ok=False)
        self._transcript = open(run_dir / self.TRANSCRIPT, "a", encoding="utf-8")  # noqa: SIM115
        self._checked = 0
        self._calls: list[dict[str, Any]] = []
        self._opinions: list[dict[str, Any]] = []

    @staticmethod
    def _keep_completed_steps(path: Path) -> list[str]:
        """Cut a partial transcript back to its last completed step; return the kept lines."""
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
        ends = [
            i
            for i, line in enumerate(lines)
            if line.endswith("\n") and json.loads(line).get("type") == "step_end"
        ]
        kept = lines[: ends[-1] + 1] if ends else []
        atomic_write_bytes(path, "".join(kept).encode("utf-8"))
        return [line.rstrip("\n") for line in kept]

    def event(self, event: dict[str, Any]) -> None:
        """Append one event line (call :meth:`flush` to make it durable)."""
        line = self._redactor.text(json.dumps(event, sort_keys=True, ensure_ascii=False))
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

    def step(self, record: StepRecord, opinions: list[dict[str, Any]]) -> None:
        """Write one finished step: events, call rows and the opinions so far."""
        for event in record.events:
            self.event(event)
        self.flush()
        self._calls.extend(self._redactor.deep([call_row(record.step, c) for c in record.calls]))
        atomic_write_table(self.run_dir / self.CALLS, self._calls, CALL_SCHEMA)
        if len(opinions) != len(self._opinions):
            self._opinions.extend(self._redactor.deep(opinions[len(self._opinions) :]))
            atomic_write_table(self.run_dir / self.OPINIONS, self._opinions, OPINION_SCHEMA)

    def manifest(self, data: dict[str, Any]) -> None:
        """Write (or rewrite) the manifest atomically."""
        atomic_write_json(self.run_dir / self.MANIFEST, self._redactor.deep(data))

    def close(self) -> None:
        """Close the transcript; make sure both tables exist even when empty."""
        for name, rows, schema in (
            (self.CALLS, self._calls, CALL_SCHEMA),
            (self.OPINIONS, self._opinions, OPINION_SCHEMA),
        ):
            if not (self.run_dir / name).exists():
                atomic_write_table(self.run_dir / name, self._redactor.deep(rows), schema)
        self._transcript.close()
