"""§5 population measures: bias, diversity, BC, Esteban–Ray, consensus, per-step table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from simworld.measures.population import (
    BIMODALITY_THRESHOLD,
    bias,
    bimodality_coefficient,
    centre_scale,
    consensus_share,
    diversity,
    esteban_ray,
    modal_opinion,
    opinion_entropy,
    population_table,
    time_to_consensus,
    variance,
)

NAN = float("nan")


def test_bias_and_centring() -> None:
    assert bias([1, 2, 3, 4, 5]) == 3.0  # 15 / 5
    assert bias([1, 2, 3, 4, 5], centre_on=(1, 5)) == 0.0  # -2..+2 around midpoint 3
    assert bias([4, 5], centre_on=(1, 5)) == 1.5  # (1 + 2) / 2
    assert bias([1, None, 5, NAN]) == 3.0  # missing dropped, not counted as 0
    assert math.isnan(bias([None]))
    np.testing.assert_array_equal(centre_scale([1, 3, 5, None], low=1, high=5), [-2, 0, 2, NAN])
    with pytest.raises(ValueError, match="low < high"):
        centre_scale([1], low=5, high=1)


def test_ordinal_only_measures_refuse_letters() -> None:
    for fn in (bias, diversity, variance, bimodality_coefficient, esteban_ray):
        with pytest.raises(ValueError, match="ordinal"):
            fn(["A", "B", "C", "D"])


def test_diversity_and_variance() -> None:
    # 1, 3, 5: mean 3, squared deviations 4 + 0 + 4 = 8, / (n-1) = 4 -> var 4, std 2
    assert diversity([1, 3, 5]) == 2.0
    assert variance([1, 3, 5]) == 4.0
    assert diversity([1, 3, 5, None]) == 2.0
    assert math.isnan(diversity([3])) and math.isnan(variance([3, None]))


def test_bimodality_coefficient_by_hand() -> None:
    # 0 0 0 0 5: mean 1, deviations -1 x4, 4; m2 = (4 + 16)/5 = 4, m3 = (-4 + 64)/5 = 12,
    # m4 = (4 + 256)/5 = 52.  g1 = 12 / 4^1.5 = 1.5; G1 = sqrt(5*4)/3 * 1.5 = sqrt(5), G1^2 = 5.
    # g2 = 52/16 - 3 = 0.25; G2 = ((6)(0.25) + 6)(4)/((3)(2)) = 7.5*4/6 = 5.
    # 3(n-1)^2/((n-2)(n-3)) = 3*16/6 = 8.  BC = (5 + 1)/(5 + 8) = 6/13.
    assert bimodality_coefficient([0, 0, 0, 0, 5]) == pytest.approx(6 / 13)
    assert bimodality_coefficient([0, 0, None, 0, 0, 5, NAN]) == pytest.approx(6 / 13)


def test_bimodality_coefficient_two_clusters() -> None:
    # Ten 1s and ten 5s: G1 = 0; m4/m2^2 = 16/16 = 1 so g2 = -2;
    # G2 = ((21)(-2) + 6)(19)/((18)(17)) = -684/306; 3*19^2/306 = 1083/306;
    # BC = 1 / (399/306) = 306/399 = 0.7669 > 5/9.
    bc = bimodality_coefficient([1] * 10 + [5] * 10)
    assert bc == pytest.approx(306 / 399)
    assert bc > BIMODALITY_THRESHOLD


def test_bimodality_coefficient_matches_scipy_estimators() -> None:
    stats = pytest.importorskip("scipy.stats")
    x = [1, 2, 2, 3, 5, 5, 5, 4, 1, 1, 2]
    n = len(x)
    g = stats.skew(x, bias=False)
    k = stats.kurtosis(x, bias=False)
    expected = (g**2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    assert bimodality_coefficient(x) == pytest.approx(expected)


def test_bimodality_coefficient_undefined() -> None:
    assert math.isnan(bimodality_coefficient([1, 2, 5]))  # n = 3: (n-3) = 0
    assert math.isnan(bimodality_coefficient([1, 2, 5, None]))  # 3 present answers
    assert math.isnan(bimodality_coefficient([2, 2, 2, 2, 2]))  # zero variance


def test_esteban_ray_by_hand() -> None:
    # Two halves at 1 and 5, |Δy| = 4. α = 1: 2 * (0.5^2 * 0.5 * 4) = 1.0
    assert esteban_ray([1, 1, 5, 5], alpha=1.0) == pytest.approx(1.0)
    # Default α = 1.6, K = 1: 2 * 0.5^2.6 * 0.5 * 4 = 4 * 0.5^2.6
    assert esteban_ray([1, 1, 5, 5]) == pytest.approx(4 * 0.5**2.6)
    # Groups 1, 2, 3 with π = .25, .5, .25, α = 1, K = 2:
    # i=1: .25^2 (.5*1 + .25*2) = .0625; i=2: .5^2 (.25*1 + .25*1) = .125;
    # i=3: .25^2 (.25*2 + .5*1) = .0625; sum .25, times K = 0.5.
    assert esteban_ray([1, 2, 2, 3], alpha=1.0, k=2.0) == pytest.approx(0.5)
    assert esteban_ray([4, 4, 4, None]) == 0.0  # consensus
    assert math.isnan(esteban_ray([None]))
    with pytest.raises(ValueError, match="alpha"):
        esteban_ray([1, 2], alpha=-1)


def test_consensus_and_entropy() -> None:
    votes = ["A", "A", "B", None]
    assert consensus_share(votes) == pytest.approx(2 / 3)  # missing not a vote
    # -(2/3 log2 2/3 + 1/3 log2 1/3) = 2/3*0.5849625 + 1/3*1.5849625 = 0.9182958
    assert opinion_entropy(votes) == pytest.approx(0.9182958, abs=1e-7)
    assert modal_opinion(votes) == "A"
    assert modal_opinion(["A", "B"]) is None  # tie
    assert consensus_share(["A", "B"]) == 0.5  # the share is the same either way
    assert consensus_share([3, 3, 3]) == 1.0 and opinion_entropy([3, 3, 3]) == 0.0
    assert math.isnan(consensus_share([])) and math.isnan(opinion_entropy([None]))


def test_time_to_consensus() -> None:
    shares = [0.4, 0.8, NAN, 1.0]
    assert time_to_consensus(shares) == 3  # default threshold: unanimity
    assert time_to_consensus(shares, threshold=0.8) == 1  # >= threshold
    assert time_to_consensus(shares, threshold=0.9) == 3  # NaN at 2 never counts
    assert time_to_consensus([0.2, 0.5]) is None
    assert time_to_consensus(pd.Series([1.0, 0.3], index=[20, 10])) == 20  # sorted by step
    assert time_to_consensus({5: 0.9, 1: 0.95}, threshold=0.9) == 1
    assert time_to_consensus(pd.Series([pd.NA, 1.0], dtype="Float64")) == 1  # <NA> skipped
    with pytest.raises(ValueError, match="threshold"):
        time_to_consensus([1.0], threshold=0)


def test_population_table_by_hand() -> None:
    frame = pd.DataFrame(
        {
            "step": [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0],
            "agent": ["a", "b", "c", "d"] * 2 + ["a", "b", "c"],
            "topic": ["t"] * 8 + ["q"] * 3,
            "value": [1, 1, 5, 5, 4, 4, 4, None, "A", "B", "B"],
        }
    )
    out = population_table(frame, centre_on=(1, 5)).set_index(["topic", "step"])
    t0 = out.loc[("t", 0)]
    # 1 1 5 5 centred: -2 -2 2 2 -> bias 0; std: deviations ±2 -> 16/3 -> sqrt(16/3)
    assert t0["n"] == 4 and t0["n_missing"] == 0
    assert t0["bias"] == 0.0
    assert t0["variance"] == pytest.approx(16 / 3)
    assert t0["diversity"] == pytest.approx(math.sqrt(16 / 3))
    # BC, n = 4, two-point symmetric: (n^2-1)/((n-2)(n-3)) * 1 = 15/2 -> BC = 2/15
    assert t0["bimodality"] == pytest.approx(2 / 15)
    assert t0["polarization"] == pytest.approx(4 * 0.5**2.6)
    assert t0["consensus_share"] == 0.5 and t0["entropy"] == 1.0
    assert t0["modal_opinion"] is None
    t1 = out.loc[("t", 1)]
    # 4 4 4 + one failed call: n 3, n_missing 1, consensus 1, bias 4-3 = 1, BC undefined
    assert (t1["n"], t1["n_missing"], t1["consensus_share"], t1["bias"]) == (3, 1, 1.0, 1.0)
    assert t1["diversity"] == 0.0 and math.isnan(t1["bimodality"])
    assert t1["polarization"] == 0.0 and t1["modal_opinion"] == 4
    q0 = out.loc[("q", 0)]
    # Letters: only share, modal answer and entropy; ordinal columns NaN.
    assert q0["scale"] == "categorical" and q0["modal_opinion"] == "B"
    assert q0["consensus_share"] == pytest.approx(2 / 3)
    assert math.isnan(q0["bias"]) and math.isnan(q0["polarization"])
    shares = out.loc["t", "consensus_share"]
    assert time_to_consensus(shares) == 1
    with pytest.raises(ValueError, match="lacks"):
        population_table(frame.drop(columns="value"))
