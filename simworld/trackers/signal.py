"""The signal tracker: per topic, whether probe answers carry an opinion (docs/metrics.md §8)."""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa

from simworld.engine.counterbalance import parse_order
from simworld.measures.signal import SignalAccumulator
from simworld.trackers.base import BuiltinTracker, Row, TopicInfo


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
    when nothing is). Thresholds: ``trackers.signal``. Each probe is added once to running
    sums (:class:`simworld.measures.signal.SignalAccumulator`), so a step costs its own
    probes, not the run's history.
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
        self._acc: dict[str, SignalAccumulator] = {}
        self._by_topic: dict[str, Row] = {}

    def refresh(self) -> list[Row]:
        """One row per topic, in topic order (each probe is added once to running sums)."""
        changed = set()
        for p in self.cursor.new(self.store.probes):
            info = self.context.topics.get(p["topic"])
            if info is None or p.get("call") is None:
                continue
            acc = self._acc.get(info.id)
            if acc is None:
                acc = self._acc[info.id] = SignalAccumulator(info.values, ordinal=info.ordinal)
            acc.add(p["step"], p["agent"], p.get("answer"), parse_order(p.get("order")),
                    _probs(p.get("probs")))  # fmt: skip
            changed.add(info.id)
        for topic in changed:
            self._by_topic[topic] = self.tidier.row(self._row(self.context.topics[topic]))
        return [self._by_topic[t] for t in sorted(self._by_topic)]

    def _row(self, info: TopicInfo) -> Row:
        acc = self._acc[info.id]
        modal_answer, share = acc.modal()
        lowest = acc.lowest_step_modal_share()
        pbi = acc.position_bias()
        split, split_probs = acc.split.result(), acc.split_probs.result()
        limits = self.context.config.signal
        degenerate = None if math.isnan(lowest) else bool(lowest >= limits.modal_share)
        driven = None if math.isnan(pbi) else bool(pbi >= limits.position_bias)
        signal = split.persona_signal if acc.n_counterbalanced else None
        return {
            "topic": info.id,
            "scale": info.kind,
            "n": acc.n,
            "n_missing": acc.n_missing,
            "n_counterbalanced": acc.n_counterbalanced,
            "modal_answer": modal_answer,
            "modal_share": share,
            "lowest_step_modal_share": lowest,
            "position_bias": pbi,
            "persona_variance": split.persona,
            "ordering_variance": split.ordering,
            "n_probs": split_probs.n,
            "persona_variance_probs": split_probs.persona if split_probs.n else None,
            "ordering_variance_probs": split_probs.ordering if split_probs.n else None,
            "degenerate": degenerate,
            "position_driven": driven,
            "persona_signal": signal,
            "warning": (
                signal_warning(info.id, lowest, pbi, signal, degenerate, driven)
                if acc.n
                else unanswered_warning(info.id, acc.n_missing)
            ),
        }


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


def unanswered_warning(topic: str, missing: int) -> str:
    """The warning of a topic whose every probe went unanswered (there is nothing to check,
    and its measures are empty)."""
    return (
        f"topic {topic}: none of its {missing} probes was answered (every call failed or gave "
        "no valid answer), so it has no measures."
    )


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


__all__ = ["SignalTracker", "signal_summary", "signal_warning", "unanswered_warning"]
