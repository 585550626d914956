"""What trackers share: the run context, the observed events, and the tracker interface."""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import pyarrow as pa

from simworld.config.scenario import Scenario
from simworld.config.trackers import TrackersConfig
from simworld.measures import CATEGORICAL, ORDINAL, ScaleKind, is_missing
from simworld.trackers.rows import Cursor, Event, Row, RowGroups, Tidier, clean, tidy

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
    their assigned opinions and the edges come from the ``run_start`` event. ``revision``
    grows whenever agents or edges change (whoever changes them must bump it): built-in
    trackers then recompute everything, as their rows may depend on both.
    """

    config: TrackersConfig
    topics: dict[str, TopicInfo]
    agents: dict[str, AgentInfo] = field(default_factory=dict)
    neighbours: dict[str, list[str]] = field(default_factory=dict)
    revision: int = 0

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
        self.revision += 1

    def assigned_value(self, agent: str, topic: str) -> float | str | None:
        """The persona's assigned opinion on ``topic`` as a measure value (None: none)."""
        info = self.agents.get(agent)
        if info is None or topic not in info.opinions:
            return None
        return self.topics[topic].measure_value(str(info.opinions[topic]))

    def assigned(self) -> dict[Hashable, dict[Hashable, Any]]:
        """Agent → topic → the persona's assigned opinion (as a measure value)."""
        return {
            key: {t: self.assigned_value(key, t) for t in info.opinions if t in self.topics}
            for key, info in self.agents.items()
        }


class Observations:
    """The events built-in trackers read, collected once and shared by all of them.

    Every kept event is appended to the list of its kind (``probes``, ``messages``,
    ``stance_log``, ``conversations``, ``judge_log``, ``bfi``, ``memory``), so a tracker can
    take only what arrived since it last looked (see :class:`Cursor`); ``versions`` counts
    them per kind. ``stances`` and ``judges`` index the latest one per (step, agent, turn).
    """

    def __init__(self) -> None:
        self.version = 0
        self.versions: Counter[str] = Counter()
        self.probes: list[Event] = []
        self.messages: list[Event] = []
        self.stances: dict[tuple[int, str, int], Event] = {}
        self.stance_log: list[Event] = []
        self.conversations: list[Event] = []
        self.judges: dict[tuple[int, str, int], Event] = {}
        self.judge_log: list[Event] = []
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
            i = bisect.bisect_left(self._probe_steps, event["step"])
            if i == len(self._probe_steps) or self._probe_steps[i] != event["step"]:
                self._probe_steps.insert(i, event["step"])
        elif kind == "message":
            self.messages.append(event)
        elif kind == "stance":
            self.stances[turn_key(event)] = event
            self.stance_log.append(event)
        elif kind == "conversation":
            self.conversations.append(event)
        elif kind == "impersonation_judge":
            self.judges[turn_key(event)] = event
            self.judge_log.append(event)
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

    def probe_after(self, step: int) -> int | None:
        """The earliest probe step strictly after ``step``."""
        i = bisect.bisect_right(self._probe_steps, step)
        return self._probe_steps[i] if i < len(self._probe_steps) else None

    def around_probes(self, steps: Iterable[int]) -> list[tuple[float, float]]:
        """Step ranges ``(low, high]`` whose nearest probes changed with probes at ``steps``.

        Whatever reads :meth:`probe_before` or :meth:`probe_at_or_after` of a step in one of
        these ranges may have changed, and nothing else: a probe at step s (a new probe
        step, or a new answer there) is the latest probe before the steps up to the next
        probe step, and the first at or after the steps since the previous one.
        """
        out = []
        for step in sorted(set(steps)):
            low, high = self.probe_before(step), self.probe_after(step)
            out.append((-math.inf if low is None else low, math.inf if high is None else high))
        return out

    def private_answer(self, topic: str, agent: str, step: int | None) -> str | None:
        """The agent's probe answer on ``topic`` at ``step`` (None: none, or the call failed)."""
        if step is None:
            return None
        return self._answers.get((topic, agent), {}).get(step)

    def stance_of(self, message: Event) -> Event | None:
        """The ``stance`` event of a message, if stance extraction ran."""
        return self.stances.get(turn_key(message))


def turn_key(event: Event) -> tuple[int, str, int]:
    """``(step, agent, turn)``: what ties a message to its stance and judge events."""
    return (event["step"], event["agent"], event["turn"])


def in_ranges(step: float, ranges: list[tuple[float, float]]) -> bool:
    """Whether ``step`` lies in one of the ``(low, high]`` ranges."""
    return any(low < step <= high for low, high in ranges)


class BuiltinTracker:
    """Base of the built-in trackers: they read the shared :class:`Observations`.

    Their :meth:`observe` does nothing: the tracker set feeds the shared store once per
    event. :meth:`rows` hands the events that arrived since the last call to
    :meth:`refresh`, which updates only the rows they affect (with the pure measures of
    :mod:`simworld.measures`), so following a run costs time in proportion to its events
    rather than to its history at every step. The rows depend only on the events observed,
    not on when :meth:`rows` was called; a change of agents or edges (``run_start``)
    recomputes everything.
    """

    name: ClassVar[str] = ""
    schema: ClassVar[pa.Schema]
    reads: ClassVar[tuple[str, ...]] = ()
    """Event types the rows depend on (besides ``run_start``); empty: all of them."""
    tidied: ClassVar[bool] = True
    """Rows come tidy (see :func:`tidy`): writers need not clean them again."""

    def __init__(self, context: RunContext, store: Observations) -> None:
        self.context = context
        self.store = store
        self.tidier = Tidier(self.schema)
        self._version: Any = None
        self._revision = context.revision
        self._rows: list[Row] = []
        self.cursor = Cursor()
        self.reset()

    def _state(self) -> Any:
        if not self.reads:
            return self.context.revision, self.store.version
        return self.context.revision, tuple(self.store.versions[k] for k in self.reads)

    def observe(self, event: Event) -> None:
        """No-op (see the class docstring)."""

    def rows(self) -> list[Row]:
        """The frame's rows, tidied to :attr:`schema` (the same list while nothing changed)."""
        state = self._state()
        if self._version != state:
            if self._revision != self.context.revision:
                self._revision = self.context.revision
                self.reset()
            self._rows = self.refresh()
            self._version = state
        return self._rows

    def reset(self) -> None:
        """Forget everything derived, so the next :meth:`refresh` reads all events again."""
        self.cursor = Cursor()

    def refresh(self) -> list[Row]:
        """Take the events that arrived since the last call; the rows (overridden)."""
        raise NotImplementedError


__all__ = [
    "AgentInfo",
    "BuiltinTracker",
    "Cursor",
    "Event",
    "Observations",
    "Row",
    "RowGroups",
    "RunContext",
    "Tidier",
    "TopicInfo",
    "Tracker",
    "clean",
    "in_ranges",
    "tidy",
    "turn_key",
]
