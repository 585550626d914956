"""Analysis API over run directories: trajectories, rates with intervals, per-S table."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import finished_run

from simworld.analysis.tables import (
    Run,
    confidence_interval,
    conformity_rates,
    frames,
    inconstancy_by_diversity,
    personality_change,
    population_over_time,
    run_rates,
    trajectories,
)
from simworld.runs.run import run_scenario
from simworld.trackers.tracker_set import TRACKERS_DIR

T_975_DF1 = 12.706204736174698  # Student t quantile 0.975 with 1 degree of freedom
CONDITIONS = ("", "Debate: defend your own position.")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two conditions (instruction) × two seeds, small group discussions."""
    root = tmp_path_factory.mktemp("analysis")
    out = []
    for c, instruction in enumerate(CONDITIONS):
        for seed in (1, 2):
            run = finished_run(
                {"seed": seed, "protocol.mode": "group", "protocol.group_size": 4,
                 "protocol.rounds": 1, "protocol.steps": 2, "protocol.instruction": instruction,
                 "network": {"generator": "complete"}, "llm.cache": "off"},
                root / f"c{c}s{seed}.yaml",
                root / f"run-c{c}-s{seed}",
            )  # fmt: skip
            out.append(run)
    return out


def test_trajectories_long_and_wide(runs):
    long = trajectories(runs)
    assert len(long) == 4 * 8 * 2 * 3  # runs × agents × topics × probe steps
    assert list(long.columns[:4]) == ["run", "seed", "topic", "agent"]
    wide = trajectories(runs[0], topic="remote_work", wide=True)
    assert wide.shape == (8, 3) and list(wide.columns) == [0, 1, 2]
    one = long[(long.run == runs[0].name) & (long.topic == "remote_work")]
    first = one[one.agent == one.agent.iloc[0]].set_index("step")["value"]
    assert list(wide.iloc[0]) == list(first)
    choice = trajectories(runs[0], topic="city_priority", wide=True)
    assert set(choice.stack().unique()) <= set("ABCD")  # letters for a choice topic


def test_confidence_intervals_by_hand():
    lo, hi = confidence_interval([0.2, 0.4])
    half = T_975_DF1 * math.sqrt(0.02) / math.sqrt(2)  # sd of (0.2, 0.4) is sqrt(0.02)
    assert (lo, hi) == (pytest.approx(0.3 - half), pytest.approx(0.3 + half))
    assert all(math.isnan(x) for x in confidence_interval([0.5, math.nan]))  # one value left
    vals = [0.1, 0.2, 0.25, 0.4, 0.6]
    boot = confidence_interval(vals, method="bootstrap")
    assert boot == confidence_interval(vals, method="bootstrap")  # fixed seed: reproducible
    assert min(vals) <= boot[0] < boot[1] <= max(vals)
    with pytest.raises(ValueError):
        confidence_interval(vals, method="jackknife")  # type: ignore[arg-type]


def test_conformity_rates_by_condition_over_seeds(runs):
    table = conformity_rates(runs, by=["protocol.instruction"])
    assert set(table["protocol.instruction"]) == set(CONDITIONS)
    assert (table.n_runs <= 2).all() and (table.method == "t").all()
    for instruction, group in ((c, runs[2 * i : 2 * i + 2]) for i, c in enumerate(CONDITIONS)):
        per_run = [run_rates(Run(r))["opinion_change"] for r in group]
        row = table[(table["protocol.instruction"] == instruction)
                    & (table.measure == "opinion_change")].iloc[0]  # fmt: skip
        assert row["mean"] == pytest.approx(sum(per_run) / 2)
        lo, hi = confidence_interval(per_run)
        assert row.ci_low == pytest.approx(lo, nan_ok=True)
        assert row.ci_high == pytest.approx(hi, nan_ok=True)
    rates = run_rates(Run(runs[0]))
    inconstancy = Run(runs[0]).frame("inconstancy")
    decided = inconstancy.changed.dropna()
    assert rates["n_opinion_change"] == len(decided)
    assert rates["opinion_change"] == pytest.approx(decided.astype(bool).mean())
    boot = conformity_rates(runs, method="bootstrap")
    assert (boot.n_runs <= 4).all() and set(boot.measure) == set(table.measure)


def test_conformity_rates_of_no_run_are_no_rows_with_the_same_columns(runs):
    some = conformity_rates(runs[:1], by=["protocol.instruction"])
    none = conformity_rates([], by=["protocol.instruction"])  # e.g. a glob that matched nothing
    assert none.empty and list(none.columns) == list(some.columns)


def test_inconstancy_by_diversity_is_the_per_s_table(runs):
    table = inconstancy_by_diversity(runs)
    assert list(table.columns) == [
        "diversity", "position", "n", "pct_kept", "n_changed", "n_group_undefined",
        "pct_changed_to_group", "pct_changed_elsewhere",
    ]  # fmt: skip
    stacked = frames(runs, "inconstancy")
    assert table.n.sum() == stacked.changed.notna().sum()
    assert ((table.pct_kept >= 0) & (table.pct_kept <= 100)).all()
    defined = table.dropna(subset=["pct_changed_to_group"])
    sums = defined.pct_changed_to_group + defined.pct_changed_elsewhere
    assert sums.round(9).eq(100).all()


def test_population_over_time_stacked_and_summarised(runs):
    stacked = population_over_time(runs, by=["protocol.instruction"])
    assert len(stacked) == 4 * 2 * 3  # runs × topics × probe steps
    summary = population_over_time(runs, by=["protocol.instruction"], summary=True)
    row = summary[(summary.topic == "remote_work") & (summary.step == 2)
                  & (summary.measure == "diversity")
                  & (summary["protocol.instruction"] == "")].iloc[0]  # fmt: skip
    vals = stacked[(stacked.topic == "remote_work") & (stacked.step == 2)
                   & (stacked["protocol.instruction"] == "")].diversity  # fmt: skip
    assert row.n_runs == 2 and row["mean"] == pytest.approx(vals.mean())


def test_frames_rederived_when_a_run_has_no_tracker_files(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs[0], copy)
    shutil.rmtree(copy / TRACKERS_DIR)
    for name in ("drift", "inconstancy", "statements"):
        pd.testing.assert_frame_equal(Run(copy).frame(name), Run(runs[0]).frame(name))


def test_personality_change_between_administrations(make_scenario, tmp_path):
    path = make_scenario({"llm.cache": "off", "protocol.steps": 2,
                          "trackers.bfi": {"steps": [0, 2]}})  # fmt: skip
    run_scenario(path, out_dir=tmp_path / "run")
    table = personality_change(tmp_path / "run", before=0, after=2)
    assert list(table.trait) == sorted(
        ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]
    )
    assert (table.n == 8).all() and (table.n_excluded == 0).all()
    scores = Run(tmp_path / "run").frame("personality")
    ext = scores[scores.trait == "extraversion"].pivot(
        index="agent", columns="step", values="score"
    )
    assert table.set_index("trait").loc["extraversion", "mean_change"] == pytest.approx(
        (ext[2] - ext[0]).mean()
    )
