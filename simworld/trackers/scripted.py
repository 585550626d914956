"""Trackers of scripted experiments: belief states on a claim, Asch trials, interventions."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from simworld.measures import believes, next_state
from simworld.trackers.base import Event, Observations, Row, RunContext, tidy


class EventTracker:
    """A tracker that turns some events into rows as they arrive (no recomputation).

    Subclasses define :meth:`row`; :meth:`rows` hands back a new list whenever rows were
    added (the same list otherwise), tidied to :attr:`schema`.
    """

    name: ClassVar[str] = ""
    schema: ClassVar[pa.Schema]

    def __init__(self, context: RunContext, store: Observations | None = None) -> None:
        self.context = context
        self._rows: list[Row] = []
        self._new: list[Row] = []

    def observe(self, event: Event) -> None:
        """Keep the event's row, if it makes one."""
        row = self.row(event)
        if row is not None:
            self._new.append(row)

    def rows(self) -> list[Row]:
        """The rows so far, in event order."""
        if self._new:
            self._rows = self._rows + tidy(self._new, self.schema)
            self._new = []
        return self._rows

    def row(self, event: Event) -> Row | None:
        """The row of one event, or None (overridden)."""
        raise NotImplementedError


class BeliefTracker(EventTracker):
    """Belief state (S / B / R) of every agent at every probe of ``trackers.belief.topic``.

    Source: :mod:`simworld.measures.belief` (after Liu et al. 2024, FPS, arXiv 2403.09498);
    the state machine is :func:`~simworld.measures.next_state`, fed in transcript order.
    Empty when ``trackers.belief`` is off.
    """

    name = "belief"
    schema = pa.schema(
        [
            ("step", pa.int64()),
            ("agent", pa.string()),
            ("topic", pa.string()),
            ("value", pa.float64()),
            ("believing", pa.bool_()),
            ("state", pa.string()),
        ]
    )

    def __init__(self, context: RunContext, store: Observations | None = None) -> None:
        super().__init__(context, store)
        self._ever: dict[str, bool] = {}

    def row(self, event: Event) -> Row | None:
        """A row per probe of the claim."""
        config = self.context.config.belief
        if event.get("type") != "probe" or config is None or event["topic"] != config.topic:
            return None
        value = event.get("value")
        flag = believes(value, config.believe_at)
        agent = event["agent"]
        state = next_state(flag, self._ever.get(agent, False))
        if flag:
            self._ever[agent] = True
        return {
            **_pick(event, "step", "agent", "topic", "value"),
            "believing": flag,
            "state": state,
        }


class AschTracker(EventTracker):
    """One row per Asch trial (docs/metrics.md §3): ``p``, the peers' answer, own and given answers.

    ``simworld.measures.asch_table`` turns the frame into CL and RL as functions of p.
    """

    name = "asch"
    schema = pa.schema(
        [
            ("step", pa.int64()),
            ("agent", pa.string()),
            ("topic", pa.string()),
            ("p", pa.int64()),
            ("peer_answer", pa.string()),
            ("own_answer", pa.string()),
            ("answer", pa.string()),
            ("ok", pa.bool_()),
        ]
    )

    def row(self, event: Event) -> Row | None:
        """A row per ``asch`` event."""
        if event.get("type") != "asch":
            return None
        return _pick(event, *self.schema.names)


class InterventionTracker(EventTracker):
    """One row per scheduled intervention: what happened, at which step, to how many."""

    name = "interventions"
    schema = pa.schema(
        [
            ("step", pa.int64()),
            ("index", pa.int64()),
            ("kind", pa.string()),
            ("topic", pa.string()),
            ("source", pa.string()),
            ("agents", pa.int64()),
            ("edges_removed", pa.int64()),
            ("edges_added", pa.int64()),
        ]
    )

    def row(self, event: Event) -> Row | None:
        """A row per ``intervention`` event; ``agents`` counts recipients or removed agents."""
        if event.get("type") != "intervention":
            return None
        agents = event.get("to", event.get("agents"))
        return {
            **_pick(event, "step", "index", "kind", "topic", "source"),
            "agents": None if agents is None else len(agents),
            "edges_removed": len(event.get("edges_removed", [])),
            "edges_added": len(event.get("edges_added", [])),
        }


def _pick(event: Event, *keys: str) -> dict[str, Any]:
    return {k: event.get(k) for k in keys}


__all__ = ["AschTracker", "BeliefTracker", "EventTracker", "InterventionTracker"]
