"""Shared helpers: missing answers, answer kinds, plurality, entropy, rates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from simworld.measures._common import (
    Rate,
    infer_scale,
    is_missing,
    plurality,
    rate_of,
    shannon_entropy,
)


def test_is_missing() -> None:
    for value in (None, float("nan"), np.nan, np.float32("nan"), pd.NA):
        assert is_missing(value)
    for value in (0, 0.0, "", "A", 3, np.int64(2), False):
        assert not is_missing(value)


def test_infer_scale() -> None:
    assert infer_scale([1, 2, None, 3.0]) == "ordinal"
    assert infer_scale(["A", None]) == "categorical"
    assert infer_scale([None]) == "categorical"  # nothing numeric to compute on
    assert infer_scale([1, 2], "categorical") == "categorical"
    with pytest.raises(ValueError, match="mix"):
        infer_scale([1, "A"])
    with pytest.raises(ValueError, match="must be numbers"):
        infer_scale(["A"], "ordinal")
    with pytest.raises(ValueError, match="must be numbers"):
        infer_scale([True], "ordinal")  # a bool is not a Likert answer


def test_plurality() -> None:
    assert plurality(["B", "A", "B"]) == "B"
    assert plurality([3, 3.0, 4]) == 3  # 3 and 3.0 are the same answer
    assert plurality(["A", "B"]) is None
    assert plurality([None, float("nan")]) is None


def test_shannon_entropy() -> None:
    # Three equally likely answers: log2 3 = 1.5849625
    assert shannon_entropy(["A", "B", "C"]) == pytest.approx(1.5849625, abs=1e-7)
    # Natural log: ln 2 = 0.6931472
    assert shannon_entropy([1, 2], base=math.e) == pytest.approx(0.6931472, abs=1e-7)
    assert shannon_entropy(["A"]) == 0.0


def test_rate() -> None:
    r = rate_of([True, False, None, True])
    assert (r.count, r.total, r.excluded) == (2, 3, 1)
    assert r.value == pytest.approx(2 / 3)
    assert math.isnan(Rate(0, 0, 5).value)
