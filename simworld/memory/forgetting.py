"""MemoryBank retention ``R = exp(-Δt / (c·S))`` (Zhong et al. 2023; docs/metrics.md §6)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from simworld.support.hashing import derive_seed

ForgettingMode = Literal["off", "threshold", "stochastic"]


def retention(
    hours_since_recall: np.ndarray, strength: np.ndarray, time_scale_hours: float
) -> np.ndarray:
    """MemoryBank retention ``R = exp(-Δt / (c·S))``.

    Source: Zhong et al. 2023, "MemoryBank" (arXiv 2305.10250), as defined in docs/metrics.md
    §6: Δt is the time since the memory was last recalled, S its strength (1 when stored,
    +1 per recall) and c a time scale. A stronger memory fades more slowly. (The released
    MemoryBank code computes ``exp(-t/5*S)``, which makes strong memories fade faster; not
    copied.)

    Args:
        hours_since_recall: Δt in simulated hours.
        strength: S (≥ 1).
        time_scale_hours: c in simulated hours.

    Returns:
        R in (0, 1] per memory.
    """
    dt = np.maximum(np.asarray(hours_since_recall, dtype=np.float64), 0.0)
    s = np.asarray(strength, dtype=np.float64)
    return np.exp(-dt / (time_scale_hours * s))


def forgetting_seed(seed: int, agent: str, step: int) -> int:
    """The seed of one agent's stochastic forgetting pass at one step (never global random)."""
    return derive_seed({"seed": seed, "agent": agent, "step": step, "use": "forget"}, bits=64)


def forget_mask(
    ret: np.ndarray,
    *,
    mode: ForgettingMode,
    threshold: float,
    seed: int,
) -> np.ndarray:
    """Which memories are forgotten now, given their retention (in memory-id order).

    ``threshold``: forgotten when ``R < threshold``. ``stochastic``: forgotten when a
    uniform draw from a generator seeded with ``seed`` exceeds ``R`` (MemoryBank's rule),
    one draw per memory per pass, so a memory that is checked at every step survives with
    the product of its retentions. ``off``: nothing is forgotten.
    """
    ret = np.asarray(ret, dtype=np.float64)
    if mode == "off" or ret.size == 0:
        return np.zeros(ret.shape, dtype=bool)
    if mode == "threshold":
        return ret < threshold
    draws = np.random.default_rng(seed).random(ret.size)
    return draws > ret
