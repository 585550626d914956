"""Opinion drift over time: drift from the start, path length / flips, persona-anchored drift.

Source: docs/metrics.md §2 (opinion drift). Notation: ``o_i(t)`` agent i's opinion at step t.

Ordinal answers (Likert ints) use the usual distance ``|a - b|``. Categorical answers use
the discrete distance ``[a != b]``: under it the path length is the number of flips and the
persona-anchored distance is a 0/1 mismatch; the signed drift ``Δ`` has no meaning and is
refused (ValueError) or left NaN in tables.

Missing answers (None/NaN from failed calls) are never values: the step's derived values
are NaN, and paths are taken over the observed answers only (see :func:`path_length`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import pandas as pd

from simworld.measures._common import (
    CATEGORICAL,
    ORDINAL,
    Answer,
    ScaleKind,
    infer_scale,
    is_missing,
    ordinal_array,
    present,
)

__all__ = [
    "VALUE_COLUMNS",
    "DriftSeries",
    "absolute_drift",
    "drift",
    "drift_table",
    "flips",
    "path_length",
    "persona_anchored_drift",
]

VALUE_COLUMNS = ("value", "answer")
"""Column names :func:`drift_table` looks for, in order, when ``value_col`` is not given."""


def drift(values: Sequence[Answer | None]) -> np.ndarray:
    """Drift ``Δ_i(t) = o_i(t) - o_i(0)`` for one agent's ordinal series.

    Source: docs/metrics.md §2.

    Choice: the baseline is the answer at the first step. If it is missing the drift is
    undefined at every step (all NaN) rather than measured from a later answer, which would
    silently move t=0.

    Args:
        values: ``o_i(0), o_i(1), …`` in step order; None/NaN for missing answers.

    Returns:
        Float array of the same length; NaN where ``o_i(t)`` or ``o_i(0)`` is missing.

    Raises:
        ValueError: An answer is not numeric (drift has no sign for categories; use
            :func:`flips` or the discrete distance in :func:`drift_table`).
    """
    arr = ordinal_array(values, "drift")
    if arr.size == 0:
        return arr
    return arr - arr[0]


def absolute_drift(values: Sequence[Answer | None]) -> np.ndarray:
    """Absolute drift ``|Δ_i(t)|`` (see :func:`drift`). Source: docs/metrics.md §2."""
    return np.abs(drift(values))


def flips(values: Sequence[Answer | None]) -> int:
    """Number of flips: steps whose answer differs from the previous observed answer.

    Source: docs/metrics.md §2 (path length for categorical answers).

    Choice: missing answers are skipped and the comparison is with the last observed answer
    (A, None, B is one flip; A, None, A is none), so a failed call neither adds nor hides
    a change. Works for both kinds (for ordinal answers it counts changes of value).

    Args:
        values: Answers in step order.

    Returns:
        The number of flips (0 for fewer than two observed answers).
    """
    seen = present(values)
    return sum(a != b for a, b in itertools.pairwise(seen))


def path_length(values: Sequence[Answer | None], *, scale: ScaleKind | None = None) -> float:
    """Path length ``L_i = Σ_t |o_i(t) - o_i(t-1)|``; for categorical answers, the flips.

    Source: docs/metrics.md §2.

    Choice: missing answers are skipped and each observed answer is compared with the last
    observed one (2, None, 4 adds 2): the agent did move from 2 to 4, and dropping both
    pairs around the gap would hide that move.

    Args:
        values: Answers in step order.
        scale: ``"ordinal"`` or ``"categorical"``; inferred from the answers when None.

    Returns:
        ``L_i`` (0.0 for fewer than two observed answers); the number of flips (as float)
        for categorical answers.
    """
    if infer_scale(values, scale) == CATEGORICAL:
        return float(flips(values))
    arr = ordinal_array(values, "path length")
    arr = arr[~np.isnan(arr)]
    return float(np.abs(np.diff(arr)).sum()) if arr.size > 1 else 0.0


def persona_anchored_drift(
    values: Sequence[Answer | None],
    assigned: Answer | None,
    *,
    scale: ScaleKind | None = None,
) -> np.ndarray:
    """Distance of ``o_i(t)`` from the opinion the persona was assigned.

    Source: docs/metrics.md §2 (persona-anchored drift: "drift away from who I am", as distinct
    from change since t=0).

    Args:
        values: Answers in step order.
        assigned: The persona's assigned opinion on the topic; None when it has none.
        scale: ``"ordinal"`` or ``"categorical"``; inferred from answers and the assigned
            value when None.

    Returns:
        Float array: ``|o_i(t) - a|`` for ordinal answers, ``[o_i(t) != a]`` (0.0/1.0) for
        categorical ones; NaN where the answer is missing, everywhere if ``assigned`` is None.
    """
    kind = infer_scale([*values, assigned], scale)
    if assigned is None or is_missing(assigned):
        return np.full(len(values), math.nan)
    if kind == ORDINAL:
        return np.abs(ordinal_array(values, "persona-anchored drift") - float(assigned))
    return np.array([math.nan if is_missing(v) else float(v != assigned) for v in values])


def _value_column(frame: pd.DataFrame, value_col: str | None) -> str:
    if value_col is not None:
        if value_col not in frame.columns:
            raise ValueError(f"frame has no column {value_col!r}")
        return value_col
    for name in VALUE_COLUMNS:
        if name in frame.columns:
            return name
    raise ValueError(f"frame needs a value column, one of {VALUE_COLUMNS}")


def drift_table(
    frame: pd.DataFrame,
    *,
    step_col: str = "step",
    agent_col: str = "agent",
    topic_col: str = "topic",
    value_col: str | None = None,
    assigned: Mapping[Hashable, Mapping[Hashable, Answer | None]] | None = None,
    scale: ScaleKind | Mapping[Hashable, ScaleKind] | None = None,
) -> pd.DataFrame:
    """Per-agent-per-step drift measures over a tidy frame of answers.

    Source: docs/metrics.md §2.

    Each (topic, agent) series is sorted by step. Ordinal topics get the usual distance,
    categorical topics the discrete one (see the module docstring), so every column has one
    meaning per scale: ``drift`` (signed Δ, NaN for categorical), ``abs_drift`` (distance
    from the first step's answer), ``path_length`` (cumulative path up to and including the
    step; cumulative flips for categorical), ``flips`` (cumulative flips),
    ``anchored_distance`` (distance from the persona's assigned opinion). Rows whose answer
    is missing get NaN in every derived column and ``missing=True``.

    Args:
        frame: One row per (step, agent, topic) with the answer.
        step_col: Step column.
        agent_col: Agent column.
        topic_col: Topic column.
        value_col: Answer column; when None the first of :data:`VALUE_COLUMNS` present.
        assigned: ``{agent: {topic: assigned opinion}}`` (e.g. each persona's ``opinions``);
            agents or topics not in it get NaN anchored distance.
        scale: One kind for all topics, a ``{topic: kind}`` mapping, or None to infer per topic.

    Returns:
        Columns ``topic, agent, step, value, scale, missing, drift, abs_drift, path_length,
        flips, anchored_distance``, sorted by topic, agent, step.

    Raises:
        ValueError: A column is missing, a (step, agent, topic) appears twice, or a topic's
            answers mix numbers and strings.
    """
    vcol = _value_column(frame, value_col)
    for col in (step_col, agent_col, topic_col):
        if col not in frame.columns:
            raise ValueError(f"frame has no column {col!r}")
    if frame.duplicated([topic_col, agent_col, step_col]).any():
        raise ValueError("frame has more than one answer for some (step, agent, topic)")
    cols = [
        "topic", "agent", "step", "value", "scale", "missing", "drift", "abs_drift",
        "path_length", "flips", "anchored_distance",
    ]  # fmt: skip
    rows: list[dict[str, object]] = []
    for topic, by_topic in frame.groupby(topic_col, sort=True):
        kind = infer_scale(
            by_topic[vcol], scale.get(topic) if isinstance(scale, Mapping) else scale
        )
        for agent, series in by_topic.groupby(agent_col, sort=True):
            series = series.sort_values(step_col)
            anchor = (assigned or {}).get(agent, {}).get(topic)
            rows.extend(_series_rows(topic, agent, series, step_col, vcol, kind, anchor))
    return pd.DataFrame(rows, columns=cols)


def _distance(a: Answer, b: Answer, kind: ScaleKind) -> float:
    return abs(float(a) - float(b)) if kind == ORDINAL else float(a != b)


class DriftSeries:
    """The drift measures of one (topic, agent) series, one step at a time.

    Source: docs/metrics.md §2. Fed the answers in step order, :meth:`add` gives each step's row
    of :func:`drift_table` (which is built from it) without recomputing the earlier steps,
    so a tracker can extend a series as probes arrive.

    Args:
        topic: The topic (copied into each row).
        agent: The agent (copied into each row).
        kind: The topic's scale kind.
        anchor: The persona's assigned opinion on the topic (None: no anchored distance).
    """

    def __init__(
        self, topic: Hashable, agent: Hashable, kind: ScaleKind, anchor: Answer | None
    ) -> None:
        self.topic, self.agent, self.kind, self.anchor = topic, agent, kind, anchor
        self._started = False
        self._baseline: Answer | None = None
        self._path, self._flips, self._last = 0.0, 0, None

    def add(self, step: Hashable, v: Answer | None) -> dict[str, object]:
        """The row of the next step (later than every step added so far)."""
        if not self._started:
            self._started, self._baseline = True, v
        kind = self.kind
        row: dict[str, object] = {
            "topic": self.topic,
            "agent": self.agent,
            "step": step,
            "value": None if is_missing(v) else v,
            "scale": kind,
            "missing": is_missing(v),
        }
        if is_missing(v):
            return row | dict.fromkeys(
                ("drift", "abs_drift", "path_length", "flips", "anchored_distance"), math.nan
            )
        if self._last is not None:
            self._path += _distance(v, self._last, kind)
            self._flips += int(v != self._last)
        self._last = v  # type: ignore[assignment]
        baseline = self._baseline
        base_ok = not is_missing(baseline)
        row["drift"] = float(v) - float(baseline) if base_ok and kind == ORDINAL else math.nan  # type: ignore[arg-type]
        row["abs_drift"] = _distance(v, baseline, kind) if base_ok else math.nan  # type: ignore[arg-type]
        row["path_length"] = self._path
        row["flips"] = float(self._flips)
        row["anchored_distance"] = (
            math.nan if is_missing(self.anchor) else _distance(v, self.anchor, kind)  # type: ignore[arg-type]
        )
        return row


def _series_rows(
    topic: Hashable,
    agent: Hashable,
    series: pd.DataFrame,
    step_col: str,
    vcol: str,
    kind: ScaleKind,
    anchor: Answer | None,
) -> list[dict[str, object]]:
    acc = DriftSeries(topic, agent, kind, anchor)
    return [acc.add(step, v) for step, v in zip(series[step_col], series[vcol], strict=True)]
