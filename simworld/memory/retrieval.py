"""Memory retrieval: recency, importance, relevance (Park et al. 2023; docs/metrics.md §6)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScoreWeights:
    """``w_rec``, ``w_imp`` and ``w_rel`` of the retrieval score."""

    recency: float = 1.0
    importance: float = 1.0
    relevance: float = 1.0


def minmax(values: np.ndarray) -> np.ndarray:
    """Min–max normalise over the candidates: ``(v - min) / (max - min)``.

    A component that is equal for every candidate (or a single candidate) carries no
    information about which memory to prefer; it normalises to all zeros, so it adds
    nothing to any score.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def recency(hours_since_access: np.ndarray, decay: float) -> np.ndarray:
    """``γ^(hours since last access)``: 1 for a memory accessed now, smaller the older.

    Computed from simulated time, never from a memory's position in the stream (the
    released Generative Agents code ranks by position and ends up favouring the oldest
    memories; docs/metrics.md §6).
    """
    hours = np.maximum(np.asarray(hours_since_access, dtype=np.float64), 0.0)
    return np.power(decay, hours)


def retrieval_scores(
    *,
    hours_since_access: np.ndarray,
    importance: np.ndarray,
    relevance: np.ndarray,
    weights: ScoreWeights,
    decay: float,
) -> np.ndarray:
    """``w_rec·recency + w_imp·importance + w_rel·relevance``, each min–max normalised.

    Source: Park et al. 2023, "Generative Agents" (arXiv 2304.03442), as defined in
    docs/metrics.md §6. All arrays are over the same candidates.

    Args:
        hours_since_access: Simulated hours since each candidate was last accessed.
        importance: Importance ratings (1..10).
        relevance: Cosine similarity of each candidate to the query.
        weights: The three weights.
        decay: γ of the recency term.

    Returns:
        One score per candidate.
    """
    return (
        weights.recency * minmax(recency(hours_since_access, decay))
        + weights.importance * minmax(importance)
        + weights.relevance * minmax(relevance)
    )


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The ids of the ``k`` best scores, best first; equal scores go to the lower id.

    Exact and deterministic: candidates tied with the k-th score are all considered before
    the tie is broken by id.
    """
    scores = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(ids)
    if k <= 0 or ids.size == 0:
        return ids[:0]
    if k < ids.size:
        kth = scores[np.argpartition(-scores, k - 1)[:k]].min()
        keep = np.flatnonzero(scores >= kth)
        scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order]
