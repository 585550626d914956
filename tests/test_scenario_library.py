"""The scenario library under scenarios/: every file loads and runs, and probe_topics."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import LIKERT, ROOT

from simworld.config.scenario import load_scenario
from simworld.runs.run import run_scenario

SCENARIOS = ROOT / "scenarios"
SHIPPED = sorted(
    p.relative_to(SCENARIOS).as_posix()
    for p in SCENARIOS.rglob("*.yaml")
    if "protocol" in (yaml.safe_load(p.read_text(encoding="utf-8")) or {})
)


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
    assert {"asch_conformity/asch.yaml", "misinformation/removal.yaml"} <= set(SHIPPED)
    assert "opinion_dynamics/mixed_degroot.yaml" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenario_loads(name):
    scenario = load_scenario(SCENARIOS / name)
    assert scenario.name
    assert scenario.llm.model == "local/gemma3-270m"  # runs offline by default


def test_cross_national_files_match_the_generator():
    build = _load_script("cross_national/build.py")
    for condition in ("collaborate", "debate"):
        shipped = yaml.safe_load((SCENARIOS / f"cross_national/{condition}.yaml").read_text())
        assert shipped == build.build(6, condition)
        assert shipped["protocol"]["probe_topics"] == "discussed"
        assert shipped["protocol"]["grouping"] == "balanced"
        assert shipped["protocol"]["instruction"] == build.INSTRUCTIONS[condition]
    questions = yaml.safe_load(build.QUESTIONS.read_text(encoding="utf-8"))["questions"]
    every = build.pick_questions(questions, len(questions))
    assert sorted(q["id"] for q in every) == sorted(q["id"] for q in questions)


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("/", "_"), SCENARIOS / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_library_run(out_root: Path, capsys, names: list[str] = SHIPPED) -> None:
    run_all = _load_script("run_all.py")
    assert [p.relative_to(SCENARIOS).as_posix() for p in run_all.library()] == SHIPPED
    table = (out_root / run_all.SUMMARY).read_text(encoding="utf-8")
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [r[0].lstrip("| ") for r in rows] == names
    assert all(r[1] == "completed" for r in rows), table
    for row in rows:
        report = Path(row[4].rstrip(" |"))
        assert report.is_file() and report.stat().st_size > 0
        run_dir = report.parents[1]
        probes = pd.read_parquet(run_dir / "opinions.parquet")
        assert len(probes) and probes["ok"].all()
    assert "completed" in capsys.readouterr().out


@pytest.mark.slow  # about 50 s: every scenario of the library, whole
def test_whole_library_runs_with_the_fake_provider_and_reports(tmp_path, capsys):
    run_all = _load_script("run_all.py")
    code = run_all.main(["--model", "fake/default", "--out-root", str(tmp_path)])
    assert code == 0
    _check_library_run(tmp_path, capsys)


# The embedded-model library test runs a sample, one scenario per protocol mode (the whole
# library takes about 20 minutes on 2 cores; the fake-provider test above runs all of it).
# Broadcast is represented by a misinformation scenario: memory stream and interventions too.
EMBEDDED_SAMPLE = {
    "asch": "asch_conformity/asch.yaml",
    "broadcast": "misinformation/removal.yaml",
    "group": "cross_national/collaborate.yaml",
    "pairs": "personality_stability/low_levels.yaml",
}


def test_embedded_sample_covers_every_protocol_mode_of_the_library():
    modes = {load_scenario(SCENARIOS / name).protocol.mode for name in SHIPPED}
    assert set(EMBEDDED_SAMPLE) == modes
    for mode, name in EMBEDDED_SAMPLE.items():
        assert load_scenario(SCENARIOS / name).protocol.mode == mode


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(EMBEDDED_SAMPLE))
def test_library_sample_runs_on_the_embedded_model_quick(mode, tmp_path, capsys):
    """The README's library command on the real default model (``--quick``: 6 agents), for
    one scenario of each protocol mode."""
    run_all = _load_script("run_all.py")
    name = EMBEDDED_SAMPLE[mode]
    assert run_all.main(["--quick", "--only", name, "--out-root", str(tmp_path)]) == 0
    _check_library_run(tmp_path, capsys, [name])
    manifests = list(tmp_path.glob("*/*/manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text(encoding="utf-8"))
    assert manifest["model"] == "local/gemma3-270m"


def test_quick_settings_keep_interventions_and_asch_blocks():
    run_all = _load_script("run_all.py")
    quick = run_all.quick_overrides(load_scenario(SCENARIOS / "misinformation/correction.yaml"))
    assert quick == {"population.size": 6, "protocol.steps": 5}  # the last correction: day 5
    quick = run_all.quick_overrides(load_scenario(SCENARIOS / "asch_conformity/asch.yaml"))
    assert quick["protocol.steps"] == 5  # p = 0, 1, 3, 5, 7
    quick = run_all.quick_overrides(load_scenario(SCENARIOS / "opinion_exchange.yaml"))
    assert quick == {"population.size": 6, "protocol.steps": 2}


def test_a_failing_scenario_is_reported_and_the_rest_still_run(tmp_path, capsys, monkeypatch):
    run_all = _load_script("run_all.py")
    monkeypatch.setattr(run_all, "build_report", _broken_report)
    code = run_all.main(
        ["--model", "fake/default", "--quick", "--only", "personality_stability/*",
         "--out-root", str(tmp_path)]
    )  # fmt: skip
    assert code == 1
    table = (tmp_path / run_all.SUMMARY).read_text(encoding="utf-8")
    assert table.count("failed: RuntimeError: no report today") == 2
    assert len(list(tmp_path.glob("*/*/manifest.json"))) == 2  # both runs still happened


def _broken_report(run_dir: Path) -> Path:
    raise RuntimeError("no report today")


def test_misinformation_files_match_the_generator():
    build = _load_script("misinformation/build.py")
    for condition in build.CONDITIONS:
        shipped = yaml.safe_load((SCENARIOS / f"misinformation/{condition}.yaml").read_text())
        assert shipped == build.build(condition)
        assert shipped["interventions"][0]["step"] == build.RUMOUR_DAY
        assert load_scenario(SCENARIOS / f"misinformation/{condition}.yaml").trackers.belief


def test_dry_run_estimate_counts_only_the_probed_topics():
    from simworld.sweeps.plan import estimate_run

    path = SCENARIOS / "cross_national/collaborate.yaml"
    discussed = estimate_run(load_scenario(path))
    every = estimate_run(load_scenario(path, {"protocol.probe_topics": "all"}))
    # 20 agents, 6 steps: probes 1 + 2 * 5 + 1 = 12 topic probes per agent instead of 7 * 6
    assert every.calls - discussed.calls == 20 * (7 * 6 - 12)
