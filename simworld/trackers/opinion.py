"""Opinion trackers: drift per agent (§2), population measures (§5), local conformity (§3)."""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import pyarrow as pa

from simworld.measures import is_missing, modal_opinion, time_to_consensus
from simworld.measures.conformity import conformity_event
from simworld.measures.drift import DriftSeries
from simworld.measures.population import population_row
from simworld.trackers.base import BuiltinTracker, Event, Row, RowGroups, turn_key

STATED = "stated"
PRIVATE = "private"
DUPLICATE_PROBE = "more than one answer for some (step, agent, topic)"


class _Series:
    """One (topic, agent) drift series: its probes in step order and their tidy rows."""

    def __init__(self, tracker: DriftTracker, topic: str, agent: str) -> None:
        self.tracker, self.topic, self.agent = tracker, topic, agent
        self.probes: list[tuple[int, str | None]] = []
        self.rows: list[Row] = []
        self._acc = self._start()

    def _start(self) -> DriftSeries:
        context = self.tracker.context
        anchor = context.assigned_value(self.agent, self.topic)
        return DriftSeries(self.topic, self.agent, context.topics[self.topic].kind, anchor)

    def add(self, step: int, answer: str | None) -> None:
        """Add a probe: a new last row, or (a probe out of step order) every row again."""
        if self.probes and step <= self.probes[-1][0]:
            if any(s == step for s, _ in self.probes):
                raise ValueError(DUPLICATE_PROBE)
            bisect.insort(self.probes, (step, answer), key=lambda p: p[0])
            self._acc, self.rows = self._start(), []
            for s, a in self.probes:
                self.rows.append(self._row(s, a))
            return
        self.probes.append((step, answer))
        self.rows.append(self._row(step, answer))

    def _row(self, step: int, answer: str | None) -> Row:
        info = self.tracker.context.topics[self.topic]
        r = self._acc.add(step, info.measure_value(answer))
        extra = {
            "answer": answer,
            "value": r["value"] if info.ordinal else None,
            "assigned": self._acc.anchor,
        }
        return self.tracker.tidier.row(r | extra)


class DriftTracker(BuiltinTracker):
    """Opinion drift of every agent on every topic at every probe step (docs/metrics.md §2).

    Rows are those of :func:`simworld.measures.drift_table` over the private probes (each
    series extended with :class:`simworld.measures.drift.DriftSeries` as probes arrive),
    with the persona's assigned opinion (``run_start``) as the anchor: ``drift`` (signed,
    Likert only), ``abs_drift`` (from the first probe), ``path_length`` and ``flips``
    (cumulative), ``anchored_distance`` (from the assigned opinion; 0/1 for choices). A
    probe whose call failed gives ``missing=True`` and nulls, never a value.
    """

    name = "drift"
    reads = ("probe",)
    schema = pa.schema(
        [
            ("topic", pa.string()),
            ("agent", pa.string()),
            ("step", pa.int64()),
            ("answer", pa.string()),
            ("value", pa.float64()),
            ("scale", pa.string()),
            ("missing", pa.bool_()),
            ("drift", pa.float64()),
            ("abs_drift", pa.float64()),
            ("path_length", pa.float64()),
            ("flips", pa.float64()),
            ("assigned", pa.string()),
            ("anchored_distance", pa.float64()),
        ]
    )

    def reset(self) -> None:
        """Forget every series."""
        super().reset()
        self._series: dict[tuple[str, str], _Series] = {}
        self._frame = RowGroups(ordered=True)

    def refresh(self) -> list[Row]:
        """Rows sorted by topic, agent, step."""
        for p in self.cursor.new(self.store.probes):
            if p["topic"] not in self.context.topics:
                continue
            key = (p["topic"], p["agent"])
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(self, *key)
            series.add(p["step"], p.get("answer"))
            self._frame.put(key, series.rows)
        return self._frame.rows()


