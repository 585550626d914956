"""The README's run times are the benchmark result files' (``benchmarks/timings.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[1]

timings = benchmark_module("timings")


def test_the_readme_quotes_the_result_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert timings.render_readme(text, timings.readme_sentences()) == text


def test_both_commands_have_a_timing_marker():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = {m.group("name"): m.group("body") for m in timings.MARKER.finditer(text)}
    assert set(found) == {"main-job", "tests"}
    for name, path in (("main-job", timings.MAIN_JOB), ("tests", timings.TESTS)):
        # a sentence with numbers exactly when there is a result file
        assert ("not been benchmarked" in found[name]) == (not path.is_file())


MAIN_JOB = {
    "scenario_steps": 3,
    "quick": False,
    "host": {"cores": 2, "cpu_model": "Some CPU"},
    "speedup": 3.5,
    "runs": {
        "default": {"model": "local/gemma3-270m", "process_time_s": 200.0},
        "serial": {"model": "local/gemma3-270m?answers=sampled", "process_time_s": 700.0},
    },
}
TESTS = {
    "selection": [],
    "host": {"cores": 2},
    "phases": {"ruff": {"seconds": 2.0}, "fast": {"seconds": 150.0}, "slow": {"seconds": 900.0}},
}


def test_the_sentences_follow_the_numbers():
    text = timings.main_job_sentence(MAIN_JOB)
    assert "takes about 3.5 min on 2 cores (Some CPU), `local/gemma3-270m`" in text
    assert "`local/gemma3-270m?answers=sampled`, about 12 min, 3.5x" in text
    assert "commit" not in text
    as_filed = {"model": "local/gemma3-270m", "process_time_s": 900.0, "commit": "1373cef"}
    with_old = {
        **MAIN_JOB,
        "speedup_as_filed": 4.5,
        "runs": {**MAIN_JOB["runs"], "as_filed": as_filed},
    }
    assert "set against (commit 1373cef), about 15 min, 4.5x" in timings.main_job_sentence(with_old)
    other = {
        "host": {"cores": 2, "cpu_model": "Other CPU", "flags": ["avx2"], "commit": "abc1234"},
        "runs": {"default": {"process_time_s": 330.0, "wall_time_s": 325.0}},
        "speedup_as_filed": 1.6,
        "targets": {"wall_time_s": 240.0},
    }
    assert (
        "; on 2 cores (Other CPU) with AVX2 at most the default run takes about 5.5 min "
        "(as filed 1.6x) ("
    ) in timings.main_job_sentence(with_old, [other])
    section = timings.other_hosts_section([other])
    assert "| 2 cores (Other CPU) with AVX2 at most; flags avx2 | abc1234 | 325.0 |" in section
    assert section.rstrip().endswith("| - | - | 1.6x | **missed** |")
    assert timings.other_hosts_section([]) == ""
    quick = timings.main_job_sentence({**MAIN_JOB, "quick": True})
    assert "one of its 3 steps" in quick and "has not been benchmarked yet" in quick
    assert timings.tests_sentence(TESTS).startswith(
        "After the install it takes about 18 min on 2 cores (CPU model not recorded)"
    )
    assert "selection" in timings.tests_sentence({**TESTS, "selection": ["tests/test_x.py"]})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (10, "under a minute"),
        (50, "about 1 min"),
        (200, "about 3.5 min"),
        (170, "about 3 min"),
        (599, "about 10 min"),
        (1400, "about 23 min"),
    ],
)
def test_minutes_are_rounded(seconds, text):
    assert timings.about(seconds) == text


def test_a_missing_marker_is_an_error():
    with pytest.raises(ValueError, match="markers"):
        timings.render_readme("no markers here", {"main-job": "x", "tests": "y"})


@pytest.mark.parametrize(
    ("result", "page", "render"),
    [
        (
            timings.MAIN_JOB,
            ROOT / "docs" / "benchmarks-main-job.md",
            lambda data: timings.main_job_page(data, timings.other_main_jobs()),
        ),
        (timings.TESTS, timings.TESTS_PAGE, timings.tests_page),
    ],
)
def test_the_pages_are_written_from_the_result_files(result, page, render):
    assert result.is_file() == page.is_file()
    if result.is_file():
        data = json.loads(result.read_text(encoding="utf-8"))
        assert page.read_text(encoding="utf-8") == render(data)


def test_the_benchmarks_summary_quotes_the_main_job_and_local_results(monkeypatch):
    """``docs/benchmarks.md`` (``benchmarks/summarize.py``) says what the result file says."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # summarize imports timings
    summarize = benchmark_module("summarize")
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert f"- Main job: {summarize.main_job_line()}\n" in text
    local = json.loads((ROOT / "benchmarks" / "results" / "local.json").read_text(encoding="utf-8"))
    host = local["parts"]["throughput"]["host"]  # (a) may have run on another host
    assert f"prompts on {timings.host_name(host)}: {local['throughput']['ratio']:.3f} " in text
    others = timings.other_hosts(ROOT / "benchmarks" / "results" / "local.json")
    assert others  # the AVX2-only EPYC's run
    for other in others:
        named = timings.host_name(other["parts"]["throughput"]["host"])
        assert f"{other['throughput']['ratio']:.3f} on {named} (" in text


def test_the_main_job_sides_are_labelled_as_the_script_labels_them():
    # "default" is the default model string, "one_engine" it on one engine, one call at a
    # time, "serial" that sampling every answer, "as_filed" the default model string on the
    # commit the targets were set against
    one_engine, serial = "?engines=1&slots=1", "?engines=1&answers=sampled&slots=1"
    main = json.loads(timings.MAIN_JOB.read_text(encoding="utf-8"))
    for result in [main, *timings.other_main_jobs()]:  # another host's run: a full one
        runs = result["runs"]
        assert runs and set(runs) <= {"default", "one_engine", "serial", "as_filed"}
        assert "as_filed" not in runs or runs["as_filed"]["model"] == runs["default"]["model"]
        assert "default" not in runs or "?" not in runs["default"]["model"]
        assert "one_engine" not in runs or runs["one_engine"]["model"].endswith(one_engine)
        assert "serial" not in runs or runs["serial"]["model"].endswith(serial)
    assert all("default" in r["runs"] and not r["quick"] for r in timings.other_main_jobs())
