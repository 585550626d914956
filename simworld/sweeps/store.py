"""A sweep directory: its ``sweep.json`` manifest, combined opinions frame and locks."""

from __future__ import annotations

import fcntl
import itertools
import json
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from simworld.errors import ConfigError
from simworld.llm.gateway import Accounting
from simworld.runs.writer import (
    OPINION_SCHEMA,
    atomic_write_bytes,
    option_probs,
    parquet_bytes,
)
from simworld.support.rundir import AGENTS, EDGES, MANIFEST, SWEEP_MANIFEST, read_sweep_manifest
from simworld.sweeps.executors import FINISHED_STATUSES, TaskResult, read_run_status
from simworld.sweeps.plan import run_names

COMBINED_FRAME = "opinions.parquet"
RUN_OPINIONS = "opinions.parquet"
COMBINED_TABLES = (RUN_OPINIONS, AGENTS, EDGES)
"""Run tables the sweep directory combines (same name, with run, seed and grid columns)."""
RUNS_DIR = "runs"
LOCKS_DIR = ".locks"
SWEEP_LOCK = "sweep.lock"
MANIFEST_VERSION = 1
FRAME_MIN_INTERVAL_S = 2.0
# The driver rewrites sweep.json and the combined frame as results come in, but spends at
# most this share of its time on it (big sweeps): it shares the CPUs with the workers.
MAX_REWRITE_SHARE = 0.05
MAX_ORDER_SEARCH_KEYS = 6
"""Up to this many grid keys, a sweep given its keys in another order is told the order."""
TOTAL_KEYS = tuple(f.name for f in fields(Accounting))
"""The totals a run reports (its manifest's ``totals``), summed over a sweep's runs."""


def totals_accounting(totals: dict[str, float]) -> Accounting:
    """Summed run totals (:meth:`SweepStore.totals`) as one :class:`Accounting`, for its
    shares and summary lines."""
    accounting = Accounting()
    for key in TOTAL_KEYS:
        kind = float if isinstance(getattr(accounting, key), float) else int
        setattr(accounting, key, kind(totals.get(key, 0)))
    return accounting


def now_iso() -> str:
    """The current UTC time, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_same_sweep(sweep_dir: Path, spec: dict[str, Any]) -> None:
    """Refuse to continue a sweep directory that holds a different sweep.

    Raises:
        ConfigError: ``sweep_dir`` is a file, a run directory or a folder of other files, or
            the scenario file, grid or seeds differ from the recorded ones, or the grid's keys
            are in another order (which numbers the runs differently).
    """
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(sweep_dir, "", "is a file; a sweep directory is a folder")
    if (sweep_dir / MANIFEST).exists():
        raise ConfigError(
            sweep_dir, "", f"is a run directory (it holds {MANIFEST}); choose another --out"
        )
    old = read_sweep_manifest(sweep_dir)
    if old is None:
        others = sorted(p.name for p in sweep_dir.iterdir()) if sweep_dir.is_dir() else []
        others = [name for name in others if name not in (LOCKS_DIR, RUNS_DIR)]
        if others:
            raise ConfigError(
                sweep_dir, "", f"holds other files ({others[0]}, ...); choose a new or empty --out"
            )
        return
    recorded = old.get("spec", {})
    for key in ("scenario_file", "scenario_sha256", "grid", "seeds"):
        if recorded.get(key) != spec[key]:
            what = "the scenario file changed" if key == "scenario_sha256" else f"{key} differs"
            raise ConfigError(
                sweep_dir / SWEEP_MANIFEST,
                "spec",
                f"this directory holds a different sweep ({what}); choose another --out",
            )
    recorded_names = [r.get("name") for r in sorted(old.get("runs", []), key=lambda r: r["index"])]
    if recorded_names and recorded_names != run_names(spec["grid"], spec["seeds"]):
        order = recorded_grid_order(spec["grid"], spec["seeds"], recorded_names)
        given = f" ({', '.join(order)})" if order else ""
        raise ConfigError(
            sweep_dir / SWEEP_MANIFEST,
            "spec",
            f"this sweep numbers its runs with the --grid keys in another order{given}; "
            "give them in that order or choose another --out",
        )


def recorded_grid_order(
    grid: dict[str, list[Any]], seeds: list[int], names: list[str | None]
) -> list[str] | None:
    """The order of ``grid``'s keys that names runs as ``names`` (None if none does)."""
    if len(grid) > MAX_ORDER_SEARCH_KEYS:
        return None
    for keys in itertools.permutations(grid):
        if run_names({k: grid[k] for k in keys}, seeds) == names:
            return list(keys)
    return None


