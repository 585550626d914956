"""What trackers share: the run context, the observed events, and the tracker interface."""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import pandas as pd
import pyarrow as pa

from simworld.measures import CATEGORICAL, ORDINAL, ScaleKind, is_missing
from simworld.scenario import Scenario
from simworld.tracker_config import TrackersConfig

Event = dict[str, Any]
Row = dict[str, Any]
MEMORY_EVENT_PREFIXES = ("memory", "reflection")
"""Event types counted by the memory tracker (``memory_forgotten``, ``reflection`` …)."""


@runtime_checkable
class Tracker(Protocol):
    """A tracker: fed every transcript event in order, it reports tidy rows.

    ``name`` (optional, a lower-case slug) names its frame, ``trackers/<name>.parquet``;
    ``schema`` (optional, a ``pyarrow.Schema``) fixes the frame's column types, else they
    are inferred from the rows. ``rows()`` must depend only on the events observed so far.
    """

    def observe(self, event: Event) -> None:
        """Take one event (every type arrives; ignore what you do not need)."""
        ...

    def rows(self) -> list[Row]:
        """The tracker's frame so far, one dict per row, in a deterministic order."""
        ...


@dataclass(frozen=True)
class TopicInfo:
    """A topic as trackers need it: kind and scale range."""

    id: str
    ordinal: bool
    values: tuple[str, ...]

    @property
    def kind(self) -> ScaleKind:
        """``ordinal`` (Likert) or ``categorical`` (choice letters)."""
        return ORDINAL if self.ordinal else CATEGORICAL

    @property
    def scale_range(self) -> tuple[float, float] | None:
        """``(1, K)`` of a Likert scale (symmetric, centred for bias, §5); None for choices."""
        return (1.0, float(len(self.values))) if self.ordinal else None

    def measure_value(self, answer: str | None) -> float | str | None:
        """An answer string as the measures take it: float for Likert, letter for choices."""
        if answer is None or is_missing(answer):
            return None
        return float(answer) if self.ordinal else str(answer)


@dataclass(frozen=True)
class AgentInfo:
    """An agent as recorded in the ``run_start`` event."""

    key: str
    name: str
    node: int
    nationality: str
    opinions: dict[str, Any] = field(default_factory=dict)
    big_five: dict[str, float] = field(default_factory=dict)


@dataclass
class RunContext:
    """The scenario's topics and tracker settings, and the agents and graph of the run.

    Topics and settings come from the scenario (the manifest's, when re-derived); agents,
    their assigned opinions and the edges come from the ``run_start`` event.
    """

    config: TrackersConfig
    topics: dict[str, TopicInfo]
    agents: dict[str, AgentInfo] = field(default_factory=dict)
    neighbours: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> RunContext:
        """The context of a scenario, before its ``run_start`` event is seen."""
        topics = {
            t.id: TopicInfo(t.id, t.ordinal, tuple(str(v) for v in t.scale.values))
            for t in scenario.topics
        }
        return cls(config=scenario.trackers, topics=topics)

    @property
    def scales(self) -> dict[Hashable, ScaleKind]:
        """Topic id → scale kind."""
        return {t.id: t.kind for t in self.topics.values()}

    def start(self, event: Event) -> None:
        """Read the agents, assigned opinions and edges of a ``run_start`` event."""
        self.agents = {
            a["agent"]: AgentInfo(
                key=a["agent"],
                name=a.get("name", a["agent"]),
                node=int(a["node"]),
                nationality=a.get("nationality", ""),
                opinions=dict(a.get("opinions") or {}),
                big_five=dict(a.get("big_five") or {}),
            )
            for a in event.get("agents", [])
        }
        by_node = {a.node: a.key for a in self.agents.values()}
        nbrs: dict[str, set[str]] = {k: set() for k in self.agents}
        for u, v in event.get("edges", []):
            nbrs[by_node[u]].add(by_node[v])
            nbrs[by_node[v]].add(by_node[u])
        self.neighbours = {k: sorted(v, key=lambda x: self.agents[x].node) for k, v in nbrs.items()}

    def assigned(self) -> dict[Hashable, dict[Hashable, Any]]:
        """Agent → topic → the persona's assigned opinion (as a measure value)."""
        out: dict[Hashable, dict[Hashable, Any]] = {}
        for key, info in self.agents.items():
            out[key] = {
                t: self.topics[t].measure_value(str(v))
                for t, v in info.opinions.items()
                if t in self.topics
            }
        return out