class PopulationTracker(BuiltinTracker):
    """Population measures per topic and probe step (docs/metrics.md §5).

    From :func:`simworld.measures.population.population_row` (the rows of
    :func:`~simworld.measures.population_table`), recomputed for the (topic, step) groups
    that received probes: bias (Likert scales centred at 0, e.g. 1..5 → -2..+2), diversity,
    variance, bimodality coefficient, Esteban–Ray polarization (ordinal only; null for
    choices), consensus share, modal opinion (null on a tie) and entropy (both kinds).
    ``consensus`` is ``consensus_share ≥ trackers.consensus_threshold`` and
    ``time_to_consensus`` the first probe step where it held (null if never, so far).
    Failed probes are left out and counted in ``n_missing``.
    """

    name = "population"
    reads = ("probe",)
    schema = pa.schema(
        [
            ("topic", pa.string()),
            ("step", pa.int64()),
            ("scale", pa.string()),
            ("n", pa.int64()),
            ("n_missing", pa.int64()),
            ("bias", pa.float64()),
            ("diversity", pa.float64()),
            ("variance", pa.float64()),
            ("bimodality", pa.float64()),
            ("polarization", pa.float64()),
            ("consensus_share", pa.float64()),
            ("modal_opinion", pa.string()),
            ("entropy", pa.float64()),
            ("consensus", pa.bool_()),
            ("time_to_consensus", pa.int64()),
        ]
    )

    def reset(self) -> None:
        """Forget every group."""
        super().reset()
        self._values: dict[tuple[str, int], list[Any]] = {}
        self._measures: dict[tuple[str, int], Row] = {}
        self._done: list[Row] = []

    def refresh(self) -> list[Row]:
        """Rows sorted by topic and step."""
        changed = set()
        for p in self.cursor.new(self.store.probes):
            info = self.context.topics.get(p["topic"])
            if info is None:
                continue
            key = (p["topic"], p["step"])
            self._values.setdefault(key, []).append(info.measure_value(p.get("answer")))
            changed.add(key)
        if not changed:
            return self._done
        for topic, step in changed:
            info = self.context.topics[topic]
            self._measures[(topic, step)] = population_row(
                topic,
                step,
                self._values[(topic, step)],
                kind=info.kind,
                centre_on=info.scale_range,
            )
        threshold = self.context.config.consensus_threshold
        rows: list[Row] = []
        for topic in sorted({t for t, _ in self._measures}):
            by_step = sorted((s, r) for (t, s), r in self._measures.items() if t == topic)
            shares = {s: r["consensus_share"] for s, r in by_step}
            reached = time_to_consensus(shares, threshold=threshold)
            for _, r in by_step:
                share = r["consensus_share"]
                consensus = None if is_missing(share) else bool(share >= threshold)
                rows.append(
                    self.tidier.row(r | {"consensus": consensus, "time_to_consensus": reached})
                )
        self._done = rows
        return rows


