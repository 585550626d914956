"""Opinion trackers: drift per agent (§2), population measures (§5), local conformity (§3)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from simworld.measures import (
    conformity_table,
    drift_table,
    is_missing,
    modal_opinion,
    population_table,
    time_to_consensus,
)
from simworld.tracker_base import BuiltinTracker, Row

STATED = "stated"
PRIVATE = "private"


class DriftTracker(BuiltinTracker):
    """Opinion drift of every agent on every topic at every probe step (metrics.md §2).

    Rows come from :func:`simworld.measures.drift_table` over the private probes, with the
    persona's assigned opinion (``run_start``) as the anchor: ``drift`` (signed, Likert
    only), ``abs_drift`` (from the first probe), ``path_length`` and ``flips``
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

    def compute(self) -> list[Row]:
        """Drift rows sorted by topic, agent, step."""
        frame = self.store.probe_frame(self.context)
        if frame.empty:
            return []
        assigned = self.context.assigned()
        table = drift_table(frame, assigned=assigned, scale=self.context.scales)
        answers = {
            (t, a, s): ans
            for t, a, s, ans in frame[["topic", "agent", "step", "answer"]].itertuples(index=False)
        }
        rows = []
        for r in table.to_dict("records"):
            topic = self.context.topics[r["topic"]]
            anchor = assigned.get(r["agent"], {}).get(r["topic"])
            rows.append(
                r
                | {
                    "answer": answers[(r["topic"], r["agent"], r["step"])],
                    "value": r["value"] if topic.ordinal else None,
                    "assigned": anchor,
                }
            )
        return rows


class PopulationTracker(BuiltinTracker):
    """Population measures per topic and probe step (metrics.md §5).

    From :func:`simworld.measures.population_table`: bias (Likert scales centred at 0, e.g.
    1..5 → -2..+2), diversity, variance, bimodality coefficient, Esteban–Ray polarization
    (ordinal only; null for choices), consensus share, modal opinion (null on a tie) and
    entropy (both kinds). ``consensus`` is ``consensus_share ≥ trackers.consensus_threshold``
    and ``time_to_consensus`` the first probe step where it held (null if never, so far).
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

    def compute(self) -> list[Row]:
        """Rows sorted by topic and step."""
        frame = self.store.probe_frame(self.context)
        if frame.empty:
            return []
        centre = {
            t.id: t.scale_range for t in self.context.topics.values() if t.scale_range is not None
        }
        table = population_table(frame, centre_on=centre, scale=self.context.scales)
        threshold = self.context.config.consensus_threshold
        rows = []
        for _, by_topic in table.groupby("topic", sort=True):
            shares = pd.Series(by_topic["consensus_share"].to_numpy(), index=by_topic["step"])
            reached = time_to_consensus(shares, threshold=threshold)
            for r in by_topic.to_dict("records"):
                share = r["consensus_share"]
                rows.append(
                    r
                    | {
                        "consensus": None if is_missing(share) else bool(share >= threshold),
                        "time_to_consensus": reached,
                    }
                )
        return rows


class ConformityTracker(BuiltinTracker):
    """Local conformity toward neighbours between consecutive probes (metrics.md §3).

    Rows come from :func:`simworld.measures.conformity_table`: the event for agent i at probe
    step t compares its private answers ``o_i(t)`` and ``o_i(t')`` (t' the next probe step)
    with ``m_N(i)(t)``, its graph neighbours' mean (Likert) or majority (choices) opinion.

    Choice of ``m_N(i)(t)`` (column ``source``): when stances were extracted it is what the
    neighbours *stated* in public between the two probes, i.e. at the steps t+1..t' whose
    talk moved ``o_i(t)`` to ``o_i(t')``; a neighbour with several statements there counts
    once, with the mean (Likert) or plurality (choices, undefined on a tie) of them; a
    statement without a position, or whose stance call failed, is left out. When the run
    has no stances (``trackers.stance: false``) the neighbours' *private* answers at t are
    used instead (``source = "private"``).
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
        ]
    )

    def stated_frame(self) -> pd.DataFrame:
        """Each agent's stated opinion per topic and probe interval (keyed by its first step)."""
        said: dict[tuple[str, str, int], list[Any]] = defaultdict(list)
        for message in self.store.messages:
            stance = self.store.stance_of(message)
            start = self.store.probe_before(message["step"])
            topic = self.context.topics.get(message["topic"])
            if stance is None or start is None or topic is None:
                continue
            value = topic.measure_value(stance.get("answer"))
            if value is not None:
                said[(message["topic"], message["agent"], start)].append(value)
        rows = []
        for (topic_id, agent, start), values in sorted(said.items()):
            if self.context.topics[topic_id].ordinal:
                value: Any = float(np.mean(values))
            else:
                value = modal_opinion(values)  # the plurality; None on a tie
            rows.append({"step": start, "agent": agent, "topic": topic_id, "value": value})
        return pd.DataFrame(rows, columns=["step", "agent", "topic", "value"])

    def compute(self) -> list[Row]:
        """Rows sorted by topic, agent, step."""
        frame = self.store.probe_frame(self.context)
        if frame.empty:
            return []
        source = STATED if self.store.stances else PRIVATE
        stated = self.stated_frame() if source == STATED else None
        table = conformity_table(
            frame[["step", "agent", "topic", "value"]],
            self.context.neighbours,
            stated=stated,
            scale=self.context.scales,
        )
        answers = {
            (t, a, s): ans
            for t, a, s, ans in frame[["topic", "agent", "step", "answer"]].itertuples(index=False)
        }
        rows = []
        for r in table.to_dict("records"):
            ordinal = self.context.topics[r["topic"]].ordinal
            m = r["neighbour_opinion"]
            rows.append(
                r
                | {
                    "answer": answers[(r["topic"], r["agent"], r["step"])],
                    "next_answer": answers[(r["topic"], r["agent"], r["next_step"])],
                    "neighbour_mean": m if ordinal else None,
                    "neighbour_majority": None if ordinal else m,
                    "source": source,
                }
            )
        return rows


__all__ = ["ConformityTracker", "DriftTracker", "PopulationTracker"]
