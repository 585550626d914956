"""Belief states on a (false) claim over time: susceptible, believing, recovered.

Source: the misinformation-spread simulations of Liu et al. 2024, "From Skepticism to
Acceptance: Simulating the Attitude Dynamics Toward Fake News" (FPS, arXiv 2403.09498), which
follow the share of agents believing a fake story day by day, with the compartments of
epidemic (SIR-style) rumour models (docs/metrics.md §9). The choices made:

- an agent *believes* at a probe when its answer is at least ``believe_at`` (ordinal scales
  only; a failed probe is unknown, not disbelief);
- ``S`` (susceptible): does not believe and has never believed at an earlier probe;
- ``B`` (believing): believes now;
- ``R`` (recovered): does not believe now but believed at an earlier probe (a recovered agent
  that believes again is ``B`` again);
- an unknown answer gives no state and leaves the agent's history unchanged.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Literal

import pandas as pd

from simworld.measures._common import is_missing

BeliefState = Literal["S", "B", "R"]
STATES: tuple[BeliefState, ...] = ("S", "B", "R")


def believes(value: object, believe_at: float) -> bool | None:
    """Whether an answer counts as believing (None: the answer is missing)."""
    if is_missing(value):
        return None
    return float(value) >= believe_at  # type: ignore[arg-type]


def next_state(believing: bool | None, ever_believed: bool) -> BeliefState | None:
    """The state at a probe, given the answer and whether the agent believed before.

    Args:
        believing: :func:`believes` of the answer at this probe.
        ever_believed: Whether the agent believed at any earlier probe.
    """
    if believing is None:
        return None
    if believing:
        return "B"
    return "R" if ever_believed else "S"


def belief_states(
    frame: pd.DataFrame,
    *,
    believe_at: float,
    step_col: str = "step",
    agent_col: str = "agent",
    value_col: str = "value",
) -> pd.DataFrame:
    """Each agent's belief state at each probe step (see the module docstring).

    Args:
        frame: Probes of one claim, one row per (step, agent); missing values allowed.
        believe_at: The lowest answer counted as believing.
        step_col: Step column.
        agent_col: Agent column.
        value_col: Answer column (Likert values).

    Returns:
        ``step, agent, value, believing, state`` sorted by step then agent.
    """
    ordered = frame.sort_values([step_col, agent_col], kind="stable")
    ever: dict[Hashable, bool] = {}
    rows = []
    for step, agent, value in ordered[[step_col, agent_col, value_col]].itertuples(index=False):
        flag = believes(value, believe_at)
        rows.append(
            {
                "step": step,
                "agent": agent,
                "value": None if is_missing(value) else float(value),
                "believing": flag,
                "state": next_state(flag, ever.get(agent, False)),
            }
        )
        if flag:
            ever[agent] = True
    return pd.DataFrame(rows, columns=["step", "agent", "value", "believing", "state"])


def belief_curve(states: pd.DataFrame) -> pd.DataFrame:
    """Counts and shares of S, B and R per step, over agents with a known state.

    Args:
        states: The output of :func:`belief_states` (or the ``belief`` tracker frame).

    Returns:
        ``step, n, n_unknown, S, B, R, share_S, share_B, share_R`` (shares NaN when n = 0).
    """
    rows = []
    for step, group in states.groupby("step", sort=True):
        known = group["state"].dropna()
        n = len(known)
        row: dict[str, object] = {"step": step, "n": n, "n_unknown": len(group) - n}
        for s in STATES:
            count = int((known == s).sum())
            row[s] = count
            row[f"share_{s}"] = count / n if n else float("nan")
        rows.append(row)
    columns = ["step", "n", "n_unknown", *STATES, *(f"share_{s}" for s in STATES)]
    return pd.DataFrame(rows, columns=columns)


__all__ = ["STATES", "BeliefState", "belief_curve", "belief_states", "believes", "next_state"]
