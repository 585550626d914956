"""The scenario library under scenarios/: every file loads and runs, and probe_topics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import LIKERT, ROOT

from simworld.cli import main
from simworld.report import REPORT_DIR, REPORT_FILE
from simworld.run import run_scenario
from simworld.scenario import load_scenario

SCENARIOS = ROOT / "scenarios"
SHIPPED = sorted(
    p.relative_to(SCENARIOS).as_posix()
    for p in SCENARIOS.rglob("*.yaml")
    if "protocol" in (yaml.safe_load(p.read_text(encoding="utf-8")) or {})
)
SMALL = 6  # agents in the end-to-end runs: above the small-world k=4, one group of six


def _topic(i: int) -> dict:
    return {
        "id": f"t{i}",
        "statement": f"Statement number {i} is true.",
        "scale": {"type": "likert", "labels": LIKERT},
    }


def _probed(make_scenario, tmp_path: Path, changes: dict) -> dict[int, set[str]]:
    path = make_scenario({"topics": [_topic(i) for i in (1, 2, 3)], **changes})
    run_dir = tmp_path / path.stem
    assert run_scenario(path, out_dir=run_dir, cache_path=tmp_path / "c.db").status == "completed"
    df = pd.read_parquet(run_dir / "opinions.parquet")
    n_agents = df["agent"].nunique()
    assert (df.groupby(["step", "topic"]).size() == n_agents).all()
    return {int(s): set(g["topic"]) for s, g in df.groupby("step")}


def test_probe_topics_discussed_asks_the_last_and_the_next_topic(make_scenario, tmp_path):
    probed = _probed(
        make_scenario,
        tmp_path,
        {"protocol.steps": 4, "protocol.probe_topics": "discussed", "protocol.mode": "pairs"},
    )
    # step t discusses t((t-1) % 3 + 1): 1 -> t1, 2 -> t2, 3 -> t3, 4 -> t1
    assert probed == {0: {"t1"}, 1: {"t1", "t2"}, 2: {"t2", "t3"}, 3: {"t3", "t1"}, 4: {"t1"}}


def test_probe_topics_discussed_with_probe_at(make_scenario, tmp_path):
    probed = _probed(
        make_scenario,
        tmp_path,
        {"protocol.steps": 3, "protocol.probe_topics": "discussed", "protocol.probe_at": [0, 2]},
    )
    assert probed == {0: {"t1"}, 2: {"t2", "t3"}}


def test_probe_topics_all_is_the_default(make_scenario, tmp_path):
    probed = _probed(make_scenario, tmp_path, {"protocol.steps": 2})
    assert probed == {s: {"t1", "t2", "t3"} for s in (0, 1, 2)}
    assert load_scenario(make_scenario()).protocol.probe_topics == "all"


def test_library_is_not_empty():
    assert {"opinion_exchange.yaml", "cross_national/collaborate.yaml"} <= set(SHIPPED)
    assert "opinion_dynamics/confirmation_bias.yaml" in SHIPPED
    assert "personality_stability/low_levels.yaml" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenario_loads(name):
    scenario = load_scenario(SCENARIOS / name)
    assert scenario.name
    assert scenario.llm.model == "local/gemma3-270m"  # runs offline by default


def test_cross_national_files_match_the_generator():
    spec = importlib.util.spec_from_file_location("cn_build", SCENARIOS / "cross_national/build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for condition in ("collaborate", "debate"):
        shipped = yaml.safe_load((SCENARIOS / f"cross_national/{condition}.yaml").read_text())
        assert shipped == build.build(6, condition)
        assert shipped["protocol"]["probe_topics"] == "discussed"
        assert shipped["protocol"]["instruction"] == build.INSTRUCTIONS[condition]
    questions = yaml.safe_load(build.QUESTIONS.read_text(encoding="utf-8"))["questions"]
    every = build.pick_questions(questions, len(questions))
    assert sorted(q["id"] for q in every) == sorted(q["id"] for q in questions)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenario_runs_and_reports(name, tmp_path, capsys):
    overrides = {
        "llm.model": "fake/default",
        "llm.backoff_base_s": 0.0,
        "protocol.steps": 1,
        "population.size": SMALL,
    }
    run_dir = tmp_path / "run"
    result = run_scenario(
        SCENARIOS / name, overrides=overrides, out_dir=run_dir, cache_path=tmp_path / "c.db"
    )
    assert result.status == "completed"
    probes = pd.read_parquet(run_dir / "opinions.parquet")
    assert set(probes["step"]) == {0, 1} and probes["ok"].all()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / REPORT_DIR / REPORT_FILE).stat().st_size > 0


def test_dry_run_estimate_counts_only_the_probed_topics():
    from simworld.sweep_plan import estimate_run

    path = SCENARIOS / "cross_national/collaborate.yaml"
    discussed = estimate_run(load_scenario(path))
    every = estimate_run(load_scenario(path, {"protocol.probe_topics": "all"}))
    # 20 agents, 6 steps: probes 1 + 2 * 5 + 1 = 12 topic probes per agent instead of 7 * 6
    assert every.calls - discussed.calls == 20 * (7 * 6 - 12)
