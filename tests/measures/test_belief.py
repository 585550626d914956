"""Belief states S / B / R on a claim (simworld.measures.belief)."""

from __future__ import annotations

import math

import pandas as pd

from simworld.measures import belief_curve, belief_states, believes, next_state


def test_believes_uses_the_threshold_and_keeps_missing_unknown():
    assert believes(4.0, 4) is True
    assert believes(3.0, 4) is False
    assert believes(None, 4) is None
    assert believes(float("nan"), 4) is None


def test_next_state():
    assert next_state(True, False) == "B"
    assert next_state(True, True) == "B"
    assert next_state(False, False) == "S"
    assert next_state(False, True) == "R"
    assert next_state(None, True) is None


def test_belief_states_follow_each_agent_over_time():
    frame = pd.DataFrame(
        {
            "step": [1, 0, 0, 1, 2, 2, 3],
            "agent": ["a", "a", "b", "b", "a", "b", "a"],
            "value": [2.0, 5.0, 1.0, None, 4.0, 3.0, 1.0],
        }
    )
    states = belief_states(frame, believe_at=4)
    got = {(r.step, r.agent): None if pd.isna(r.state) else r.state for r in states.itertuples()}
    # a: believes, recovers, believes again, recovers; b: never believes (unknown at step 1)
    assert got == {
        (0, "a"): "B",
        (0, "b"): "S",
        (1, "a"): "R",
        (1, "b"): None,
        (2, "a"): "B",
        (2, "b"): "S",
        (3, "a"): "R",
    }
    assert list(states["step"]) == sorted(states["step"])


def test_belief_curve_counts_and_shares():
    states = pd.DataFrame(
        {
            "step": [0, 0, 0, 1, 1, 1],
            "agent": ["a", "b", "c", "a", "b", "c"],
            "state": ["B", "S", "S", "R", None, "B"],
        }
    )
    curve = belief_curve(states).set_index("step")
    assert curve.loc[0, ["n", "n_unknown", "S", "B", "R"]].tolist() == [3, 0, 2, 1, 0]
    assert curve.loc[1, ["n", "n_unknown", "S", "B", "R"]].tolist() == [2, 1, 0, 1, 1]
    assert math.isclose(curve.loc[1, "share_B"], 0.5)
    empty = belief_curve(pd.DataFrame({"step": [2], "agent": ["a"], "state": [None]}))
    assert math.isnan(empty.loc[0, "share_S"])
