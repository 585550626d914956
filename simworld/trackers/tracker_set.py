"""Trackers: measures updated from the engine's events, Mesa data collection, parquet frames."""

from __future__ import annotations

import copy
import inspect
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mesa
import pandas as pd
import pyarrow as pa

from simworld.config.scenario import Scenario, recorded_scenario
from simworld.errors import ConfigError, PluginError
from simworld.runs.writer import atomic_write_bytes, mask_table, parquet_bytes
from simworld.support.plugins import build_error, check_call, import_object, snake_case
from simworld.support.recipients import Recipients, UnresolvedRecipients
from simworld.support.rundir import MANIFEST, TRACKERS_DIR, TRANSCRIPT, read_manifest
from simworld.trackers.base import (
    BuiltinTracker,
    Event,
    Observations,
    Row,
    RunContext,
    Tracker,
    tidy,
)
from simworld.trackers.opinion import ConformityTracker, DriftTracker, PopulationTracker
from simworld.trackers.persona import (
    InconstancyTracker,
    MemoryTracker,
    PersonalityTracker,
    StatementTracker,
)
from simworld.trackers.scripted import (
    AschTracker,
    BeliefTracker,
    EventTracker,
    InterventionTracker,
)
from simworld.trackers.signal import SignalTracker

if TYPE_CHECKING:
    from simworld.support.redact import Redactor

CHECKPOINT_S = 30.0
"""While a run goes, its frames are rewritten after a step once this many seconds have passed."""
BUILTIN_TRACKERS: tuple[type[BuiltinTracker] | type[EventTracker], ...] = (
    DriftTracker,
    PopulationTracker,
    ConformityTracker,
    InconstancyTracker,
    StatementTracker,
    PersonalityTracker,
    MemoryTracker,
    BeliefTracker,
    AschTracker,
    InterventionTracker,
    SignalTracker,
)
FRAME_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
POPULATION_REPORTERS = (
    "n",
    "n_missing",
    "bias",
    "diversity",
    "variance",
    "bimodality",
    "polarization",
    "consensus_share",
    "entropy",
    "time_to_consensus",
)
"""Model reporters per topic (``<measure>:<topic>``), from the population frame (§5)."""
AGENT_REPORTERS = ("abs_drift", "path_length", "flips", "anchored_distance")
"""Agent reporters per topic (``<measure>:<topic>``), from the drift frame (§2)."""


def load_tracker(
    spec: str, context: RunContext, *, source: str | Path = "<scenario>", field: str = ""
) -> Tracker:
    """Build an extra tracker from ``package.module:ClassName`` or ``/abs/file.py:ClassName``
    (importlib; never eval; a scenario's relative file paths are made absolute when it is
    loaded).

    The class is called with ``context=`` when its constructor has that parameter, with no
    arguments otherwise.

    Args:
        spec: The tracker's name.
        context: The run's context.
        source: The scenario file, named in errors.
        field: The scenario field that named it (default ``trackers.extra``).

    Raises:
        ConfigError: The module or class cannot be found, cannot be built, or is not a
            tracker (``observe(event)`` and ``rows()``).
    """
    module_name, _, class_name = spec.rpartition(":")
    field = field or "trackers.extra"
    cls: Any = import_object(spec, source=source, field=field)
    if not inspect.isclass(cls):
        raise ConfigError(source, field, f"{spec}: no class {class_name} in {module_name}")
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    make: Callable[..., object] = cls
    try:
        tracker = make(context=context) if "context" in params else make()
    except Exception as exc:
        raise build_error(exc, source=source, field=field, spec=spec) from exc
    if not isinstance(tracker, Tracker):
        raise ConfigError(source, field, f"{spec}: needs observe(event) and rows() methods")
    check_call(tracker.observe, 1, source=source, field=field, spec=spec, call="observe(event)")
    check_call(tracker.rows, 0, source=source, field=field, spec=spec, call="rows()")
    return tracker


def frame_name(tracker: Tracker, *, source: str | Path = "<scenario>", field: str = "") -> str:
    """The tracker's frame name: its ``name`` attribute, else its class name in snake case."""
    name = getattr(tracker, "name", "") or snake_case(type(tracker).__name__)
    if not FRAME_NAME.match(name):
        raise ConfigError(source, field or "trackers.extra", f"bad tracker name {name!r}")
    return name