class SweepLock:
    """An exclusive, non-blocking lock on a sweep directory (released when the process dies).

    Args:
        sweep_dir: The sweep directory (created).
    """

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / LOCKS_DIR / SWEEP_LOCK
        self._fh: IO[bytes] | None = None

    def __enter__(self) -> SweepLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+b")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            where = self.path.parent.parent
            raise ConfigError(where, "", "another sweep is running in this directory") from exc
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _param_column(values: list[Any]) -> tuple[pa.DataType, Any]:
    """Arrow type of a grid key's column and a converter for its values."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_(), lambda v: v
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64(), lambda v: v
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64(), lambda v: None if v is None else float(v)
    if all(isinstance(v, str) for v in present):
        return pa.string(), lambda v: v
    return pa.string(), lambda v: None if v is None else json.dumps(v, sort_keys=True)


class Throttle:
    """When a periodic rewrite is due.

    Rewrites are at least ``min_interval_s`` apart, and far enough apart that rewriting
    takes at most ``MAX_REWRITE_SHARE`` of the time (a rewrite's cost grows with the sweep).

    Args:
        min_interval_s: The least time between two rewrites.
    """

    def __init__(self, min_interval_s: float) -> None:
        self.min_interval_s = min_interval_s
        self._ended = -float("inf")
        self._cost = 0.0

    def due(self) -> bool:
        """Whether enough time has passed since the last rewrite."""
        wait = max(self.min_interval_s, self._cost / MAX_REWRITE_SHARE)
        return time.monotonic() - self._ended >= wait

    def done(self, started: float) -> None:
        """Note a rewrite that began at ``started`` (``time.monotonic()``) and just ended."""
        self._ended = time.monotonic()
        self._cost = self._ended - started


@dataclass
class RunEntry:
    """One run as ``sweep.json`` records it."""

    index: int
    name: str
    params: dict[str, Any]
    seed: int
    status: str = "pending"
    error: str | None = None
    attempts: int = 0
    action: str | None = None
    wall_time_s: float | None = None
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> str:
        """The run directory, relative to the sweep directory."""
        return f"{RUNS_DIR}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        """The manifest form."""
        return {
            "index": self.index,
            "name": self.name,
            "run_dir": self.run_dir,
            "params": self.params,
            "seed": self.seed,
            "status": self.status,
            "error": self.error,
            "attempts": self.attempts,
            "action": self.action,
            "wall_time_s": self.wall_time_s,
            "totals": self.totals,
        }


class SweepStore:
    """The state of a sweep on disk: which runs are done, and the files that show it.

    Args:
        sweep_dir: The sweep directory (exists).
        spec: What defines the sweep (scenario file and hash, grid, seeds).
        entries: The planned runs in index order.
        settings: Recorded for information (executor, workers, cache).
    """

    def __init__(
        self,
        sweep_dir: Path,
        *,
        spec: dict[str, Any],
        entries: list[RunEntry],
        settings: dict[str, Any],
    ) -> None:
        self.sweep_dir = sweep_dir
        self.spec = spec
        self.entries = entries
        self.settings = settings
        self.created_at = now_iso()
        self._tables: dict[tuple[int, str], pa.Table] = {}
        self._frame_throttle = Throttle(FRAME_MIN_INTERVAL_S)
        self._frame_stale = True
        self._manifest_throttle = Throttle(0.0)
        self._param_types = {key: _param_column(values) for key, values in spec["grid"].items()}

    def run_path(self, entry: RunEntry) -> Path:
        """Absolute run directory of an entry."""
        return self.sweep_dir / entry.run_dir

    def load(self) -> None:
        """Bring entries up to date with what earlier invocations left on disk.

        The run directories are the truth: a run whose manifest says it finished is done;
        one that says ``running`` or ``interrupted`` (its process died) is ``partial``; a
        failure recorded only in ``sweep.json`` (no run directory) stays ``failed``.
        """
        old = read_sweep_manifest(self.sweep_dir) or {}
        self.created_at = old.get("created_at", self.created_at)
        previous = {r["index"]: r for r in old.get("runs", [])}
        for entry in self.entries:
            prev = previous.get(entry.index, {})
            entry.attempts = int(prev.get("attempts", 0))
            entry.action = prev.get("action")
            entry.wall_time_s = prev.get("wall_time_s")
            status, manifest = read_run_status(self.run_path(entry))
            if status in FINISHED_STATUSES or status == "failed":
                entry.status, entry.error = status, manifest.get("error")
                entry.totals = manifest.get("totals") or {}
                entry.action = entry.action or "ran"  # finished after its driver was stopped
                entry.wall_time_s = entry.wall_time_s or manifest.get("wall_time_s")
            elif self.run_path(entry).exists():
                entry.status, entry.error = "partial", None
            elif prev.get("status") == "failed":
                entry.status, entry.error = "failed", prev.get("error")
            else:
                entry.status, entry.error = "pending", None

    def dispatched(self, indices: list[int]) -> None:
        """Mark runs as handed to the executor."""
        for i in indices:
            self.entries[i].status = "running"
            self.entries[i].attempts += 1

    def record(self, result: TaskResult) -> None:
        """Take in one run's outcome."""
        entry = self.entries[result.index]
        entry.status, entry.error, entry.action = result.status, result.error, result.action
        entry.totals = result.totals or entry.totals
        if result.action != "skipped":
            entry.wall_time_s = round(result.wall_time_s, 3)
        for name in COMBINED_TABLES:
            self._tables.pop((result.index, name), None)
        self._frame_stale = True

    def stop_running(self) -> None:
        """After an interruption: runs in progress are finished, partial or pending on disk."""
        for entry in self.entries:
            if entry.status != "running":
                continue
            status, manifest = read_run_status(self.run_path(entry))
            if status in FINISHED_STATUSES:
                entry.status, entry.totals = status, manifest.get("totals") or {}
                entry.action = "ran"
            else:
                entry.status = "partial" if self.run_path(entry).exists() else "pending"

    def counts(self) -> dict[str, int]:
        """Number of runs per status."""
        out: dict[str, int] = {}
        for entry in self.entries:
            out[entry.status] = out.get(entry.status, 0) + 1
        return dict(sorted(out.items()))

    def totals(self) -> dict[str, float]:
        """Calls, tokens and cost summed over every run that reported them."""
        out: dict[str, float] = dict.fromkeys(TOTAL_KEYS, 0)
        for entry in self.entries:
            for key in TOTAL_KEYS:
                out[key] += entry.totals.get(key) or 0
        out["cost_usd"] = round(out["cost_usd"], 8)
        out["spent_usd"] = round(out["spent_usd"], 8)
        return out

    def write_manifest(self, *, force: bool = True) -> None:
        """Rewrite ``sweep.json`` atomically (unless not ``force`` and it was just rewritten).

        Skipping a rewrite loses nothing for good: a run's own manifest is the truth
        :meth:`load` reads, and the next rewrite (always one at the end) has every result.
        """
        if not (force or self._manifest_throttle.due()):
            return
        started = time.monotonic()
        totals = self.totals()
        accounting = totals_accounting(totals)
        data = {
            "version": MANIFEST_VERSION,
            "spec": self.spec,
            "settings": self.settings,
            "created_at": self.created_at,
            "updated_at": now_iso(),
            "counts": self.counts(),
            "totals": totals,
            "prefix_share": accounting.prefix_share,
            "cacheable_share": accounting.cacheable_share,
            "frame": COMBINED_FRAME,
            "runs": [e.to_json() for e in self.entries],
        }
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        atomic_write_bytes(self.sweep_dir / SWEEP_MANIFEST, text.encode("utf-8"))
        self._manifest_throttle.done(started)

    def _run_table(self, entry: RunEntry, name: str = RUN_OPINIONS) -> pa.Table | None:
        if (entry.index, name) in self._tables:
            return self._tables[(entry.index, name)]
        path = self.run_path(entry) / name
        if not path.is_file():
            return None  # a run older than the table (agents, edges)
        table = pq.ParquetFile(path).read()  # read_table would import pandas (~0.5 s of CPU)
        kind = table.schema.field("probs").type if "probs" in table.column_names else None
        if kind is not None and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            cells = [option_probs(v) for v in table.column("probs").to_pylist()]
            probs = pa.array(cells, OPINION_SCHEMA.field("probs").type)
            table = table.set_column(table.column_names.index("probs"), "probs", probs)
        n = table.num_rows
        columns: dict[str, pa.Array] = {
            "run": pa.array([entry.index] * n, pa.int64()),
            "seed": pa.array([entry.seed] * n, pa.int64()),
        }
        for key, (dtype, convert) in self._param_types.items():
            columns[key] = pa.array([convert(entry.params[key])] * n, dtype)
        for column in table.column_names:
            columns[column] = table.column(column)
        self._tables[(entry.index, name)] = pa.table(columns)
        return self._tables[(entry.index, name)]

    def frame(self, name: str = RUN_OPINIONS) -> pa.Table:
        """A run table (``opinions.parquet`` by default) of all finished runs, stacked.

        In run-index order, with ``run`` (index), ``seed`` and one column per grid key.
        """
        tables = [
            t
            for e in self.entries
            if e.status in FINISHED_STATUSES and (t := self._run_table(e, name)) is not None
        ]
        if not tables:
            schema = pa.schema(
                [("run", pa.int64()), ("seed", pa.int64())]
                + [(k, t) for k, (t, _) in self._param_types.items()]
            )
            return schema.empty_table()
        return pa.concat_tables(tables, promote_options="default")

    def write_frame(self, *, force: bool = False) -> None:
        """Rewrite the combined tables atomically (throttled unless ``force``).

        ``opinions.parquet``, ``agents.parquet`` and ``edges.parquet`` of every finished run.
        """
        if not self._frame_stale or not (force or self._frame_throttle.due()):
            return
        started = time.monotonic()
        for name in COMBINED_TABLES:
            atomic_write_bytes(self.sweep_dir / name, parquet_bytes(self.frame(name)))
        self._frame_throttle.done(started)
        self._frame_stale = False
