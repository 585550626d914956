"""The benchmarks' shared command (``benchmarks/harness.py``): the page comes from the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import benchmark_module

from simworld.config.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]

harness = benchmark_module("harness")


def _run(monkeypatch, results: Path, measured: dict[str, Any], *argv: str) -> list[Any]:
    rendered: list[Any] = []
    monkeypatch.setattr(sys, "argv", ["bench_x.py", *argv])
    harness.main("x", results, lambda: measured, rendered.append)
    return rendered


def test_the_page_is_rendered_from_the_written_file(monkeypatch, tmp_path, capsys):
    results = tmp_path / "results" / "x.json"
    rendered = _run(monkeypatch, results, {"load": (0.5, 1.0), "n": 3})
    text = results.read_text(encoding="utf-8")
    assert text == json.dumps({"load": [0.5, 1.0], "n": 3}, indent=2) + "\n"
    # what the file holds (a list), not the measured tuple
    assert rendered == [{"load": [0.5, 1.0], "n": 3}]
    assert capsys.readouterr().out == text + "\n"


def test_render_only_does_not_measure(monkeypatch, tmp_path):
    results = tmp_path / "x.json"
    harness.write_result(results, {"n": 1})

    def measure() -> dict[str, Any]:
        raise AssertionError("measured")

    rendered: list[Any] = []
    monkeypatch.setattr(sys, "argv", ["bench_x.py", "--render-only"])
    harness.main("x", results, measure, rendered.append)
    assert rendered == [{"n": 1}]
    assert harness.read_result(results) == {"n": 1}


def test_render_only_without_a_file_fails(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError):
        _run(monkeypatch, tmp_path / "missing.json", {"n": 1}, "--render-only")


def test_the_scenario_is_one_topic_on_a_complete_graph(tmp_path):
    path = harness.one_topic_scenario(
        tmp_path / "s.yaml",
        name="b",
        library=ROOT / "agents" / "global_panel.yaml",
        agents=4,
        protocol={"steps": 2, "mode": "broadcast"},
        llm={"model": "fake/default"},
    )
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(data) == ["name", "seed", "population", "network", "topics", "protocol", "llm"]
    assert data["population"]["size"] == 4 and data["network"] == {"generator": "complete"}
    assert [t["id"] for t in data["topics"]] == ["remote_work"]
    assert data["protocol"] == {"steps": 2, "mode": "broadcast"}
    assert load_scenario(path).population.size == 4  # a valid scenario


def _plan_run(path: str, prepare_s: float, step_s: list[float]) -> dict[str, Any]:
    return {"agents": 100, "path": path, "prepare_s": prepare_s, "step_s": step_s}


def test_the_workers_repay_their_wait_after_the_steps_their_faster_steps_take(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    summarize = benchmark_module("summarize")
    runs = [
        _plan_run("in_process", 0.2, [0.30, 0.30]),
        _plan_run("in_process", 0.2, [0.30, 0.40]),  # median step of the path: 0.325 s
        _plan_run("workers", 2.7, [0.25, 0.25]),
        _plan_run("workers", 2.7, [0.25, 0.25]),
    ]
    # 2.5 s more wait, 0.075 s less per step: repaid after 34 steps (33.3 rounded up)
    assert summarize.repay_steps({"runs": runs}, 100) == 34
    slower = [*runs[:2], _plan_run("workers", 2.7, [0.35, 0.35])]
    assert summarize.repay_steps({"runs": slower}, 100) is None


def test_local_changes_leave_out_what_benchmarks_write(tmp_path):
    files = ["simworld/x.py", "benchmarks/results/x.json", "docs/benchmarks-x.md", "README.md"]
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a\n", encoding="utf-8")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    assert harness.local_changes(tmp_path) == []
    for name in files:  # an earlier run's result file, page and README figures, and code
        (tmp_path / name).write_text("b\n", encoding="utf-8")
    assert harness.local_changes(tmp_path) == ["simworld/x.py"]
