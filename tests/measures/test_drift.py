"""§2 opinion drift: Δ, |Δ|, path length / flips, persona-anchored drift, tidy table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from simworld.measures.drift import (
    absolute_drift,
    drift,
    drift_table,
    flips,
    path_length,
    persona_anchored_drift,
)

NAN = float("nan")


def test_drift_and_absolute_drift() -> None:
    # o = 2, 3, 5, 1 -> Δ = 0, 3-2, 5-2, 1-2 = 0, 1, 3, -1
    np.testing.assert_array_equal(drift([2, 3, 5, 1]), [0.0, 1.0, 3.0, -1.0])
    np.testing.assert_array_equal(absolute_drift([2, 3, 5, 1]), [0.0, 1.0, 3.0, 1.0])
    assert drift([]).size == 0


def test_drift_missing_answers() -> None:
    # Missing at t=1 -> NaN there only: 2, ?, 4 -> 0, NaN, 2.
    np.testing.assert_array_equal(drift([2, None, 4]), [0.0, NAN, 2.0])
    # Missing baseline -> undefined everywhere (t=0 is not moved to a later step).
    assert np.isnan(drift([None, 3, 4])).all()


def test_drift_refuses_categorical() -> None:
    with pytest.raises(ValueError, match="ordinal"):
        drift(["A", "B"])


def test_path_length_ordinal() -> None:
    # |3-2| + |5-3| + |1-5| = 1 + 2 + 4 = 7
    assert path_length([2, 3, 5, 1]) == 7.0
    # Gap bridged to the last observed answer: 2, ?, 4 -> |4-2| = 2
    assert path_length([2, None, 4]) == 2.0
    assert path_length([3]) == 0.0
    assert path_length([]) == 0.0
    assert path_length([None, None]) == 0.0


def test_flips_categorical() -> None:
    assert flips(["A", "B", "B", "A"]) == 2  # A->B, B->A
    assert flips(["A", None, "A"]) == 0  # a failed call is not a flip
    assert flips(["A", NAN, "B"]) == 1
    assert flips([]) == 0
    # Path length of categorical answers is the number of flips.
    assert path_length(["A", "B", "B", "A"]) == 2.0
    # Numeric codes treated as categories on request: 1->2 is one flip, not distance 1+...
    assert path_length([1, 3, 3], scale="categorical") == 1.0
    assert path_length([1, 3, 3]) == 2.0  # ordinal: |3-1|


def test_mixed_answers_need_explicit_scale() -> None:
    with pytest.raises(ValueError, match="mix"):
        path_length([1, "A"])
    with pytest.raises(ValueError, match="scale must be"):
        path_length([1, 2], scale="nominal")  # type: ignore[arg-type]


def test_persona_anchored_drift() -> None:
    # Assigned 4: |1-4|, |3-4|, |5-4| = 3, 1, 1
    np.testing.assert_array_equal(persona_anchored_drift([1, 3, 5], 4), [3.0, 1.0, 1.0])
    # Categorical: mismatch 1, match 0; missing answer NaN.
    np.testing.assert_array_equal(persona_anchored_drift(["A", "B", None], "B"), [1.0, 0.0, NAN])
    # No assigned opinion: undefined everywhere.
    assert np.isnan(persona_anchored_drift([1, 2], None)).all()


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            # Steps given out of order on purpose: the table sorts them.
            "step": [2, 0, 1, 3, 0, 1, 2, 0, 1],
            "agent": ["a", "a", "a", "a", "b", "b", "b", "a", "a"],
            "topic": ["t"] * 4 + ["t"] * 3 + ["c", "c"],
            "value": [4, 2, None, 1, 3, 3, 3, "A", "B"],
        }
    )


def test_drift_table_ordinal_rows() -> None:
    out = drift_table(_frame(), assigned={"a": {"t": 3}, "b": {}})
    a = out[(out["topic"] == "t") & (out["agent"] == "a")].reset_index(drop=True)
    # a on t, sorted: steps 0..3 with o = 2, ?, 4, 1.
    assert list(a["step"]) == [0, 1, 2, 3]
    assert list(a["missing"]) == [False, True, False, False]
    # Δ: 0, NaN, 4-2 = 2, 1-2 = -1
    np.testing.assert_array_equal(a["drift"], [0.0, NAN, 2.0, -1.0])
    np.testing.assert_array_equal(a["abs_drift"], [0.0, NAN, 2.0, 1.0])
    # Cumulative path: 0, NaN, |4-2| = 2, 2 + |1-4| = 5
    np.testing.assert_array_equal(a["path_length"], [0.0, NAN, 2.0, 5.0])
    np.testing.assert_array_equal(a["flips"], [0.0, NAN, 1.0, 2.0])
    # Anchored at 3: |2-3|, NaN, |4-3|, |1-3| = 1, NaN, 1, 2
    np.testing.assert_array_equal(a["anchored_distance"], [1.0, NAN, 1.0, 2.0])
    assert set(a["scale"]) == {"ordinal"}
    b = out[(out["topic"] == "t") & (out["agent"] == "b")]
    # b never moves: all zeros; no assigned opinion -> NaN anchored distance.
    assert (b["drift"] == 0).all() and (b["path_length"] == 0).all()
    assert b["anchored_distance"].isna().all()


def test_drift_table_categorical_uses_discrete_distance() -> None:
    out = drift_table(_frame(), assigned={"a": {"c": "B"}})
    c = out[out["topic"] == "c"].reset_index(drop=True)
    assert set(c["scale"]) == {"categorical"}
    assert c["drift"].isna().all()  # no signed drift for letters
    np.testing.assert_array_equal(c["abs_drift"], [0.0, 1.0])  # A vs A, B vs A
    np.testing.assert_array_equal(c["path_length"], [0.0, 1.0])  # one flip
    np.testing.assert_array_equal(c["anchored_distance"], [1.0, 0.0])  # A != B, B == B


def test_drift_table_answer_column_and_errors() -> None:
    frame = _frame().rename(columns={"value": "answer"})
    assert len(drift_table(frame)) == len(frame)
    with pytest.raises(ValueError, match="value column"):
        drift_table(frame.drop(columns="answer"))
    with pytest.raises(ValueError, match="more than one"):
        drift_table(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(ValueError, match="no column"):
        drift_table(frame, topic_col="issue")


def test_drift_table_missing_baseline() -> None:
    frame = pd.DataFrame({"step": [0, 1, 2], "agent": "a", "topic": "t", "value": [None, 2.0, 5.0]})
    out = drift_table(frame)
    # No t=0 answer: drift undefined, but the path over observed answers is |5-2| = 3.
    assert out["drift"].isna().all() and out["abs_drift"].isna().all()
    assert out["path_length"].iloc[2] == 3.0
    assert math.isnan(out["path_length"].iloc[0])
