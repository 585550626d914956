"""§4 personality consistency: BFI tables, scoring, distance, change (Cohen's d), order."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from simworld.config.persona import BigFive
from simworld.measures.personality import (
    BFI10,
    BFI44,
    BIG_FIVE_TRAITS,
    BfiItem,
    randomize_administration,
    score_bfi,
    score_change,
    trait_distance,
)

NAN = float("nan")
BFI44_REVERSED = {2, 6, 8, 9, 12, 18, 21, 23, 24, 27, 31, 34, 35, 37, 41, 43}


# --- item tables ---------------------------------------------------------------------------


def test_bfi44_table() -> None:
    assert [it.number for it in BFI44] == list(range(1, 45))
    assert {it.number for it in BFI44 if it.reverse} == BFI44_REVERSED
    # John & Srivastava (1999) scale lengths: E 8, A 9, C 9, N 8, O 10.
    counts = Counter(it.trait for it in BFI44)
    assert counts == {
        "extraversion": 8,
        "agreeableness": 9,
        "conscientiousness": 9,
        "neuroticism": 8,
        "openness": 10,
    }
    assert BFI44[0] == BfiItem(1, "is talkative", "extraversion", False)
    assert BFI44[43].text == "is sophisticated in art, music, or literature"
    assert BFI44[8] == BfiItem(9, "is relaxed, handles stress well", "neuroticism", True)


def test_bfi10_table() -> None:
    assert len(BFI10) == 10
    # Rammstedt & John (2007): items 1, 3, 4, 5, 7 reverse-keyed; two items per trait.
    assert {it.number for it in BFI10 if it.reverse} == {1, 3, 4, 5, 7}
    assert Counter(it.trait for it in BFI10) == dict.fromkeys(BIG_FIVE_TRAITS, 2)
    # Each BFI-10 item is a BFI-44 item with the same trait and key.
    bfi44 = {it.text: (it.trait, it.reverse) for it in BFI44}
    assert all(bfi44[it.text] == (it.trait, it.reverse) for it in BFI10)


# --- scoring -------------------------------------------------------------------------------


def test_score_bfi44_all_fives() -> None:
    scores = score_bfi(dict.fromkeys(range(1, 45), 5)).scores
    # Keyed items give 5, reversed ones 6-5 = 1:
    # E: 5 keyed + 3 reversed (6, 21, 31) -> (25 + 3) / 8 = 3.5
    # A: 5 + 4 (2, 12, 27, 37) -> 29/9;  C: 5 + 4 (8, 18, 23, 43) -> 29/9
    # N: 5 + 3 (9, 24, 34) -> 28/8 = 3.5;  O: 8 + 2 (35, 41) -> (40 + 2)/10 = 4.2
    assert scores["extraversion"] == pytest.approx(3.5)
    assert scores["agreeableness"] == pytest.approx(29 / 9)
    assert scores["conscientiousness"] == pytest.approx(29 / 9)
    assert scores["neuroticism"] == pytest.approx(3.5)
    assert scores["openness"] == pytest.approx(4.2)
    assert list(scores) == list(BIG_FIVE_TRAITS)


def test_score_bfi10_with_missing_items() -> None:
    result = score_bfi(
        {1: 2, 6: 4, 2: 5, 7: 1, 3: 3, 8: 3, 4: None, 9: 2, 5: NAN}, inventory="bfi10"
    )
    # E: item 1 reversed 6-2 = 4, item 6 = 4 -> 4.0
    # A: item 2 = 5, item 7 reversed 6-1 = 5 -> 5.0
    # C: 6-3 = 3 and 3 -> 3.0
    # N: item 4 missing (excluded, not 0 or 3), item 9 = 2 -> 2.0 from 1 item
    # O: item 5 missing, item 10 absent -> NaN, 0 items
    assert result.scores["extraversion"] == 4.0
    assert result.scores["agreeableness"] == 5.0
    assert result.scores["conscientiousness"] == 3.0
    assert result.scores["neuroticism"] == 2.0
    assert math.isnan(result.scores["openness"])
    assert result.answered == {
        "openness": 0,
        "conscientiousness": 2,
        "extraversion": 2,
        "agreeableness": 2,
        "neuroticism": 1,
    }
    strict = score_bfi({4: None, 9: 2}, inventory="bfi10", min_items=2)
    assert math.isnan(strict.scores["neuroticism"])


def test_score_bfi_rejects_bad_answers() -> None:
    with pytest.raises(ValueError, match="outside"):
        score_bfi({1: 6})
    with pytest.raises(ValueError, match="Likert integer"):
        score_bfi({1: 2.5})
    with pytest.raises(ValueError, match="Likert integer"):
        score_bfi({1: True})
    with pytest.raises(ValueError, match="Likert integer"):
        score_bfi({1: "3"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="not in the inventory"):
        score_bfi({11: 3}, inventory="bfi10")
    with pytest.raises(ValueError, match="unknown inventory"):
        score_bfi({}, inventory="bfi99")  # type: ignore[arg-type]


# --- distance to assigned level -------------------------------------------------------------


def test_trait_distance() -> None:
    assigned = BigFive(
        openness=4.5, conscientiousness=2.0, extraversion=3.0, agreeableness=5.0, neuroticism=1.0
    )
    measured = {
        "openness": 4.0,
        "conscientiousness": 3.5,
        "extraversion": 3.0,
        "agreeableness": 4.0,
        "neuroticism": NAN,
    }
    # |4-4.5| = 0.5, |3.5-2| = 1.5, 0, |4-5| = 1, NaN stays NaN.
    d = trait_distance(measured, assigned)
    assert d["openness"] == 0.5 and d["conscientiousness"] == 1.5
    assert d["extraversion"] == 0.0 and d["agreeableness"] == 1.0
    assert math.isnan(d["neuroticism"])
    signed = trait_distance(measured, {"openness": 4.5}, signed=True)
    assert signed == {"openness": -0.5}  # only traits in both


# --- change between administrations ---------------------------------------------------------


def test_score_change_paired_dz() -> None:
    before = {"a": {"openness": 1.0}, "b": {"openness": 2.0}, "c": {"openness": 3.0}}
    after = {"a": {"openness": 2.0}, "b": {"openness": 4.0}, "c": {"openness": 6.0}}
    row = score_change(before, after).iloc[0]
    # diffs 1, 2, 3 -> mean 2, sd(ddof=1) = sqrt(((1-2)^2 + 0 + (3-2)^2)/2) = 1 -> d_z = 2
    assert (row["trait"], row["n"], row["n_excluded"]) == ("openness", 3, 0)
    assert row["mean_change"] == 2.0 and row["sd_change"] == 1.0 and row["d"] == 2.0
    assert (row["mean_before"], row["mean_after"]) == (2.0, 4.0)
    # d_av: sd_before = 1, sd_after = 2 -> sqrt((1 + 4)/2) = sqrt(2.5) -> 2 / 1.5811388 = 1.2649
    av = score_change(before, after, effect="av").iloc[0]
    assert av["d"] == pytest.approx(2 / math.sqrt(2.5))


def test_score_change_missing_and_degenerate() -> None:
    before = {"a": {"openness": 1.0}, "b": {"openness": 2.0}, "c": {"openness": NAN}, "d": {}}
    after = {"a": {"openness": 3.0}, "b": {"openness": 4.0}, "c": {"openness": 5.0}}
    row = score_change(before, after).iloc[0]
    # Only a and b have both scores; c (NaN before) and d (absent after) excluded.
    assert (row["n"], row["n_excluded"]) == (2, 2)
    # diffs 2, 2: sd 0 with a non-zero mean change -> d = +inf
    assert row["mean_change"] == 2.0 and row["d"] == math.inf
    one = score_change({"a": {"openness": 1.0}}, {"a": {"openness": 2.0}}).iloc[0]
    assert one["n"] == 1 and math.isnan(one["d"])  # d needs at least two agents
    same = score_change(
        {"a": {"openness": 1.0}, "b": {"openness": 2.0}},
        {"a": {"openness": 1.0}, "b": {"openness": 2.0}},
    ).iloc[0]
    assert same["mean_change"] == 0.0 and math.isnan(same["d"])  # 0/0
    with pytest.raises(ValueError, match="effect"):
        score_change(before, after, effect="hedges")  # type: ignore[arg-type]


# --- order randomiser ----------------------------------------------------------------------


def test_randomize_is_seeded_and_recorded() -> None:
    first = randomize_administration(seed=7)
    again = randomize_administration(seed=7)
    assert first == again
    assert sorted(first.item_order) == list(range(1, 45))
    orders = set(first.option_orders.values())
    assert len(orders) == 1  # one option order for the whole administration by default
    assert sorted(next(iter(orders))) == [1, 2, 3, 4, 5]
    # Different seeds give different orders (44! item orders: a clash is practically impossible).
    assert len({randomize_administration(seed=s).item_order for s in range(5)}) == 5


def test_randomize_options_and_decode() -> None:
    adm = randomize_administration(seed=3, inventory="bfi10", per_item_options=True)
    assert sorted(adm.item_order) == list(range(1, 11))
    for item, order in adm.option_orders.items():
        assert sorted(order) == [1, 2, 3, 4, 5]
        # Decoding each shown position gives back the value shown there.
        assert [adm.value_at(item, k) for k in range(5)] == list(order)
    plain = randomize_administration(seed=3, shuffle_items=False, shuffle_options=False)
    assert plain.item_order == tuple(range(1, 45))
    assert set(plain.option_orders.values()) == {(1, 2, 3, 4, 5)}
    assert plain.seed == 3
    assert np.all(np.diff(plain.item_order) == 1)
