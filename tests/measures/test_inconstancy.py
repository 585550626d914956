"""§1 persona inconstancy: change, conformity, confabulation, diversity, per-S table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from simworld.measures.inconstancy import (
    AgentRecord,
    Discussion,
    confabulation,
    confabulation_rate,
    diversity_table,
    group_answer,
    group_diversity,
    inconstancy_table,
    opinion_change,
    own_answer_share,
    private_conformity,
    public_conformity,
)

NAN = float("nan")


# --- group answer G ---------------------------------------------------------------------


def test_group_answer_is_plurality_of_stated_answers() -> None:
    # A twice, B once -> A.
    assert group_answer(["A", "B", "A"]) == "A"
    # Plurality, not absolute majority: A 2, B 1, C 1 (A has 2/4, not > half) -> A.
    assert group_answer(["A", "B", "C", "A"]) == "A"


def test_group_answer_tie_or_nothing_stated_is_undefined() -> None:
    assert group_answer(["A", "B"]) is None  # 1 vs 1
    assert group_answer(["A", "B", "B", "A", "C"]) is None  # 2 vs 2
    assert group_answer([]) is None  # no public statements at all


def test_group_answer_ignores_missing_statements() -> None:
    # Two failed parses (None, NaN) must not out-vote B (2 votes) as a "value".
    assert group_answer(["A", None, NAN, "B", "B"]) == "B"
    assert group_answer([None, None]) is None


def test_group_answer_ordinal() -> None:
    assert group_answer([4, 2, 4, 5]) == 4


# --- opinion change and conformity ---------------------------------------------------------


def test_opinion_change() -> None:
    assert opinion_change("A", "A") is False
    assert opinion_change("A", "B") is True
    assert opinion_change(3, 4) is True
    assert opinion_change(3, 3) is False


def test_opinion_change_missing_is_undecided() -> None:
    assert opinion_change(None, "A") is None
    assert opinion_change("A", NAN) is None


def test_private_conformity() -> None:
    assert private_conformity("A", "B", "B") is True  # changed, to G
    assert private_conformity("A", "C", "B") is False  # changed, not to G
    assert private_conformity("A", "A", "B") is False  # did not change
    # Did not change: False whatever G is, even undefined.
    assert private_conformity("A", "A", None) is False
    # Changed but G undefined (tie): undecided, not False.
    assert private_conformity("A", "B", None) is None
    assert private_conformity(None, "B", "B") is None
    assert private_conformity("A", None, "B") is None
    assert private_conformity(2, 4, 4) is True


def test_public_conformity() -> None:
    # Said B in public, kept A in private.
    assert public_conformity("A", ["A", "B"], "A") is True
    # Only ever said A.
    assert public_conformity("A", ["A", "A"], "A") is False
    # Said B and switched to B in private: that is a change, not public conformity.
    assert public_conformity("A", ["B"], "B") is False
    assert public_conformity(3, [3, 5], 3) is True


def test_public_conformity_without_public_statements() -> None:
    # D_i empty: no statement deviates, so the flag is False (literal reading).
    assert public_conformity("A", [], "A") is False
    # A failed message (None) is not a deviating statement.
    assert public_conformity("A", [None, NAN], "A") is False
    # Missing private answers: undecided.
    assert public_conformity(None, ["B"], "A") is None
    assert public_conformity("A", ["B"], None) is None


# --- confabulation ------------------------------------------------------------------------


def test_confabulation() -> None:
    # Held: {A, B}; voiced: {A}; final C was never held or voiced.
    assert confabulation("C", onboardings=["A", "B"], stated=["A"]) is True
    # B was held by someone at onboarding.
    assert confabulation("B", onboardings=["A", "B"], stated=["A"]) is False
    # D was voiced by someone during the discussion.
    assert confabulation("D", onboardings=["A", "B"], stated=["A", "D"]) is False
    assert confabulation(5, onboardings=[1, 2], stated=[3]) is True


def test_confabulation_missing() -> None:
    assert confabulation(None, onboardings=["A"], stated=["A"]) is None
    # Missing onboardings/statements add nothing to the seen set: B seen nowhere -> True.
    assert confabulation("B", onboardings=["A", None], stated=[NAN]) is True


def test_confabulation_rate_is_over_group_size_times_discussions() -> None:
    d1 = Discussion(
        agents=(
            AgentRecord("a", "A", "C", ("A",)),  # C never held or voiced -> confabulation
            AgentRecord("b", "B", "B", ("B",)),
            AgentRecord("c", "A", "A", ()),
        )
    )
    d2 = Discussion(
        agents=(
            AgentRecord("a", "A", "B", ("A",)),  # B held by b -> no
            AgentRecord("b", "B", "B", ()),
            AgentRecord("c", "B", "B", ("B",)),
        )
    )
    rate = confabulation_rate([d1, d2])
    # 1 confabulation / (3 agents x 2 discussions) = 1/6.
    assert (rate.count, rate.total, rate.excluded) == (1, 6, 0)
    assert rate.value == pytest.approx(1 / 6)


def test_confabulation_rate_excludes_failed_reflections() -> None:
    d = Discussion(
        agents=(
            AgentRecord("a", "A", "Z", ()),  # confabulation
            AgentRecord("b", "B", None, ()),  # reflection call failed: excluded
            AgentRecord("c", "B", "B", ()),
        )
    )
    rate = confabulation_rate([d])
    # 1 confabulation over the 2 agents with a reflection; 1 excluded.
    assert (rate.count, rate.total, rate.excluded) == (1, 2, 1)
    assert rate.value == pytest.approx(0.5)
    assert math.isnan(confabulation_rate([]).value)


# --- diversity -----------------------------------------------------------------------------


def test_group_diversity_entropy_log2() -> None:
    assert group_diversity(["A", "A", "B", "B"]) == pytest.approx(1.0)  # two halves: 1 bit
    assert group_diversity(["A", "B", "C", "D"]) == pytest.approx(2.0)  # four quarters: 2 bits
    # 3/4, 1/4: -(0.75 log2 0.75 + 0.25 log2 0.25) = 0.75*0.4150375 + 0.25*2 = 0.8112781
    assert group_diversity(["A", "A", "A", "B"]) == pytest.approx(0.8112781, abs=1e-7)
    assert group_diversity([1, 1, 2, 2]) == pytest.approx(1.0)


def test_group_diversity_edge_cases() -> None:
    assert group_diversity(["A"]) == 0.0  # one-agent group
    assert group_diversity(["B", "B", "B"]) == 0.0  # unanimous
    assert group_diversity(["A", None, "B"]) == pytest.approx(1.0)  # missing dropped: A, B
    assert math.isnan(group_diversity([None, NAN]))


# --- per-agent table ----------------------------------------------------------------------


def _five_agent_discussion() -> Discussion:
    # O: A A B B C -> S = -(0.4 log2 0.4 * 2 + 0.2 log2 0.2) = 0.8*1.3219281 + 0.2*2.3219281
    #    = 1.0575425 + 0.4643856 = 1.5219281
    # Stated: a: B B, b: B, c: B, d: (none), e: C A  -> B 4, C 1, A 1 -> G = B.
    return Discussion(
        id="d1",
        agents=(
            AgentRecord("a", "A", "B", ("B", "B")),  # changed to G -> private conformity
            AgentRecord("b", "A", "A", ("B",)),  # said B, kept A -> public conformity
            AgentRecord("c", "B", "B", ("B",)),  # no change
            AgentRecord("d", "B", "D", ()),  # D never held/voiced -> confabulation
            AgentRecord("e", "C", None, ("C", "A")),  # reflection failed -> undecided
        ),
    )


def test_inconstancy_table_flags() -> None:
    t = inconstancy_table([_five_agent_discussion()]).set_index("agent")
    assert list(t["position"]) == [1, 2, 3, 4, 5]
    assert set(t["group"]) == {"B"}
    assert t["diversity"].iloc[0] == pytest.approx(1.5219281, abs=1e-7)
    assert list(t["n_stated"]) == [2, 1, 1, 0, 2]
    assert t.loc["a", "changed"] and t.loc["a", "private_conformity"]
    assert not t.loc["a", "public_conformity"] and not t.loc["a", "confabulation"]
    assert not t.loc["b", "changed"] and t.loc["b", "public_conformity"]
    assert not t.loc["b", "private_conformity"]
    assert not t.loc["c", "changed"] and not t.loc["c", "public_conformity"]
    assert t.loc["d", "changed"] and t.loc["d", "confabulation"]
    assert not t.loc["d", "private_conformity"]  # changed to D, G is B
    # e's reflection is missing: every flag undecided, never False.
    assert pd.isna(t.loc["e", "changed"]) and pd.isna(t.loc["e", "confabulation"])
    assert pd.isna(t.loc["e", "private_conformity"]) and pd.isna(t.loc["e", "public_conformity"])


def test_recorded_group_answer_overrides_majority() -> None:
    d = Discussion(
        agents=(AgentRecord("a", "A", "C", ("B",)), AgentRecord("b", "B", "B", ("B",))),
        recorded_group="C",
    )
    t = inconstancy_table([d]).set_index("agent")
    assert set(t["group"]) == {"C"}
    assert t.loc["a", "private_conformity"]  # changed to the recorded G = C


def test_one_agent_group_and_silent_group() -> None:
    # One agent, nothing said: S = 0, G undefined; changed A -> B with G undefined -> <NA>.
    d = Discussion(agents=(AgentRecord("solo", "A", "B", ()),))
    row = inconstancy_table([d]).iloc[0]
    assert row["diversity"] == 0.0
    assert row["group"] is None
    assert bool(row["changed"])
    assert pd.isna(row["private_conformity"])
    assert not row["public_conformity"]
    assert row["confabulation"]  # B never held or voiced by anyone


def test_inconstancy_table_counts_missing_onboardings() -> None:
    d = Discussion(agents=(AgentRecord("a", None, "A", ()), AgentRecord("b", "A", "A", ())))
    t = inconstancy_table([d])
    assert list(t["n_missing_onboarding"]) == [1, 1]
    assert t["diversity"].iloc[0] == 0.0  # only A present
    assert pd.isna(t["changed"].iloc[0]) and not t["changed"].iloc[1]


# --- per-S table --------------------------------------------------------------------------


def test_diversity_table_by_hand() -> None:
    # Discussion 1 (S = 1 bit: O = A A B B):
    #   pos1 A->A (kept), pos2 A->B (changed, G = B -> to group),
    #   pos3 B->B (kept), pos4 B->C (changed, not to group).
    d1 = Discussion(
        id=1,
        agents=(
            AgentRecord("a", "A", "A", ("B",)),
            AgentRecord("b", "A", "B", ("B",)),
            AgentRecord("c", "B", "B", ("B",)),
            AgentRecord("d", "B", "C", ("A",)),
        ),
    )
    # Discussion 2 (S = 1 bit again: O = A B A B): stated A, B -> tie, G undefined.
    #   pos1 A->B changed (G undefined), pos2 B->B kept, pos3 A->A kept, pos4 B missing R.
    d2 = Discussion(
        id=2,
        agents=(
            AgentRecord("a", "A", "B", ("A",)),
            AgentRecord("b", "B", "B", ("B",)),
            AgentRecord("c", "A", "A", ()),
            AgentRecord("d", "B", None, ()),
        ),
    )
    # Discussion 3 (S = 0: O = A A A A): pos1 A->B changed, G = B (stated B twice).
    d3 = Discussion(
        id=3,
        agents=(
            AgentRecord("a", "A", "B", ("B",)),
            AgentRecord("b", "A", "A", ("B",)),
            AgentRecord("c", "A", "A", ()),
            AgentRecord("d", "A", "A", ()),
        ),
    )
    tab = diversity_table(inconstancy_table([d1, d2, d3]))
    cell = tab.set_index(["diversity", "position"])
    # S = 0, pos 1: one agent, changed to G -> kept 0 %, to group 100 %.
    r = cell.loc[(0.0, 1)]
    assert (r["n"], r["pct_kept"], r["n_changed"]) == (1, 0.0, 1)
    assert (r["pct_changed_to_group"], r["pct_changed_elsewhere"]) == (100.0, 0.0)
    # S = 0, pos 2..4: kept, no changed agents -> percentages among changed are NaN.
    assert cell.loc[(0.0, 2), "pct_kept"] == 100.0
    assert math.isnan(cell.loc[(0.0, 2), "pct_changed_to_group"])
    # S = 1, pos 1: d1 kept, d2 changed with G undefined -> n 2, kept 50 %,
    #   1 changed, 1 group-undefined, so no denominator for R=G vs R!=G.
    r = cell.loc[(1.0, 1)]
    assert (r["n"], r["pct_kept"], r["n_changed"], r["n_group_undefined"]) == (2, 50.0, 1, 1)
    assert math.isnan(r["pct_changed_to_group"])
    # S = 1, pos 2: d1 changed to G, d2 kept -> kept 50 %, to group 100 %.
    r = cell.loc[(1.0, 2)]
    assert (r["n"], r["pct_kept"], r["pct_changed_to_group"]) == (2, 50.0, 100.0)
    # S = 1, pos 4: d1 changed elsewhere (C, G = B); d2's agent missing R -> excluded.
    r = cell.loc[(1.0, 4)]
    assert (r["n"], r["pct_kept"], r["pct_changed_elsewhere"]) == (1, 0.0, 100.0)
    assert list(tab["diversity"]) == sorted(tab["diversity"])
    # The paper code's grouping: the share of the group holding the agent's own O.
    # d1: every O is held by 2 of 4 -> 0.5; d2: likewise 0.5 (d's R is missing);
    # d3: everyone holds A -> 1.0.
    shares = inconstancy_table([d1, d2, d3])["own_share"]
    assert list(shares) == [0.5] * 8 + [1.0] * 4
    by_share = diversity_table(inconstancy_table([d1, d2, d3]), by="own_share")
    assert list(by_share.columns[:2]) == ["diversity", "own_share"]
    cell = by_share.set_index(["diversity", "own_share"])
    # S = 1, share 0.5: d1 a kept, b->G, c kept, d->C; d2 a changed (G undefined), b, c kept
    r = cell.loc[(1.0, 0.5)]
    assert (r["n"], r["n_changed"], r["n_group_undefined"]) == (7, 3, 1)
    assert r["pct_kept"] == pytest.approx(100 * 4 / 7)
    assert (r["pct_changed_to_group"], r["pct_changed_elsewhere"]) == (50.0, 50.0)
    r = cell.loc[(0.0, 1.0)]  # d3: a changed to G, three kept
    assert (r["n"], r["pct_kept"], r["pct_changed_to_group"]) == (4, 75.0, 100.0)
    with pytest.raises(ValueError, match="by must be"):
        diversity_table(inconstancy_table([d1]), by="seat")  # type: ignore[arg-type]


def test_own_answer_share_is_over_the_present_onboardings() -> None:
    assert own_answer_share("A", ["A", "A", "B", "C", "A"]) == pytest.approx(3 / 5)
    assert own_answer_share("B", ["A", "B", None]) == pytest.approx(1 / 2)  # a failed O_j
    assert own_answer_share(None, ["A", "B"]) is None
    assert own_answer_share(2, [2, 3, 2, 2]) == pytest.approx(3 / 4)  # Likert too


def test_diversity_table_empty_when_nothing_decided() -> None:
    d = Discussion(agents=(AgentRecord("a", None, None, ()),))
    tab = diversity_table(inconstancy_table([d]))
    assert tab.empty
    assert "pct_kept" in tab.columns
