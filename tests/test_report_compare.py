"""Comparison reports over a sweep or several runs: conditions side by side, with CIs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pyarrow.parquet as pq
import pytest
from browser import WIDTH, laid_out_width, screenshot

from simworld.analysis.compare import (
    SUMMARY_CSV,
    SUMMARY_PARQUET,
    SUMMARY_SCHEMA,
    _interventions,
    build_comparison,
    collect,
    compare,
    figure_over_time,
)
from simworld.analysis.figures import CATEGORY_COLOURS
from simworld.analysis.tables import Run, confidence_interval
from simworld.cli import main
from simworld.runs.replay import branch_run
from simworld.runs.run import run_scenario

SEEDS = 3


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A sweep of two protocol modes × three seeds on the tiny scenario (fake model)."""
    import yaml
    from conftest import BASE_SCENARIO, deep_update

    root = tmp_path_factory.mktemp("compare")
    data = deep_update(BASE_SCENARIO, {"protocol.steps": 2, "population.size": 6,
                                       "network": {"generator": "complete"}})  # fmt: skip
    scenario = root / "s.yaml"
    scenario.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = root / "sweep"
    seeds = f"0-{SEEDS - 1}"
    rc = main(["sweep", str(scenario), "--grid", "protocol.mode=broadcast,pairs",
               "--seeds", seeds, "--out", str(out), "--workers", "1", "--quiet"])  # fmt: skip
    assert rc == 0
    return out


@pytest.mark.slow
def test_summary_is_the_mean_and_bootstrap_ci_over_seeds(sweep):
    path = build_comparison([sweep])
    assert path == sweep / "report" / "report.html"
    table = pq.read_table(path.parent / SUMMARY_PARQUET)
    assert table.schema == SUMMARY_SCHEMA
    summary = table.to_pandas()
    csv = pd.read_csv(path.parent / SUMMARY_CSV)
    assert len(csv) == len(summary) and list(csv.columns) == SUMMARY_SCHEMA.names
    assert list(dict.fromkeys(summary["condition"])) == [
        "protocol.mode=broadcast", "protocol.mode=pairs"
    ]  # fmt: skip
    # recompute one cell by hand from the run directories
    manifest = json.loads((sweep / "sweep.json").read_text(encoding="utf-8"))
    pairs = [
        sweep / r["run_dir"] for r in manifest["runs"] if r["params"]["protocol.mode"] == "pairs"
    ]
    values = []
    for run_dir in pairs:
        pop = Run(run_dir).frame("population")
        values.append(
            float(pop[(pop.topic == "remote_work") & (pop.step == 2)]["consensus_share"].iloc[0])
        )
    row = summary[(summary.condition == "protocol.mode=pairs")
                  & (summary.measure == "consensus_share")
                  & (summary.topic == "remote_work") & (summary.step == 2)].iloc[0]  # fmt: skip
    assert row["estimate"] == pytest.approx(sum(values) / len(values))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        confidence_interval(values, method="bootstrap")
    )
    assert row["n"] == SEEDS and row["method"] == "bootstrap" and row["level"] == 0.95
    rates = summary[summary["step"].isna()]
    assert {"local_conformity", "opinion_change"} <= set(rates["measure"])
    bounded = summary.dropna(subset=["ci_low"])
    assert (bounded.ci_low <= bounded.estimate + 1e-12).all()
    assert (bounded.estimate <= bounded.ci_high + 1e-12).all()


@pytest.mark.slow
def test_comparison_is_deterministic_self_contained_and_opens_in_chromium(sweep, tmp_path):
    a = build_comparison([sweep], out_dir=tmp_path / "a")
    b = build_comparison([sweep], out_dir=tmp_path / "b")
    for name in ("report.html", SUMMARY_CSV, SUMMARY_PARQUET, "compare_remote_work.png"):
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes(), name
    page = a.read_text(encoding="utf-8")
    assert "src='data:image/png;base64," in page and "http" not in page
    assert "protocol.mode=pairs" in page and "95% percentile-bootstrap" in page
    screenshot(a, tmp_path / "shot.png", tmp_path / "profile")
    assert laid_out_width(a, tmp_path / "profile") <= WIDTH  # wide tables scroll in place