class ConformityTracker(BuiltinTracker):
    """Local conformity between consecutive probes (docs/metrics.md §3).

    Rows are the events of :func:`simworld.measures.conformity_table`, each computed with
    :func:`simworld.measures.conformity.conformity_event` when its inputs change: the event
    for agent i at probe step t compares its private answers ``o_i(t)`` and ``o_i(t')``
    (t' the next probe step) with ``m_N(i)(t)``, the mean (Likert) or majority (choices)
    opinion of the others.

    Who the others are: ``neighbour_mean`` / ``neighbour_majority`` / ``n_neighbours`` /
    ``conformed`` / ``step_toward`` are over what agent i *heard*: the speakers of the
    messages delivered to it (``to`` of the ``message`` event) at the steps t+1..t' whose
    talk moved ``o_i(t)`` to ``o_i(t')``, in every mode. In ``pairs`` and ``group`` modes
    that is the partner or the group members it is linked to, not every graph neighbour.
    The ``graph_*`` columns hold the same measure over all graph neighbours (what the
    speakers said to anyone), the definition used before (issue 17): it counts statements
    the agent never heard.

    Choice of the others' opinion (column ``source``): when stances were extracted it is
    what they *stated* in public, from the messages counted (for the heard version, only
    the messages delivered to i); a speaker with several statements there counts once,
    with the mean (Likert) or plurality (choices, undefined on a tie) of them; a statement
    without a position, or whose stance call failed, is left out. When the run has no
    stances (``trackers.stance: false``) their *private* answers at t are used instead
    (``source = "private"``; the heard version takes the speakers that delivered a
    message to i in the block).
    """

    name = "conformity"
    reads = ("probe", "message", "stance")
    schema = pa.schema(
        [
            ("topic", pa.string()),
            ("agent", pa.string()),
            ("step", pa.int64()),
            ("next_step", pa.int64()),
            ("answer", pa.string()),
            ("next_answer", pa.string()),
            ("neighbour_mean", pa.float64()),
            ("neighbour_majority", pa.string()),
            ("n_neighbours", pa.int64()),
            ("conformed", pa.bool_()),
            ("step_toward", pa.float64()),
            ("source", pa.string()),
            ("graph_neighbour_mean", pa.float64()),
            ("graph_neighbour_majority", pa.string()),
            ("n_graph_neighbours", pa.int64()),
            ("graph_conformed", pa.bool_()),
            ("graph_step_toward", pa.float64()),
        ]
    )

    def reset(self) -> None:
        """Forget every event and statement."""
        super().reset()
        self._source: str | None = None
        self._steps: dict[tuple[str, str], list[int]] = {}  # (topic, agent) → probe steps
        self._values: dict[tuple[str, str, int], Any] = {}  # (topic, agent, step) → value
        self._said: dict[tuple[str, str, int], list[Event]] = {}  # (topic, agent, t) → msgs
        self._said_keys: dict[tuple[int, str, int], list[tuple[str, str, int]]] = {}
        # (topic, listener, t) → speaker → the messages delivered to the listener
        self._heard: dict[tuple[str, str, int], dict[str, list[Event]]] = {}
        self._turn_heard: dict[tuple[int, str, int], list[tuple[str, str, int]]] = {}
        self._stated: dict[tuple[str, str, int], Any] = {}
        self._probe_steps: set[int] = set()
        self._last_message_step: float = -math.inf
        self._frame = RowGroups(ordered=True)
        nbrs = self.context.neighbours
        self._listeners: dict[str, list[str]] = {}
        for agent, ns in nbrs.items():
            for j in ns:
                self._listeners.setdefault(j, []).append(agent)

    def refresh(self) -> list[Row]:
        """Rows sorted by topic, agent, step."""
        probes = self.cursor.new(self.store.probes)
        messages = self.cursor.new(self.store.messages)
        stances = self.cursor.new(self.store.stance_log)
        source = STATED if self.store.stances else PRIVATE
        new_steps = {p["step"] for p in probes} - self._probe_steps
        if self._source not in (None, source) or any(
            s < self._last_message_step for s in new_steps
        ):
            # whose statements (or answers) count at which probe changed: start again
            self.reset()
            return self.refresh()
        self._source = source
        self._probe_steps |= new_steps
        dirty: set[tuple[str, str, int]] = set()
        for p in probes:
            self._add_probe(p, dirty)
        stale = {k for k in map(self._add_message, messages) if k is not None}
        stale.update(k for s in stances for k in self._said_keys.get(turn_key(s), []))
        for message in messages:
            dirty.update(self._turn_heard.get(turn_key(message), []))
        for s in stances:
            dirty.update(self._turn_heard.get(turn_key(s), []))
        for key in stale:
            value = self._stated_value(key)
            if value != self._stated.get(key):
                self._stated[key] = value
                topic, agent, start = key
                dirty.update((topic, i, start) for i in self._listeners.get(agent, []))
        for key in dirty:
            self._update_row(key)
        return self._frame.rows()

    def _add_probe(self, p: Event, dirty: set[tuple[str, str, int]]) -> None:
        topic, agent, step = p["topic"], p["agent"], p["step"]
        info = self.context.topics.get(topic)
        if info is None:
            return
        if (topic, agent, step) in self._values:
            raise ValueError(DUPLICATE_PROBE)
        self._values[(topic, agent, step)] = info.measure_value(p.get("answer"))
        steps = self._steps.setdefault((topic, agent), [])
        i = bisect.bisect_left(steps, step)
        steps.insert(i, step)
        if i > 0:
            dirty.add((topic, agent, steps[i - 1]))
        dirty.add((topic, agent, step))
        if self._source == PRIVATE:
            dirty.update((topic, j, step) for j in self._listeners.get(agent, []))

    def _add_message(self, message: Event) -> tuple[str, str, int] | None:
        """File a message under its speaker's stated opinion between two probes."""
        self._last_message_step = max(self._last_message_step, message["step"])
        start = self.store.probe_before(message["step"])
        if start is None or message["topic"] not in self.context.topics:
            return None
        key = (message["topic"], message["agent"], start)
        self._said.setdefault(key, []).append(message)
        self._said_keys.setdefault(turn_key(message), []).append(key)
        for listener in message.get("to") or []:
            heard_key = (message["topic"], listener, start)
            by_speaker = self._heard.setdefault(heard_key, {})
            by_speaker.setdefault(message["agent"], []).append(message)
            self._turn_heard.setdefault(turn_key(message), []).append(heard_key)
        return key

    def _stated_value(self, key: tuple[str, str, int]) -> Any:
        """The mean (Likert) or plurality (choices; None on a tie) of what was stated."""
        return self._statement_value(key[0], self._said.get(key, []))

    def _statement_value(self, topic_id: str, messages: list[Event]) -> Any:
        """The mean (Likert) or plurality (choices; None on a tie) of some messages' stances."""
        topic = self.context.topics[topic_id]
        values = []
        for message in messages:
            stance = self.store.stance_of(message)
            value = None if stance is None else topic.measure_value(stance.get("answer"))
            if value is not None:
                values.append(value)
        if not values:
            return None
        if topic.ordinal:
            return float(np.mean([float(v) for v in values]))
        return modal_opinion(values)

    def _update_row(self, key: tuple[str, str, int]) -> None:
        topic, agent, step = key
        steps = self._steps.get((topic, agent), [])
        i = bisect.bisect_left(steps, step)
        if i + 1 >= len(steps) or steps[i] != step:
            self._frame.drop(key)
            return
        following = steps[i + 1]
        said = self._stated if self._source == STATED else self._values
        graph = [said.get((topic, j, step)) for j in self.context.neighbours.get(agent, [])]
        speakers = self._heard.get(key, {})
        if self._source == STATED:
            heard = [self._statement_value(topic, msgs) for msgs in speakers.values()]
        else:
            heard = [self._values.get((topic, j, step)) for j in speakers]
        info = self.context.topics[topic]
        values = (self._values[(topic, agent, step)], self._values[(topic, agent, following)])
        r = conformity_event(topic, agent, (step, following), values, heard, kind=info.kind)
        g = conformity_event(topic, agent, (step, following), values, graph, kind=info.kind)
        m, gm = r["neighbour_opinion"], g["neighbour_opinion"]
        extra = {
            "answer": self.store.private_answer(topic, agent, step),
            "next_answer": self.store.private_answer(topic, agent, following),
            "neighbour_mean": m if info.ordinal else None,
            "neighbour_majority": None if info.ordinal else m,
            "source": self._source,
            "graph_neighbour_mean": gm if info.ordinal else None,
            "graph_neighbour_majority": None if info.ordinal else gm,
            "n_graph_neighbours": g["n_neighbours"],
            "graph_conformed": g["conformed"],
            "graph_step_toward": g["step_toward"],
        }
        self._frame.put(key, [self.tidier.row(r | extra)])


__all__ = ["ConformityTracker", "DriftTracker", "PopulationTracker"]
