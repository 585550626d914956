"""The embedded-model benchmark's command (``benchmarks/bench_local.py``): ``--only`` runs the
parts it names, keeps the others from the saved file, and the page says which run gave
which part. Nothing is measured here: the parts' measurements are replaced."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[1]
SAVED = json.loads((ROOT / "benchmarks" / "results" / "local.json").read_text("utf-8"))
EARLIER = {"throughput": "aaa1111", "probes": "bbb2222", "costs": "ccc3333", "reuse": "ddd4444"}


@pytest.fixture
def bench(monkeypatch, tmp_path) -> ModuleType:
    """``bench_local`` writing into ``tmp_path``, its saved file the committed one with each
    part recorded in a commit of its own (:data:`EARLIER`)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = benchmark_module("bench_local")
    saved = copy.deepcopy(SAVED)
    saved["parts"] = {part: {"recorded_in": commit} for part, commit in EARLIER.items()}
    results = tmp_path / "local.json"
    results.write_text(json.dumps(saved), encoding="utf-8")
    monkeypatch.setattr(module, "RESULTS", results)
    monkeypatch.setattr(module, "SUMMARY", tmp_path / "local.md")
    return module


def _measured(monkeypatch, module: ModuleType) -> list[str]:
    """Replace every part's measurement by the saved numbers, marked; the parts measured."""
    ran: list[str] = []

    def part(name: str, value: Any) -> Any:
        def measure(*_: Any) -> Any:
            ran.append(name)
            return copy.deepcopy(value)

        return measure

    monkeypatch.setattr(module, "throughput", part("throughput", SAVED["throughput"]))
    monkeypatch.setattr(module, "profile_simworld", part("profile", SAVED["profile"]))
    probes = {**SAVED["probe_logprobs"], "probes": 99}  # a number the saved file has not
    monkeypatch.setattr(module, "probe_logprobs", part("probes", probes))
    monkeypatch.setattr(module, "determinism_costs", part("costs", SAVED["costs"]))
    monkeypatch.setattr(module, "prefix_reuse", part("reuse", SAVED["prefix_reuse"]))
    return ran


def test_only_runs_every_part_it_names_and_keeps_the_others(bench, monkeypatch, capsys):
    ran = _measured(monkeypatch, bench)
    monkeypatch.setattr(sys, "argv", ["bench_local.py", "--only", "probes", "--only", "costs"])
    bench.main()
    capsys.readouterr()
    assert ran == ["probes", "costs"]
    written = json.loads(bench.RESULTS.read_text("utf-8"))
    assert written["probe_logprobs"]["probes"] == 99
    for key in ("throughput", "profile", "prefix_reuse", "costs"):
        assert written[key] == SAVED[key], key
    parts = written["parts"]
    assert parts["throughput"] == {"recorded_in": "aaa1111"}
    assert parts["reuse"] == {"recorded_in": "ddd4444"}
    for part in ("probes", "costs"):
        assert parts[part]["host"]["commit"] == bench.harness.commit(), part
    page = bench.SUMMARY.read_text("utf-8")
    assert "- (a): recorded in commit aaa1111\n" in page
    assert "- (b): recorded in commit ddd4444\n" in page
    started = parts["probes"]["started"]
    assert parts["costs"]["started"] == started  # one run gave both
    for letter in ("c", "d"):
        line = next(line for line in page.splitlines() if line.startswith(f"- ({letter}): "))
        assert f"started {started}" in line and "run at commit" in line, line
    assert "99 probes with log-probabilities" in page


def test_a_run_of_every_part_is_one_sentence(bench, monkeypatch, capsys):
    ran = _measured(monkeypatch, bench)
    monkeypatch.setattr(sys, "argv", ["bench_local.py"])
    bench.main()
    capsys.readouterr()
    assert ran == ["throughput", "profile", "probes", "costs", "reuse"]
    page = bench.SUMMARY.read_text("utf-8")
    assert page.splitlines()[2].startswith("Numbers from one run of `benchmarks/bench_local.py`")
    assert "- (a): " not in page


def test_a_part_to_keep_that_the_file_lacks_is_one_line(bench, monkeypatch):
    ran = _measured(monkeypatch, bench)
    saved = json.loads(bench.RESULTS.read_text("utf-8"))
    del saved["costs"]
    bench.RESULTS.write_text(json.dumps(saved), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["bench_local.py", "--only", "probes"])
    with pytest.raises(SystemExit, match=r"local\.json: no saved costs to keep; run them too"):
        bench.main()
    assert ran == []
    assert json.loads(bench.RESULTS.read_text("utf-8")) == saved  # not rewritten


def test_another_hosts_run_goes_to_its_own_file_and_the_page_lists_it(bench, monkeypatch, capsys):
    _measured(monkeypatch, bench)
    kept = bench.RESULTS.read_text("utf-8")
    other = bench.RESULTS.parent / "local.other-cpu.json"
    monkeypatch.setattr(sys, "argv", ["bench_local.py", "--only", "probes", "--out", str(other)])
    with pytest.raises(SystemExit, match=r"local\.other-cpu\.json: no saved costs, reuse, "):
        bench.main()  # keeps parts from its own file, which does not exist yet
    monkeypatch.setattr(sys, "argv", ["bench_local.py", "--out", str(other)])
    bench.main()
    capsys.readouterr()
    assert bench.RESULTS.read_text("utf-8") == kept  # the main host's file is untouched
    written = json.loads(other.read_text("utf-8"))
    assert written["probe_logprobs"]["probes"] == 99
    page = bench.SUMMARY.read_text("utf-8")
    assert "99 probes with log-probabilities" not in page  # the page is the main file's
    section = page.split("## Other hosts\n", 1)[1].split("## Notes", 1)[0]
    named = bench.host_name(bench.host())  # this machine's, as the run recorded it
    row = next(line for line in section.splitlines() if line.startswith(f"| {named}; "))
    costs = SAVED["costs"]
    assert f"| {bench.harness.commit()} | {SAVED['throughput']['ratio']} | " in row
    assert row.endswith(f"| {costs['one_thread_vs_plain']}x |")
    bench.RESULTS.unlink()
    monkeypatch.setattr(sys, "argv", ["bench_local.py", "--summary-only"])
    bench.main()
    assert "## Other hosts" in page and bench.SUMMARY.read_text("utf-8") == page  # not rewritten


def test_the_page_is_written_from_the_result_files(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = benchmark_module("bench_local")
    others = module.other_hosts(module.RESULTS)
    assert others  # the AVX2-only EPYC's run
    page = module.summary(SAVED, others)
    assert module.SUMMARY.read_text("utf-8") == page
    for other in others:
        assert f"| {module.host_name(other['parts']['throughput']['host'])}; " in page