def test_run_directories_and_a_branch_against_its_parent(make_scenario, tmp_path):
    runs = []
    for seed in (1, 2):
        for instruction in ("", "Be brief."):
            path = make_scenario({"seed": seed, "protocol.steps": 3,
                                  "protocol.instruction": instruction})  # fmt: skip
            out = tmp_path / f"run-{seed}-{len(instruction)}"
            assert (
                run_scenario(path, out_dir=out, cache_path=tmp_path / "c.db").status == "completed"
            )
            runs.append(out)
    comparison = compare(runs)
    assert comparison.conditions == ["protocol.instruction=", "protocol.instruction=Be brief."]
    decided = comparison.summary[comparison.summary["n"] > 0]
    assert set(decided["n"]) == {2}  # two seeds per condition
    assert comparison.summary[comparison.summary["n"] == 0]["estimate"].isna().all()
    branch = branch_run(runs[0], from_step=2, overrides={"protocol.instruction": "Disagree."},
                        out_dir=tmp_path / "branch", cache_path=tmp_path / "c.db")  # fmt: skip
    assert branch.status == "completed"
    comparison = compare([tmp_path / "branch"])  # the parent is brought in
    assert len(comparison.members) == 2
    label = next(c for c in comparison.conditions if c.startswith("branch from step 2"))
    steps = comparison.series[comparison.series.condition == label]["step"]
    assert steps.min() == 1  # from the last step shared with the parent on
    parent = comparison.series[comparison.series.condition != label]["step"]
    assert parent.min() == 0
    # the command does the same: a branch alone is reported beside its parent
    assert main(["report", str(tmp_path / "branch"), "--out", str(tmp_path / "page")]) == 0
    page = (tmp_path / "page" / "report.html").read_text(encoding="utf-8")
    assert "branch from step 2" in page