class Observations:
    """The events built-in trackers read, collected once and shared by all of them.

    ``version`` grows with every event kept, so trackers recompute only when it changed.
    """

    def __init__(self) -> None:
        self.version = 0
        self.versions: Counter[str] = Counter()
        self.probes: list[Event] = []
        self.messages: list[Event] = []
        self.stances: dict[tuple[int, str, int], Event] = {}
        self.conversations: list[Event] = []
        self.judges: dict[tuple[int, str, int], Event] = {}
        self.bfi: list[Event] = []
        self.memory: list[Event] = []
        self._answers: dict[tuple[str, str], dict[int, str | None]] = {}
        self._probe_steps: list[int] = []

    def observe(self, event: Event) -> None:
        """Keep ``event`` if a built-in tracker reads its type."""
        kind = event.get("type", "")
        if kind == "probe":
            self.probes.append(event)
            self._answers.setdefault((event["topic"], event["agent"]), {})[event["step"]] = (
                event.get("answer")
            )
            if event["step"] not in self._probe_steps:
                bisect.insort(self._probe_steps, event["step"])
        elif kind == "message":
            self.messages.append(event)
        elif kind == "stance":
            self.stances[(event["step"], event["agent"], event["turn"])] = event
        elif kind == "conversation":
            self.conversations.append(event)
        elif kind == "impersonation_judge":
            self.judges[(event["step"], event["agent"], event["turn"])] = event
        elif kind == "bfi":
            self.bfi.append(event)
        elif kind.startswith(MEMORY_EVENT_PREFIXES) and "agent" in event:
            self.memory.append(event)
        else:
            return
        self.version += 1
        self.versions["memory" if kind.startswith(MEMORY_EVENT_PREFIXES) else kind] += 1

    @property
    def probe_steps(self) -> list[int]:
        """Steps with at least one probe, ascending."""
        return list(self._probe_steps)

    def probe_before(self, step: int) -> int | None:
        """The latest probe step strictly before ``step`` (the O of a block starting there)."""
        i = bisect.bisect_left(self._probe_steps, step)
        return self._probe_steps[i - 1] if i > 0 else None

    def probe_at_or_after(self, step: int) -> int | None:
        """The earliest probe step at or after ``step`` (the R of a block ending there)."""
        i = bisect.bisect_left(self._probe_steps, step)
        return self._probe_steps[i] if i < len(self._probe_steps) else None

    def private_answer(self, topic: str, agent: str, step: int | None) -> str | None:
        """The agent's probe answer on ``topic`` at ``step`` (None: none, or the call failed)."""
        if step is None:
            return None
        return self._answers.get((topic, agent), {}).get(step)

    def probe_frame(self, context: RunContext) -> pd.DataFrame:
        """Probes as a tidy frame ``step, agent, topic, answer, value`` (value: measure value)."""
        rows = []
        for p in self.probes:
            info = context.topics.get(p["topic"])
            if info is None:
                continue
            answer = p.get("answer")
            rows.append(
                {
                    "step": p["step"],
                    "agent": p["agent"],
                    "topic": p["topic"],
                    "answer": answer,
                    "value": info.measure_value(answer),
                }
            )
        return pd.DataFrame(rows, columns=["step", "agent", "topic", "answer", "value"])

    def stance_of(self, message: Event) -> Event | None:
        """The ``stance`` event of a message, if stance extraction ran."""
        return self.stances.get((message["step"], message["agent"], message["turn"]))


def clean(value: Any, type_: pa.DataType) -> Any:
    """One cell for a parquet row: missing → None, else coerced to the column's type."""
    if value is None or is_missing(value):
        return None
    if pa.types.is_integer(type_):
        return int(value)
    if pa.types.is_floating(type_):
        f = float(value)
        return None if math.isnan(f) else f
    if pa.types.is_boolean(type_):
        return bool(value)
    if pa.types.is_string(type_):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    return value


def tidy(rows: list[Row], schema: pa.Schema) -> list[Row]:
    """Rows restricted to the schema's columns, in its order, with cells :func:`clean`-ed."""
    return [{f.name: clean(r.get(f.name), f.type) for f in schema} for r in rows]


class BuiltinTracker:
    """Base of the built-in trackers: they read the shared :class:`Observations`.

    Their :meth:`observe` does nothing: the tracker set feeds the shared store once per
    event. :meth:`rows` recomputes (with the pure measures of :mod:`simworld.measures`)
    only when new events arrived.
    """

    name: ClassVar[str] = ""
    schema: ClassVar[pa.Schema]
    reads: ClassVar[tuple[str, ...]] = ()
    """Event types the rows depend on (besides ``run_start``); empty: all of them."""

    def __init__(self, context: RunContext, store: Observations) -> None:
        self.context = context
        self.store = store
        self._version: Any = None
        self._rows: list[Row] = []

    def _state(self) -> Any:
        if not self.reads:
            return self.store.version
        return tuple(self.store.versions[k] for k in self.reads)

    def observe(self, event: Event) -> None:
        """No-op (see the class docstring)."""

    def rows(self) -> list[Row]:
        """The frame's rows, tidied to :attr:`schema`."""
        state = self._state()
        if self._version != state:
            self._rows = tidy(self.compute(), self.schema)
            self._version = state
        return self._rows

    def compute(self) -> list[Row]:
        """Compute the rows from the store (overridden)."""
        raise NotImplementedError


__all__ = [
    "AgentInfo",
    "BuiltinTracker",
    "Observations",
    "RunContext",
    "TopicInfo",
    "Tracker",
    "clean",
    "tidy",
]
