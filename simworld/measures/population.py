"""Population measures per step: bias, diversity, bimodality, polarization, consensus.

Source: docs/metrics.md §5; Chuang et al. 2023, "Simulating Opinion Dynamics with Networks of
LLM-based Agents", arXiv 2311.09618, following Lorenz, Neumann & Schröder 2021 (bias and
diversity); Esteban & Ray 1994 (polarization); Pfister et al. 2013 / SAS (bimodality
coefficient).

Ordinal-only measures (bias, diversity, variance, bimodality, polarization) raise
ValueError on categorical answers (letters have no mean or distance). Consensus share,
entropy and time to consensus work for both kinds.

Missing answers (None/NaN from failed calls) are dropped before any computation: the
measures describe the agents that answered, and :func:`population_table` reports how many
did not (``n_missing``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from simworld.measures._common import (
    CATEGORICAL,
    Answer,
    ScaleKind,
    infer_scale,
    is_missing,
    ordinal_array,
    plurality,
    present,
    shannon_entropy,
)

__all__ = [
    "BIMODALITY_THRESHOLD",
    "DEFAULT_CONSENSUS_THRESHOLD",
    "ER_ALPHA",
    "ER_K",
    "bias",
    "bimodality_coefficient",
    "centre_scale",
    "consensus_share",
    "diversity",
    "esteban_ray",
    "modal_opinion",
    "opinion_entropy",
    "population_row",
    "population_table",
    "time_to_consensus",
    "variance",
]

ER_ALPHA = 1.6
"""Default Esteban–Ray α: the largest value the Esteban & Ray (1994) axioms allow (α ≤ ~1.6)."""
ER_K = 1.0
"""Default Esteban–Ray scale constant K (a pure normalisation)."""
DEFAULT_CONSENSUS_THRESHOLD = 1.0
"""Default share of the modal opinion that counts as consensus: unanimity."""
BIMODALITY_THRESHOLD = 5 / 9
"""BC above this (the value of a uniform distribution) suggests bimodality."""

Range = tuple[float, float]


def _present_ordinal(values: Iterable[Answer | None], what: str) -> np.ndarray:
    arr = ordinal_array(values, what)
    return arr[~np.isnan(arr)]


def centre_scale(values: Iterable[Answer | None], *, low: float, high: float) -> np.ndarray:
    """Shift answers so a symmetric scale is centred at 0 (1..5 → -2..+2).

    Source: docs/metrics.md §5 (bias on a scale centred at 0 when the scale is symmetric).

    Args:
        values: Ordinal answers; missing ones stay NaN.
        low: Lowest scale value.
        high: Highest scale value.

    Returns:
        ``value - (low + high) / 2`` as floats.
    """
    if high <= low:
        raise ValueError(f"scale range must have low < high, got ({low}, {high})")
    return ordinal_array(values, "centring") - (low + high) / 2


def bias(values: Iterable[Answer | None], *, centre_on: Range | None = None) -> float:
    """Bias ``B = mean(o)``.

    Source: docs/metrics.md §5; Chuang et al. 2023, arXiv 2311.09618 (after Lorenz et al. 2021).

    Args:
        values: Ordinal answers; missing ones are dropped.
        centre_on: ``(low, high)`` of a symmetric scale to centre at 0 first, e.g. ``(1, 5)``.

    Returns:
        The mean; NaN when no answer is present.
    """
    arr = _present_ordinal(values, "bias")
    if centre_on is not None:
        arr = centre_scale(arr, low=centre_on[0], high=centre_on[1])
    return float(arr.mean()) if arr.size else math.nan


def diversity(values: Iterable[Answer | None]) -> float:
    """Diversity ``D = std(o, ddof=1)`` (shift-invariant, so centring does not change it).

    Source: docs/metrics.md §5; Chuang et al. 2023, arXiv 2311.09618 (after Lorenz et al. 2021).

    Returns:
        The sample standard deviation; NaN with fewer than 2 present answers.
    """
    arr = _present_ordinal(values, "diversity")
    return float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def variance(values: Iterable[Answer | None]) -> float:
    """Variance ``var(o, ddof=1)``, so that ``variance == diversity²``.

    Source: docs/metrics.md §5. Choice: ddof=1 to match the diversity's estimator.

    Returns:
        The sample variance; NaN with fewer than 2 present answers.
    """
    arr = _present_ordinal(values, "variance")
    return float(arr.var(ddof=1)) if arr.size > 1 else math.nan


def bimodality_coefficient(values: Iterable[Answer | None]) -> float:
    """Bimodality coefficient ``BC = (g² + 1) / (k + 3(n-1)² / ((n-2)(n-3)))``.

    Source: docs/metrics.md §5; Chuang et al. 2023, arXiv 2311.09618; Pfister et al. 2013.

    Choice of estimators: the small-sample term ``3(n-1)²/((n-2)(n-3))`` goes with the
    bias-corrected sample statistics, so ``g = G1 = sqrt(n(n-1))/(n-2) · m3/m2^{3/2}`` and
    ``k = G2 = ((n+1)(m4/m2² - 3) + 6)(n-1)/((n-2)(n-3))`` with central moments
    ``m_r = mean((o - mean(o))^r)`` (the same as ``scipy.stats.skew(bias=False)`` and
    ``scipy.stats.kurtosis(bias=False)``, computed here with numpy). BC > 5/9 suggests
    bimodality (:data:`BIMODALITY_THRESHOLD`).

    Returns:
        BC; NaN when n ≤ 3 present answers (the correction divides by zero) or all answers
        are equal (skewness undefined).
    """
    arr = _present_ordinal(values, "bimodality coefficient")
    n = arr.size
    if n <= 3:
        return math.nan
    dev = arr - arr.mean()
    m2, m3, m4 = (float(np.mean(dev**r)) for r in (2, 3, 4))
    if m2 == 0:
        return math.nan
    g = math.sqrt(n * (n - 1)) / (n - 2) * m3 / m2**1.5
    k = ((n + 1) * (m4 / m2**2 - 3) + 6) * (n - 1) / ((n - 2) * (n - 3))
    return (g**2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def esteban_ray(
    values: Iterable[Answer | None], *, alpha: float = ER_ALPHA, k: float = ER_K
) -> float:
    """Esteban–Ray polarization ``P = K Σ_i Σ_j π_i^(1+α) π_j |y_i - y_j|``.

    Source: docs/metrics.md §5; Esteban & Ray 1994, "On the Measurement of Polarization".

    Choice: the opinion groups are the distinct answers ``y_i``, with ``π_i`` their share
    among present answers (so Σ π_i = 1). Defaults: α = :data:`ER_ALPHA` (1.6), K =
    :data:`ER_K` (1). Ordinal only (needs ``|y_i - y_j|``).

    Args:
        values: Ordinal answers; missing ones are dropped.
        alpha: Polarization sensitivity α ≥ 0 (α = 0, K = 1 give the mean absolute difference).
        k: Scale constant K > 0.

    Returns:
        P; 0.0 under consensus; NaN when no answer is present.
    """
    if alpha < 0 or k <= 0:
        raise ValueError(f"need alpha >= 0 and k > 0, got alpha={alpha}, k={k}")
    arr = _present_ordinal(values, "Esteban-Ray polarization")
    if arr.size == 0:
        return math.nan
    y, counts = np.unique(arr, return_counts=True)
    pi = counts / counts.sum()
    dist = np.abs(y[:, None] - y[None, :])
    return float(k * (pi[:, None] ** (1 + alpha) * pi[None, :] * dist).sum())


def modal_opinion(values: Iterable[Answer | None]) -> Answer | None:
    """The modal answer (either kind); None when no answer is present or the top is tied.

    Source: docs/metrics.md §5 (consensus: the modal opinion). Ties are left undefined, as for
    the group answer G of §1, rather than broken by an arbitrary order.
    """
    return plurality(values)


def consensus_share(values: Iterable[Answer | None]) -> float:
    """Consensus: share of present answers that hold the modal opinion (either kind).

    Source: docs/metrics.md §5. Ties do not matter (the share is the same for each mode).

    Returns:
        The share in (0, 1]; NaN when no answer is present.
    """
    counts = Counter(present(values))
    total = sum(counts.values())
    return max(counts.values()) / total if total else math.nan


def opinion_entropy(values: Iterable[Answer | None], *, base: float = 2.0) -> float:
    """Shannon entropy of the opinion distribution (either kind), log2 by default.

    Source: docs/metrics.md §5. Missing answers are dropped, not a category of their own.

    Returns:
        The entropy; 0.0 under consensus; NaN when no answer is present.
    """
    return shannon_entropy(values, base=base)


def time_to_consensus(
    shares: Mapping[Any, float] | pd.Series | Sequence[float],
    *,
    threshold: float = DEFAULT_CONSENSUS_THRESHOLD,
) -> Hashable | None:
    """Time to consensus: the first step t whose consensus share is ≥ ``threshold``.

    Source: docs/metrics.md §5.

    Args:
        shares: Consensus share per step: a mapping or Series indexed by step (sorted by
            step here), or a sequence indexed 0, 1, … . NaN shares (nobody answered) never
            count as consensus.
        threshold: Share in (0, 1]; default :data:`DEFAULT_CONSENSUS_THRESHOLD` (unanimity).

    Returns:
        The first such step, or None if consensus is never reached.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    items: list[tuple[Any, Any]]
    if isinstance(shares, pd.Series):
        items = list(shares.sort_index().items())
    elif isinstance(shares, Mapping):
        items = sorted(shares.items(), key=lambda kv: kv[0])
    else:
        items = list(enumerate(shares))
    for step, share in items:
        if not is_missing(share) and float(share) >= threshold:
            return step.item() if isinstance(step, np.generic) else step
    return None