def test_cli_compares_and_rejects_bad_paths(sweep, tmp_path, capsys):
    assert main(["report", str(sweep), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").is_file()
    capsys.readouterr()
    assert main(["report", str(sweep), str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing" in err[0]
    assert main(["report", str(sweep), "--level", "1.5"]) == 2
    run = next(p for p in sorted((sweep / "runs").iterdir()) if (p / "manifest.json").is_file())
    for twice in ([run, run], [sweep, run]):  # a run counted twice would be two seeds
        capsys.readouterr()
        assert main(["report", *map(str, twice), "--out", str(tmp_path / "twice")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "among the runs twice" in err[0], err
    assert not (tmp_path / "twice").exists()


def test_scenario_files_are_told_apart_by_name_and_belief_is_compared(make_scenario, tmp_path):
    runs = []
    for name in ("control", "correction", "rebuttal"):
        changes = {"name": name, "description": f"The {name} condition, described at length.",
                   "protocol.steps": 2, "trackers.belief": {"topic": "remote_work"}}  # fmt: skip
        if name != "control":
            changes["interventions"] = [{"step": 2, "kind": "broadcast", "topic": "remote_work",
                                         "text": "Experts disagree with this."}]  # fmt: skip
        out = tmp_path / name
        assert run_scenario(make_scenario(changes), out_dir=out).status == "completed"
        runs.append(out)
    comparison = compare(runs)
    assert comparison.conditions == ["name=control", "name=correction", "name=rebuttal"]
    believing = comparison.summary[comparison.summary.measure == "believing_share"]
    assert set(believing["condition"]) == set(comparison.conditions)
    assert believing["estimate"].between(0, 1).all()
    # the broadcast only two conditions had is drawn in their colours, dash-dotted side by
    # side, and labelled once (not once per condition, one word printed over the other)
    fig = figure_over_time(comparison, "remote_work", _interventions(comparison))
    try:
        ax = fig.axes[0]
        marks = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-."]
        assert [ln.get_xdata()[0] for ln in marks] == [pytest.approx(1.5), pytest.approx(1.58)]
        assert [ln.get_color() for ln in marks] == [CATEGORY_COLOURS(1), CATEGORY_COLOURS(2)]
        labels = [t for t in ax.texts if t.get_text() == "broadcast"]
        assert len(labels) == 1 and labels[0].get_position()[0] == pytest.approx(1.5)
    finally:
        plt.close(fig)


def test_asch_levels_by_p_are_compared_beside_asch_1951(make_scenario, tmp_path):
    scale = {"type": "choice", "options": {"A": "Six", "B": "Eight"}}
    topic = {"id": "legs", "statement": "How many legs?", "scale": scale, "truth": "B"}
    runs = []
    for seed in (1, 2):
        path = make_scenario(
            {"seed": seed, "topics": [topic],
             "protocol": {"steps": 2, "mode": "asch", "asch": {"peers": [0, 3]}, "probe_at": [0]}}
        )  # fmt: skip
        out = tmp_path / f"run{seed}"
        assert run_scenario(path, out_dir=out, cache_path=tmp_path / "c.db").status == "completed"
        runs.append(out)
    comparison = compare(runs)
    cl = comparison.summary[comparison.summary.measure == "asch_CL"]
    assert list(cl["p"]) == [0, 3] and set(cl["n"]) == {2}
    page = build_comparison(runs, out_dir=tmp_path / "report").read_text(encoding="utf-8")
    assert "compare_asch" in page and "Groups, leadership and men" in page


def test_unfinished_runs_of_a_sweep_are_left_out_and_named(sweep, tmp_path, capsys):
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report", ".locks"))
    manifest = json.loads((copy / "sweep.json").read_text(encoding="utf-8"))
    first = copy / manifest["runs"][0]["run_dir"] / "manifest.json"
    run = json.loads(first.read_text(encoding="utf-8"))
    first.write_text(json.dumps({**run, "status": "failed"}), encoding="utf-8")
    manifest["runs"][1]["status"] = "running"  # a driver killed after that run ended
    (copy / "sweep.json").write_text(json.dumps(manifest), encoding="utf-8")
    comparison = compare([copy])
    assert len(comparison.members) == 2 * SEEDS - 1  # the run's own manifest has the last word
    page = build_comparison([copy]).read_text(encoding="utf-8")
    assert "1 run(s) left out, not finished" in page
    assert f"{manifest['runs'][0]['run_dir']} (failed)" in page
    assert main(["report", str(copy), "--out", str(tmp_path / "page")]) == 0
    said = capsys.readouterr().out.splitlines()
    assert (
        said[0]
        == f"note       1 run(s) left out, not finished: {manifest['runs'][0]['run_dir']} (failed)"
    )
    assert said[1] == str(tmp_path / "page" / "report.html")


def test_run_directories_unfinished_are_left_out_and_execution_settings_are_one_condition(
    make_scenario, tmp_path
):
    path = make_scenario({"protocol.steps": 2})
    for name, concurrency in (("a", 1), ("b", 16)):
        result = run_scenario(
            path, out_dir=tmp_path / name, overrides={"llm.concurrency": concurrency}
        )
        assert result.status == "completed"
    run = json.loads((tmp_path / "b" / "manifest.json").read_text(encoding="utf-8"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.json").write_text(json.dumps({**run, "status": "interrupted"}))
    skipped: list[str] = []
    members = collect([tmp_path / "a", tmp_path / "b", tmp_path / "c"], skipped=skipped)
    assert [m.run.path.name for m in members] == ["a", "b"]
    assert len({m.condition for m in members}) == 1  # concurrency changes no output
    assert skipped == [f"{tmp_path / 'c'} (interrupted)"]


def test_a_setting_one_run_lacks_is_labelled_unset(make_scenario, tmp_path):
    path = make_scenario({"protocol.steps": 1, "llm.cache": "off"})
    price = {"llm.price.input_per_million": 1.0, "llm.price.output_per_million": 2.0}
    for name, overrides in (("plain", {}), ("priced", price)):
        result = run_scenario(path, out_dir=tmp_path / name, overrides=overrides)
        assert result.status == "completed"
    members = collect([tmp_path / "plain", tmp_path / "priced"])
    assert [m.condition for m in members] == [
        "llm.price.input_per_million=unset, llm.price.output_per_million=unset",
        "llm.price.input_per_million=1.0, llm.price.output_per_million=2.0",
    ]
