"""Test-suite benchmark: how long the README's test command takes after the install.

Run: ``.venv/bin/python benchmarks/bench_tests.py`` (writes ``benchmarks/results/tests.json``,
then ``docs/benchmarks-tests.md`` and the README's timing sentence through
``benchmarks/timings.py``).

It runs, in this checkout and with this venv, what ``bash tests/run.sh`` runs once the venv
exists: ``ruff check .`` and ``ruff format --check .``, ``mypy`` (the package and the
benchmark scripts, as ``pyproject.toml`` configures it, from an empty cache), then pytest with
``--durations=0``, split in two sessions, ``-m "not slow"`` (what a developer runs often)
and ``-m slow``. Each phase's wall time, its test counts and the slowest tests (from
pytest's JUnit XML) go to the result file. Arguments after ``--`` select tests
(``-- tests/test_gateway.py``) to check the script cheaply; the selection is recorded and
the README then says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import harness  # benchmarks/, on the path when this script runs

sys.path.insert(0, str(Path(__file__).parent))
from bench_main_job import host

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "tests.json"
BIN = Path(sys.executable).parent
SLOWEST = 30


def _run(command: list[str]) -> tuple[float, int]:
    """Run ``command`` in the repository (output passed through); seconds and exit code."""
    started = time.perf_counter()
    code = subprocess.run(command, cwd=ROOT).returncode
    return time.perf_counter() - started, code


def junit(path: Path) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Counts (tests, failures, skipped) and every test's duration from a JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for suite in suites:
        counts["tests"] += int(suite.get("tests", 0))
        counts["failures"] += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        counts["skipped"] += int(suite.get("skipped", 0))
    cases = [
        {
            "name": f"{c.get('classname', '')}::{c.get('name', '')}",
            "seconds": float(c.get("time", 0)),
        }
        for c in root.iter("testcase")
    ]
    return counts, cases


def pytest_phase(marker: str, selection: list[str], folder: Path) -> dict[str, Any]:
    """One pytest session over the tests with (or without) the ``slow`` marker."""
    report = folder / f"{marker.replace(' ', '_')}.xml"
    command = [
        *(str(BIN / "pytest"), "-m", marker, "--durations=0", "-p", "no:cacheprovider"),
        *("--basetemp", str(folder / "pt"), "--junitxml", str(report), *selection),
    ]
    seconds, code = _run(command)
    shown = ["pytest", "-m", f'"{marker}"', *selection]
    phase: dict[str, Any] = {"command": " ".join(shown), "seconds": round(seconds, 1)}
    phase["exit_code"] = code
    if report.is_file():
        counts, cases = junit(report)
        phase.update(counts)
        phase["cases"] = cases
    return phase


def main() -> None:
    """Time the phases; write the result, the page and the README sentence."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("selection", nargs="*", help="tests to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="result file")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "selection": args.selection,
        "host": host(),
        "loadavg_start": harness.loadavg(),
        "phases": {},
    }
    phases = result["phases"]
    check, code_check = _run([str(BIN / "ruff"), "check", "."])
    fmt, code_fmt = _run([str(BIN / "ruff"), "format", "--check", "."])
    phases["ruff"] = {
        "command": "ruff check . && ruff format --check .",
        "seconds": round(check + fmt, 1),
        "exit_code": code_check or code_fmt,
    }
    with tempfile.TemporaryDirectory(prefix="simworld-bench-tests-") as tmp:
        # from an empty cache, as on a fresh clone (a warm .mypy_cache takes about a second)
        typed, code_typed = _run([str(BIN / "mypy"), "--cache-dir", str(Path(tmp) / "mypy")])
        phases["mypy"] = {"command": "mypy", "seconds": round(typed, 1), "exit_code": code_typed}
        phases["fast"] = pytest_phase("not slow", args.selection, Path(tmp))
        phases["slow"] = pytest_phase("slow", args.selection, Path(tmp))
    result["loadavg_end"] = harness.loadavg()
    cases = [c for p in phases.values() for c in p.pop("cases", [])]
    result["slowest"] = sorted(cases, key=lambda c: -c["seconds"])[:SLOWEST]
    # pytest exits 5 when a session selects no test (a selection without slow tests)
    failed = {k: p["exit_code"] for k, p in phases.items() if p["exit_code"] not in (0, 5)}
    result["passed"] = not failed
    harness.write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "slowest"}, indent=2))
    if failed:
        raise SystemExit(f"failed phases: {failed}; the README's timings are left as they are")
    if args.out == RESULTS:
        import timings

        timings.main()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
