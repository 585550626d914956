"""§3 conformity: local moves toward neighbours, and Asch-style CL / RL."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from simworld.measures.conformity import (
    asch_table,
    conformity_summary,
    conformity_table,
    local_conformity,
    neighbour_opinion,
)

NAN = float("nan")


def test_neighbour_opinion() -> None:
    assert neighbour_opinion([1, 2, 4]) == pytest.approx(7 / 3)  # (1+2+4)/3
    assert neighbour_opinion([1, None, 5, NAN]) == 3.0  # missing dropped: (1+5)/2
    assert neighbour_opinion(["A", "B", "B"]) == "B"
    assert neighbour_opinion(["A", "B"]) is None  # tie: no majority
    assert neighbour_opinion([]) is None  # no neighbours
    assert neighbour_opinion([None]) is None  # neighbours' calls all failed


def test_local_conformity_ordinal() -> None:
    assert local_conformity(2, 3, 4.0) is True  # up, neighbours above
    assert local_conformity(2, 1, 4.0) is False  # down, neighbours above
    assert local_conformity(4, 2, 2.5) is True  # down, neighbours below (overshoot still toward)
    # Only counted where both differences are non-zero.
    assert local_conformity(2, 2, 4.0) is None  # did not move
    assert local_conformity(3, 4, 3.0) is None  # already at the neighbours' mean
    assert local_conformity(None, 3, 4.0) is None
    assert local_conformity(2, NAN, 4.0) is None
    assert local_conformity(2, 3, None) is None


def test_local_conformity_categorical() -> None:
    assert local_conformity("A", "B", "B") is True  # moved to the majority
    assert local_conformity("A", "C", "B") is False  # moved, but elsewhere
    assert local_conformity("B", "A", "B") is None  # already held the majority answer
    assert local_conformity("A", "A", "B") is None  # did not move
    assert local_conformity("A", "B", None) is None  # neighbours tied
    # Numeric codes as categories.
    assert local_conformity(1, 3, 3, scale="categorical") is True
    with pytest.raises(ValueError, match="ordinal"):
        local_conformity("A", "B", 2.0, scale="ordinal")


def _path_frame() -> pd.DataFrame:
    # Path a - b - c. Values per step:
    #   a: 1, 2, 2     b: 3, 3, 5     c: 5, 4, None
    return pd.DataFrame(
        {
            "step": [0, 1, 2] * 3,
            "agent": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
            "topic": "t",
            "value": [1, 2, 2, 3, 3, 5, 5, 4, None],
        }
    )


def test_conformity_table_by_hand() -> None:
    graph = nx.path_graph(["a", "b", "c"])
    out = conformity_table(_path_frame(), graph).set_index(["agent", "step"])
    # a, t=0: o 1 -> 2, m = b(0) = 3: up toward 3 -> True, step toward +1.
    assert out.loc[("a", 0), "conformed"] and out.loc[("a", 0), "step_toward"] == 1.0
    # a, t=1: o 2 -> 2: did not move -> not counted.
    assert pd.isna(out.loc[("a", 1), "conformed"])
    # b, t=0: o 3 -> 3, m = (1+5)/2 = 3 -> not counted (both differences zero).
    assert out.loc[("b", 0), "neighbour_opinion"] == 3.0
    assert pd.isna(out.loc[("b", 0), "conformed"])
    # b, t=1: o 3 -> 5, m = (2+4)/2 = 3 -> pull 0 -> not counted.
    assert pd.isna(out.loc[("b", 1), "conformed"])
    # c, t=0: o 5 -> 4, m = b(0) = 3: down toward 3 -> True, step +1.
    assert out.loc[("c", 0), "conformed"] and out.loc[("c", 0), "step_toward"] == 1.0
    # c, t=1: next answer missing -> not counted.
    assert pd.isna(out.loc[("c", 1), "conformed"])
    assert out.loc[("c", 1), "n_neighbours"] == 1
    # No row for the last step (no t+1).
    assert 2 not in out.index.get_level_values("step")
    summary = conformity_summary(out.reset_index())
    # 2 counted events, both conforming; 4 not counted.
    assert (summary.rate.count, summary.rate.total, summary.rate.excluded) == (2, 2, 4)
    assert summary.rate.value == 1.0
    assert summary.mean_step_toward == 1.0
    assert summary.mean_conforming_step == 1.0


def test_conformity_summary_with_move_away() -> None:
    # a: 3 -> 1 while its only neighbour b says 5: moved 2 away -> step_toward -2.
    # b: 5 -> 4 while a says 3: moved 1 toward -> +1.
    frame = pd.DataFrame(
        {"step": [0, 1, 0, 1], "agent": ["a", "a", "b", "b"], "topic": "t", "value": [3, 1, 5, 4]}
    )
    out = conformity_table(frame, {"a": ["b"], "b": ["a"]})
    np.testing.assert_array_equal(out["step_toward"], [-2.0, 1.0])
    s = conformity_summary(out)
    assert s.rate.value == 0.5  # 1 of 2
    assert s.mean_step_toward == pytest.approx(-0.5)  # (-2 + 1) / 2
    assert s.mean_conforming_step == 1.0  # only b conformed, |4-5| = 1


def test_conformity_table_stated_frame_and_isolated_agent() -> None:
    own = pd.DataFrame(
        {"step": [0, 1, 0, 1], "agent": ["a", "a", "z", "z"], "topic": "t", "value": [2, 3, 2, 4]}
    )
    # b only speaks; a listens to b's statement 5 at t=0; z has no neighbours.
    stated = pd.DataFrame({"step": [0], "agent": ["b"], "topic": "t", "value": [5]})
    out = conformity_table(own, {"a": ["b"], "z": []}, stated=stated).set_index("agent")
    assert out.loc["a", "neighbour_opinion"] == 5.0 and out.loc["a", "conformed"]
    assert out.loc["z", "n_neighbours"] == 0 and pd.isna(out.loc["z", "conformed"])


def test_conformity_table_categorical() -> None:
    # a: A -> B, neighbours b, c say B, B -> moved to the majority.
    frame = pd.DataFrame(
        {
            "step": [0, 1, 0, 1, 0, 1],
            "agent": ["a", "a", "b", "b", "c", "c"],
            "topic": "q",
            "value": ["A", "B", "B", "B", "B", "C"],
        }
    )
    out = conformity_table(frame, {"a": ["b", "c"], "b": [], "c": ["a"]}).set_index("agent")
    assert out.loc["a", "neighbour_opinion"] == "B" and out.loc["a", "conformed"]
    assert math.isnan(out.loc["a", "step_toward"])  # no step size for letters
    # c: B -> C while a said A: moved, but not to A -> False.
    assert bool(out.loc["c", "conformed"]) is False  # bool(<NA>) would raise
    assert conformity_summary(out.reset_index()).rate.value == 0.5


def test_conformity_table_errors() -> None:
    with pytest.raises(ValueError, match="directed"):
        conformity_table(_path_frame(), nx.DiGraph([("a", "b")]))
    with pytest.raises(ValueError, match="lacks"):
        conformity_table(_path_frame().drop(columns="topic"), {})
    with pytest.raises(ValueError, match="more than one"):
        conformity_table(pd.concat([_path_frame(), _path_frame()]), {})


def test_asch_table_by_hand() -> None:
    frame = pd.DataFrame(
        {
            "p": [1, 1, 1, 1, 3, 3, 3],
            "answer": ["C", "C", "O", "X", "C", None, "O"],
            "peer_answer": ["C"] * 7,
            "own_answer": ["O", "O", "O", "O", "O", "O", "C"],
        }
    )
    out = asch_table(frame).set_index("p")
    # p = 1: answers C C O X vs c = C, own O -> CL = 2/4, RL = 1/4, n 4.
    assert (out.loc[1, "CL"], out.loc[1, "RL"], out.loc[1, "n"]) == (0.5, 0.25, 4)
    # p = 3: one missing answer (excluded); trial 1: C (c; own O) -> CL 1, RL 0;
    #   last trial: peers agree with own (C == C), answer O -> CL 0, RL 0.
    #   CL = 1/2, RL = 0/2, n 2, n_missing 1, n_agreeing 1.
    r = out.loc[3]
    assert (r["CL"], r["RL"], r["n"], r["n_missing"], r["n_agreeing"]) == (0.5, 0.0, 2, 1, 1)
    # Dropping agreeing trials leaves only trial 1 at p = 3: CL 1, RL 0.
    dropped = asch_table(frame, drop_agreeing=True).set_index("p")
    assert (dropped.loc[3, "CL"], dropped.loc[3, "RL"], dropped.loc[3, "n"]) == (1.0, 0.0, 1)
    assert list(out.index) == [1, 3]


def test_asch_table_all_missing_and_ordinal() -> None:
    frame = pd.DataFrame(
        {"p": [2, 2, 4], "answer": [None, NAN, 5], "peer_answer": [5, 5, 5], "own_answer": 2}
    )
    out = asch_table(frame).set_index("p")
    assert math.isnan(out.loc[2, "CL"]) and out.loc[2, "n"] == 0 and out.loc[2, "n_missing"] == 2
    assert (out.loc[4, "CL"], out.loc[4, "RL"]) == (1.0, 0.0)
    with pytest.raises(ValueError, match="lacks"):
        asch_table(frame.drop(columns="own_answer"))
