"""The signal tracker: per topic, whether probe answers carry an opinion (docs/metrics.md §8)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa

from simworld.counterbalance import parse_order
from simworld.measures import is_missing
from simworld.measures.signal import (
    lowest_step_modal_share,
    modal_share,
    one_hot,
    ordering_class,
    position_bias_index,
    variance_split,
)
from simworld.tracker_base import BuiltinTracker, Event, Row, TopicInfo


class SignalTracker(BuiltinTracker):
    """Signal checks of every topic's private probes over the whole run (docs/metrics.md §8).

    One row per topic, over every model-answered probe so far (baseline agents' rows, which
    no model answered, are left out): ``n`` answers and ``n_missing`` failed ones,
    ``n_counterbalanced`` answers whose shown order was recorded, the ``modal_answer`` and
    its share (overall, and ``lowest_step_modal_share``: the smallest over probe steps),
    the ``position_bias`` index (:func:`simworld.measures.signal.position_bias_index`;
    null without counterbalanced probes), and the between-persona and between-ordering
    variance (:func:`simworld.measures.signal.variance_split`) of the answers and, where the
    provider gave token probabilities (``n_probs`` probes), of the expected values (Likert)
    or option probabilities (choices). ``degenerate``, ``position_driven`` and
    ``persona_signal`` are the checks; ``warning`` says in plain words what is wrong (null
    when nothing is). Thresholds: ``trackers.signal``.
    """

    name = "signal"
    reads = ("probe",)
    schema = pa.schema(
        [
            ("topic", pa.string()),
            ("scale", pa.string()),
            ("n", pa.int64()),
            ("n_missing", pa.int64()),
            ("n_counterbalanced", pa.int64()),
            ("modal_answer", pa.string()),
            ("modal_share", pa.float64()),
            ("lowest_step_modal_share", pa.float64()),
            ("position_bias", pa.float64()),
            ("persona_variance", pa.float64()),
            ("ordering_variance", pa.float64()),
            ("n_probs", pa.int64()),
            ("persona_variance_probs", pa.float64()),
            ("ordering_variance_probs", pa.float64()),
            ("degenerate", pa.bool_()),
            ("position_driven", pa.bool_()),
            ("persona_signal", pa.bool_()),
            ("warning", pa.string()),
        ]
    )

    def reset(self) -> None:
        """Forget every probe."""
        super().reset()
        self._probes: dict[str, list[Event]] = {}
        self._by_topic: dict[str, Row] = {}

    def refresh(self) -> list[Row]:
        """One row per topic, in topic order."""
        changed = set()
        for p in self.cursor.new(self.store.probes):
            if p["topic"] not in self.context.topics or p.get("call") is None:
                continue
            self._probes.setdefault(p["topic"], []).append(p)
            changed.add(p["topic"])
        for topic in changed:
            self._by_topic[topic] = self.tidier.row(self._row(self.context.topics[topic]))
        return [self._by_topic[t] for t in sorted(self._by_topic)]

    def _row(self, info: TopicInfo) -> Row:
        probes = self._probes[info.id]
        answers = [p.get("answer") for p in probes]
        given = [a for a in answers if not is_missing(a)]
        orders = [parse_order(p.get("order")) for p in probes]
        share = modal_share(given)
        lowest = lowest_step_modal_share([p["step"] for p in probes], answers)
        counts = {a: given.count(a) for a in set(given)}
        top = max(counts.values()) if counts else 0
        modes = sorted(a for a, c in counts.items() if c == top)
        pbi = position_bias_index(answers, orders, ordinal=info.ordinal)
        n_counterbalanced = sum(
            o is not None and not is_missing(a) for a, o in zip(answers, orders, strict=True)
        )
        plain, probs = [], []
        for p, order in zip(probes, orders, strict=True):
            key = ordering_class(order, info.values, ordinal=info.ordinal)
            answer = p.get("answer")
            if not is_missing(answer):
                plain.append((p["step"], p["agent"], key, self._vector(info, answer)))
            dist = _probs(p.get("probs"))
            if dist:
                probs.append((p["step"], p["agent"], key, self._prob_vector(info, dist)))
        split, split_probs = variance_split(plain), variance_split(probs)
        limits = self.context.config.signal
        degenerate = None if math.isnan(lowest) else bool(lowest >= limits.modal_share)
        driven = None if math.isnan(pbi) else bool(pbi >= limits.position_bias)
        signal = split.persona_signal if n_counterbalanced else None
        return {
            "topic": info.id,
            "scale": info.kind,
            "n": len(given),
            "n_missing": len(answers) - len(given),
            "n_counterbalanced": n_counterbalanced,
            "modal_answer": modes[0] if len(modes) == 1 else None,
            "modal_share": share,
            "lowest_step_modal_share": lowest,
            "position_bias": pbi,
            "persona_variance": split.persona,
            "ordering_variance": split.ordering,
            "n_probs": len(probs),
            "persona_variance_probs": split_probs.persona if probs else None,
            "ordering_variance_probs": split_probs.ordering if probs else None,
            "degenerate": degenerate,
            "position_driven": driven,
            "persona_signal": signal,
            "warning": signal_warning(info.id, lowest, pbi, signal, degenerate, driven),
        }

    @staticmethod
    def _vector(info: TopicInfo, answer: str) -> np.ndarray:
        return np.array([float(answer)]) if info.ordinal else one_hot(answer, info.values)

    @staticmethod
    def _prob_vector(info: TopicInfo, dist: dict[str, float]) -> np.ndarray:
        total = sum(dist.values())
        if info.ordinal:
            return np.array([sum(float(k) * p for k, p in dist.items()) / total])
        return np.array([dist.get(v, 0.0) / total for v in info.values])


def signal_summary(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Topic → the signal checks of a run, JSON-ready (NaN as None), for the manifest."""
    keep = ("n", "n_counterbalanced", "modal_answer", "modal_share",
            "lowest_step_modal_share", "position_bias",
            "persona_variance", "ordering_variance", "degenerate", "position_driven",
            "persona_signal", "warning")  # fmt: skip
    return {
        str(r["topic"]): {
            k: None if isinstance(r[k], float) and math.isnan(r[k]) else r[k] for k in keep
        }
        for r in rows
    }


def _probs(text: Any) -> dict[str, float] | None:
    """A probe's recorded option probabilities (JSON written by the engine), or None."""
    if not isinstance(text, str) or not text:
        return None
    data = json.loads(text)
    out = {str(k): float(v) for k, v in data.items()}
    return out if sum(out.values()) > 0 else None


def signal_warning(
    topic: str,
    share: float,
    pbi: float,
    persona_signal: bool | None,
    degenerate: bool | None,
    driven: bool | None,
) -> str | None:
    """The plain-words warning of a topic's checks (None: nothing to warn about)."""
    parts = []
    if degenerate:
        parts.append(
            f"at every probe step at least {share:.0%} of the answers are the same option "
            f"(degenerate)"
        )
    if driven:
        parts.append(
            f"the answers follow the position an option is shown at more than its content "
            f"(position-bias index {pbi:.2f})"
        )
    if persona_signal is False:
        parts.append(
            "answers differ no more between personas than between orderings of the same persona"
        )
    if not parts:
        return None
    return f"topic {topic}: " + "; ".join(parts) + ". These answers may not be opinions."


__all__ = ["SignalTracker", "signal_summary", "signal_warning"]