def table_of(rows: list[Row], schema: pa.Schema | None, *, tidied: bool = False) -> pa.Table:
    """Rows as an arrow table: with the schema (cells coerced unless ``tidied``) or inferred."""
    if schema is None:
        return pa.Table.from_pylist(rows)
    return pa.Table.from_pylist(rows if tidied else tidy(rows, schema), schema=schema)


class TrackerSet:
    """The built-in trackers plus the scenario's extra ones, fed the same events.

    Built-ins (frame names): ``drift`` (§2), ``population`` (§5), ``conformity`` (§3, local),
    ``inconstancy`` (§1, per discussion), ``statements`` (§1, per message: stance,
    public/private, impersonation), ``personality`` (§4, BFI), ``memory``, ``belief`` (S/B/R
    states on a claim), ``asch`` (Asch trials, §3), ``interventions`` and ``signal``
    (whether each topic's probe answers carry an opinion, §8). Extras come
    from ``trackers.extra`` (see :func:`load_tracker`).

    Args:
        scenario: The run's scenario (topics and ``trackers`` settings).
        extra: More tracker instances, beside those the scenario names.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        extra: Sequence[Tracker] = (),
        source: str | Path = "<scenario>",
    ) -> None:
        self.context = RunContext.from_scenario(scenario)
        self.store = Observations()
        self.recipients = Recipients()
        """The network as the events record it (resolves a message's compact ``to``)."""
        self.trackers: dict[str, Tracker] = {}
        self._builtin: set[str] = set()
        for cls in BUILTIN_TRACKERS:
            self._add(cls(self.context, self.store), source)
        self._builtin = set(self.trackers)
        for i, spec in enumerate(scenario.trackers.extra):
            field = f"trackers.extra[{i}]"
            self._add(load_tracker(spec, self.context, source=source, field=field), source, field)
        for tracker in extra:
            self._add(tracker, source)
        self._written: dict[str, tuple[list[Row], bytes]] = {}
        self._written_at = time.monotonic()
        self._latest: tuple[Any, dict[Any, Row], dict[str, Row]] | None = None

    def _add(self, tracker: Tracker, source: str | Path, field: str = "trackers.extra") -> None:
        name = frame_name(tracker, source=source, field=field)
        if name in self.trackers:
            raise ConfigError(source, field, f"two trackers named {name!r}")
        self.trackers[name] = tracker

    # -- feeding -----------------------------------------------------------------------------
    def observe(self, event: Event) -> None:
        """Feed one transcript event to the context, the shared store and every tracker.

        A ``message``'s ``to`` reaches them as the list of its listeners' ids, whichever
        form the transcript wrote (:mod:`simworld.support.recipients`; a list shared by the
        messages of one neighbourhood: read only). A tracker not built in gets its own copy
        of the event, so one that changes what it is given changes nothing for the others.

        Raises:
            UnresolvedRecipients: A message whose ``to`` does not resolve.
        """
        self.recipients.observe(event)
        kind = event.get("type")
        if kind == "run_start":
            self.context.start(event)
        elif kind == "message":
            event = self.recipients.explicit(event)
        self.store.observe(event)
        for name, tracker in self.trackers.items():
            tracker.observe(event if name in self._builtin else copy.deepcopy(event))

    def observe_all(self, events: Iterable[Event]) -> None:
        """Feed events in order."""
        for event in events:
            self.observe(event)

    # -- frames ------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Frame names, built-ins first."""
        return list(self.trackers)

    def table(self, name: str, *, redactor: Redactor | None = None) -> pa.Table:
        """One tracker's frame as an arrow table (secrets masked when given a redactor).

        Raises:
            KeyError: No tracker gives a frame of that name (the message lists those that do).
        """
        if name not in self.trackers:
            raise KeyError(f"no frame {name!r}; the frames: {', '.join(self.trackers)}")
        tracker = self.trackers[name]
        schema = getattr(tracker, "schema", None)
        if schema is not None and getattr(tracker, "tidied", False):
            # tidy rows of a fixed schema: mask the string cells in the table, once per value
            table = table_of(tracker.rows(), schema, tidied=True)
            return table if redactor is None else mask_table(table, redactor)
        rows = tracker.rows() if redactor is None else redactor.deep(tracker.rows())
        if name in self._builtin:
            return table_of(rows, schema)
        try:
            return table_of(rows, schema)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            module = sys.modules.get(type(tracker).__module__)
            where = getattr(module, "__file__", None) or type(tracker).__module__
            raise PluginError(
                f"tracker {name!r} ({type(tracker).__qualname__} in {where}): its rows() do "
                f"not make a table: {type(exc).__name__}: {exc}"
            ) from exc

    def frame(self, name: str) -> pd.DataFrame:
        """One tracker's frame as pandas (nullable booleans and integers kept)."""
        return self.table(name).to_pandas(types_mapper=nullable_types)

    def frames(self) -> dict[str, pd.DataFrame]:
        """Every frame by name."""
        return {name: self.frame(name) for name in self.trackers}

    def checkpoint(
        self,
        directory: str | Path,
        *,
        redactor: Redactor | None = None,
        every_s: float | None = None,
    ) -> list[Path]:
        """Write the frames (see :meth:`write`) if a checkpoint is due.

        It is due when ``every_s`` seconds (default :data:`CHECKPOINT_S`) have passed since
        the last write, or since the set was made. A run calls this after every step and
        :meth:`write` when it ends: its frames are complete at the end, and never more than
        about ``CHECKPOINT_S`` behind while it runs.

        Returns:
            The files written.
        """
        interval = CHECKPOINT_S if every_s is None else every_s
        if time.monotonic() - self._written_at < interval:
            return []
        return self.write(directory, redactor=redactor)

    def write(self, directory: str | Path, *, redactor: Redactor | None = None) -> list[Path]:
        """Write every frame that changed since the last write as ``<directory>/<name>.parquet``.

        Each file is replaced atomically; equal rows give equal bytes.

        Returns:
            The files written.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, tracker in self.trackers.items():
            rows = tracker.rows()
            last = self._written.get(name)
            if last is not None and last[0] is rows:
                continue  # a built-in tracker hands back the same list while nothing changed
            data = parquet_bytes(self.table(name, redactor=redactor))
            if last is None or last[1] != data:
                atomic_write_bytes(directory / f"{name}.parquet", data)
                written.append(directory / f"{name}.parquet")
            self._written[name] = (rows, data)
        self._written_at = time.monotonic()
        return written

    # -- mesa data collection ----------------------------------------------------------------
    def datacollector(self) -> mesa.DataCollector:
        """A ``mesa.DataCollector`` whose reporters read the trackers' latest values.

        Model reporters: ``step`` and ``<measure>:<topic>`` for each of
        :data:`POPULATION_REPORTERS` (the latest probe step's population measures). Agent
        reporters: ``agent`` (id), ``opinion:<topic>`` (latest private answer: a float on
        Likert scales, a letter for choices) and ``<measure>:<topic>`` for each of
        :data:`AGENT_REPORTERS`. The model collects after every step it records.
        """
        model_reporters: dict[str, Any] = {"step": partial(_model_step)}
        agent_reporters: dict[str, Any] = {"agent": partial(_agent_key)}
        for topic in self.context.topics:
            for col in POPULATION_REPORTERS:
                model_reporters[f"{col}:{topic}"] = partial(self._model_report, topic, col)
            agent_reporters[f"opinion:{topic}"] = partial(self._agent_report, topic, "opinion")
            for col in AGENT_REPORTERS:
                agent_reporters[f"{col}:{topic}"] = partial(self._agent_report, topic, col)
        return mesa.DataCollector(model_reporters=model_reporters, agent_reporters=agent_reporters)

    def _latest_rows(self) -> tuple[dict[tuple[str, str], Row], dict[str, Row]]:
        """The latest drift row per (topic, agent) and population row per topic."""
        seen = (self.context.revision, self.store.version)  # what the built-ins depend on
        latest = self._latest
        if latest is None or latest[0] != seen:
            drift, population = self.trackers["drift"].rows(), self.trackers["population"].rows()
            by_agent = {(r["topic"], r["agent"]): r for r in drift}
            by_topic = {r["topic"]: r for r in population}
            latest = self._latest = (seen, by_agent, by_topic)
        return latest[1], latest[2]

    def _model_report(self, topic: str, column: str, model: Any) -> Any:
        return self._latest_rows()[1].get(topic, {}).get(column)

    def _agent_report(self, topic: str, column: str, agent: Any) -> Any:
        row = self._latest_rows()[0].get((topic, agent.key), {})
        if column == "opinion":
            return row.get("value") if self.context.topics[topic].ordinal else row.get("answer")
        return row.get(column)


def _model_step(model: Any) -> int:
    return int(model.steps)


def _agent_key(agent: Any) -> str:
    return str(agent.key)


def nullable_types(type_: pa.DataType) -> Any:
    """Arrow → pandas type mapper keeping nullable booleans and integers."""
    if pa.types.is_boolean(type_):
        return pd.BooleanDtype()
    if pa.types.is_integer(type_):
        return pd.Int64Dtype()
    return None


def tracker_scenario(manifest: dict[str, Any], run_dir: str | Path) -> Scenario:
    """The scenario the run's trackers were built with (a branch's parent scenario).

    Raises:
        ConfigError: The manifest of the run in ``run_dir`` holds no valid scenario.
    """
    where = Path(run_dir) / MANIFEST
    parent = (manifest.get("branch") or {}).get("parent_scenario")
    if parent is not None:
        return recorded_scenario(parent, where, "branch.parent_scenario")
    return recorded_scenario(manifest.get("scenario"), where)


def derive(run_dir: str | Path, *, own_trackers: bool = True) -> TrackerSet:
    """Re-derive every tracker of a finished run from its transcript, with no model call.

    The scenario (topics, tracker settings) is read from the run's manifest; every value
    comes from ``transcript.jsonl``.

    Args:
        run_dir: The run directory.
        own_trackers: Derive the trackers of the scenario's ``trackers.extra`` too, which
            imports and runs the code they name; ``False``: the built-in trackers only (what
            reading a run, as a report does, needs).

    Raises:
        ConfigError: A transcript line is not JSON, or a message's ``to`` does not resolve.
    """
    run_dir = Path(run_dir)
    scenario = tracker_scenario(read_manifest(run_dir), run_dir)
    if not own_trackers:
        trackers_config = scenario.trackers.model_copy(update={"extra": []})
        scenario = scenario.model_copy(update={"trackers": trackers_config})
    trackers = TrackerSet(scenario)
    path = run_dir / TRANSCRIPT
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip() and line.endswith("\n"):  # not a last line cut short by a crash
                try:
                    event = json.loads(line)
                except json.JSONDecodeError as exc:
                    msg = f"damaged: not valid JSON ({exc.msg})"
                    raise ConfigError(path, f"line {n}", msg) from None
                try:
                    trackers.observe(event)
                except UnresolvedRecipients as exc:
                    raise ConfigError(path, f"line {n}", f"damaged: {exc}") from None
    return trackers


def analyze_run(
    run_dir: str | Path, *, out_dir: str | Path | None = None, check: bool = False
) -> dict[str, str]:
    """``simworld analyze``: re-derive the frames and compare them with those on disk.

    Args:
        run_dir: A run directory.
        out_dir: Where to write the frames (default ``<run_dir>/trackers``).
        check: Compare only, write nothing.

    Returns:
        Frame name → ``identical`` (same bytes on disk), ``new`` (no file there) or
        ``different`` (a file with other bytes); unless ``check``, new and different
        frames are (re)written.
    """
    from simworld.llm.credentials import run_redactor

    trackers = derive(run_dir)
    manifest = read_manifest(run_dir)
    scenarios = [recorded_scenario(manifest.get("scenario"), Path(run_dir) / MANIFEST)]
    if (manifest.get("branch") or {}).get("parent_scenario") is not None:
        scenarios.append(tracker_scenario(manifest, run_dir))  # a branch ran both
    redactor = run_redactor(*scenarios)  # the run's own (:func:`simworld.runs.run.execute`)
    target = Path(out_dir) if out_dir is not None else Path(run_dir) / TRACKERS_DIR
    status: dict[str, str] = {}
    for name in trackers.names:
        data = parquet_bytes(trackers.table(name, redactor=redactor))
        path = target / f"{name}.parquet"
        if path.is_file():
            status[name] = "identical" if path.read_bytes() == data else "different"
        else:
            status[name] = "new"
        if not check and status[name] != "identical":
            target.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
    return status


__all__ = [
    "AGENT_REPORTERS",
    "BUILTIN_TRACKERS",
    "POPULATION_REPORTERS",
    "TRACKERS_DIR",
    "Tracker",
    "TrackerSet",
    "analyze_run",
    "derive",
    "frame_name",
    "load_tracker",
    "nullable_types",
    "parquet_bytes",
    "read_manifest",
    "tracker_scenario",
]