def population_table(
    frame: pd.DataFrame,
    *,
    step_col: str = "step",
    topic_col: str = "topic",
    value_col: str = "value",
    centre_on: Range | Mapping[Hashable, Range] | None = None,
    scale: ScaleKind | Mapping[Hashable, ScaleKind] | None = None,
    alpha: float = ER_ALPHA,
    k: float = ER_K,
) -> pd.DataFrame:
    """Every §5 measure per (topic, step) over a tidy frame of answers.

    Source: docs/metrics.md §5; Chuang et al. 2023, arXiv 2311.09618.

    Args:
        frame: One row per (step, agent, topic) with the answer.
        step_col: Step column.
        topic_col: Topic column.
        value_col: Answer column.
        centre_on: ``(low, high)`` (or ``{topic: (low, high)}``) to centre bias at 0.
        scale: One kind for all topics, ``{topic: kind}``, or None to infer per topic.
        alpha: Esteban–Ray α.
        k: Esteban–Ray K.

    Returns:
        Columns ``topic, step, scale, n, n_missing, bias, diversity, variance, bimodality,
        polarization, consensus_share, modal_opinion, entropy``, sorted by topic and step.
        Ordinal-only columns are NaN for categorical topics.
    """
    missing_cols = {step_col, topic_col, value_col} - set(frame.columns)
    if missing_cols:
        raise ValueError(f"frame lacks columns {sorted(missing_cols)}")
    rows: list[dict[str, object]] = []
    for topic, by_topic in frame.groupby(topic_col, sort=True):
        kind = infer_scale(
            by_topic[value_col], scale.get(topic) if isinstance(scale, Mapping) else scale
        )
        rng = centre_on.get(topic) if isinstance(centre_on, Mapping) else centre_on
        for step, at in by_topic.groupby(step_col, sort=True):
            rows.append(
                population_row(
                    topic, step, list(at[value_col]), kind=kind, centre_on=rng, alpha=alpha, k=k
                )
            )
    cols = [
        "topic", "step", "scale", "n", "n_missing", "bias", "diversity", "variance",
        "bimodality", "polarization", "consensus_share", "modal_opinion", "entropy",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def population_row(
    topic: Hashable,
    step: Hashable,
    vals: Sequence[Answer | None],
    *,
    kind: ScaleKind,
    centre_on: Range | None = None,
    alpha: float = ER_ALPHA,
    k: float = ER_K,
) -> dict[str, object]:
    """Every §5 measure of one topic at one step: one row of :func:`population_table`.

    Source: docs/metrics.md §5.

    Args:
        topic: The topic (copied into the row).
        step: The step (copied into the row).
        vals: The answers given at that step, missing ones included.
        kind: The topic's scale kind (ordinal-only measures are NaN for categorical ones).
        centre_on: ``(low, high)`` to centre bias at 0.
        alpha: Esteban–Ray α.
        k: Esteban–Ray K.
    """
    row: dict[str, object] = {
        "topic": topic,
        "step": step,
        "scale": kind,
        "n": len(present(vals)),
        "n_missing": len(vals) - len(present(vals)),
        "bias": math.nan,
        "diversity": math.nan,
        "variance": math.nan,
        "bimodality": math.nan,
        "polarization": math.nan,
    }
    if kind != CATEGORICAL:
        row |= {
            "bias": bias(vals, centre_on=centre_on),
            "diversity": diversity(vals),
            "variance": variance(vals),
            "bimodality": bimodality_coefficient(vals),
            "polarization": esteban_ray(vals, alpha=alpha, k=k),
        }
    return row | {
        "consensus_share": consensus_share(vals),
        "modal_opinion": modal_opinion(vals),
        "entropy": opinion_entropy(vals),
    }
