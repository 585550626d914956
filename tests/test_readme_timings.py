"""The README's run times are the benchmark result files' (``benchmarks/timings.py``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _timings():
    spec = importlib.util.spec_from_file_location("timings", ROOT / "benchmarks" / "timings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


timings = _timings()


def test_the_readme_quotes_the_result_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert timings.render_readme(text, timings.readme_sentences()) == text


def test_both_commands_have_a_timing_from_a_result_file():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = {m.group("name"): m.group("body") for m in timings.MARKER.finditer(text)}
    assert set(found) == {"main-job", "tests"}
    assert timings.MAIN_JOB.is_file() and timings.TESTS.is_file()
    assert all("not been benchmarked" not in body for body in found.values())


def test_a_changed_result_changes_the_sentence():
    result = json.loads(timings.MAIN_JOB.read_text(encoding="utf-8"))
    main = result["runs"].get("batched") or result["runs"]["serial"]
    before = timings.main_job_sentence(result)
    main["process_time_s"] += 600
    assert timings.main_job_sentence(result) != before
    tests = json.loads(timings.TESTS.read_text(encoding="utf-8"))
    before = timings.tests_sentence(tests)
    tests["phases"]["slow"]["seconds"] += 600
    assert timings.tests_sentence(tests) != before


@pytest.mark.parametrize(
    ("seconds", "text"), [(10, "under a minute"), (50, "about 1 min"), (200, "about 3 min")]
)
def test_minutes_are_rounded(seconds, text):
    assert timings.about(seconds) == text


def test_a_missing_marker_is_an_error():
    with pytest.raises(ValueError, match="markers"):
        timings.render_readme("no markers here", {"main-job": "x", "tests": "y"})


def test_the_pages_are_written_from_the_result_files():
    main_job = json.loads(timings.MAIN_JOB.read_text(encoding="utf-8"))
    page = (ROOT / "docs" / "benchmarks-main-job.md").read_text(encoding="utf-8")
    assert page == timings.main_job_page(main_job)
    tests = json.loads(timings.TESTS.read_text(encoding="utf-8"))
    assert timings.TESTS_PAGE.read_text(encoding="utf-8") == timings.tests_page(tests)
