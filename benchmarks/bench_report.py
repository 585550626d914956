"""Report benchmark: a comparison report over 20 runs of the shipped opinion-exchange scenario.

Run: ``.venv/bin/python benchmarks/bench_report.py`` (writes ``benchmarks/results/report.json``,
then ``docs/benchmarks-report.md`` and its figure ``docs/images/bench-report.png`` from that
file). The 20 runs (seeds 0-19, fake provider, two local workers) are made once and not
timed; then ``simworld report SWEEP_DIR`` is timed as a user runs it, in a fresh process
(imports included), ``REPEATS`` times into fresh output directories. Target: under 30 s on
2 cores. The reports of the repeats must be byte-identical (reports are deterministic).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import matplotlib

matplotlib.use("Agg")

import harness  # benchmarks/, on the path when this script runs
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "opinion_exchange.yaml"
RESULTS = Path(__file__).parent / "results" / "report.json"
DOC = ROOT / "docs" / "benchmarks-report.md"
FIGURE = ROOT / "docs" / "images" / "bench-report.png"
RUNS = 20
REPEATS = 3
TARGET_S = 30.0
SIMWORLD = [sys.executable, "-m", "simworld.cli"]


def make_sweep(out: Path) -> float:
    """Run the 20 runs (not timed as part of the report); return the sweep's wall time."""
    started = time.perf_counter()
    cmd = [*SIMWORLD, "sweep", str(SCENARIO), "--grid", "llm.model=fake/default",
           "--seeds", f"0-{RUNS - 1}", "--out", str(out), "--workers", "2", "--quiet"]  # fmt: skip
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _env() -> dict[str, str]:
    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def timed_report(sweep: Path, out: Path) -> float:
    """Wall time of ``simworld report SWEEP --out OUT`` in a fresh process."""
    started = time.perf_counter()
    cmd = [*SIMWORLD, "report", str(sweep), "--out", str(out)]
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure() -> dict[str, Any]:
    """Make the runs, time the reports, check they are identical."""
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        sweep = Path(tmp) / "sweep"
        sweep_s = make_sweep(sweep)
        times = [timed_report(sweep, Path(tmp) / f"report{i}") for i in range(REPEATS)]
        pages = {(Path(tmp) / f"report{i}" / "report.html").read_bytes() for i in range(REPEATS)}
        summary = (Path(tmp) / "report0" / "summary.csv").read_text(encoding="utf-8")
        rows = summary.count("\n") - 1
    return {
        "scenario": SCENARIO.relative_to(ROOT).as_posix(),
        "runs": RUNS,
        "repeats": REPEATS,
        "report_s": [round(t, 3) for t in times],
        "median_s": round(median(times), 3),
        "target_s": TARGET_S,
        "met": median(times) < TARGET_S,
        "identical": len(pages) == 1,
        "summary_rows": rows,
        "sweep_s": round(sweep_s, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def render(result: dict[str, Any]) -> None:
    """``docs/benchmarks-report.md`` and its figure, from the result file's numbers."""
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = [f"repeat {i + 1}" for i in range(len(result["report_s"]))]
    ax.barh(labels, result["report_s"], color="C0")
    ax.axvline(result["target_s"], color="C3", linestyle="--", label=f"target {TARGET_S:.0f} s")
    ax.set_xlabel("wall time of simworld report (s)")
    ax.set_ylabel("repeat (fresh process)")
    ax.set_title(f"Comparison report over {result['runs']} runs")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    harness.save_figure(fig, FIGURE)
    verdict = "met" if result["met"] else "**missed**"
    times = ", ".join(f"{t:.1f}" for t in result["report_s"])
    DOC.write_text(
        f"""# Benchmark: comparison report over {result["runs"]} runs

Written by `benchmarks/bench_report.py` from `benchmarks/results/report.json`; do not edit by
hand. Run it with `.venv/bin/python benchmarks/bench_report.py`.

`simworld report SWEEP_DIR` over a sweep of {result["runs"]} runs of the shipped
`{result["scenario"]}` (seeds 0-{result["runs"] - 1}, fake provider), timed as a user runs
it: a fresh process, imports included, into a fresh output directory.

| quantity | value |
| --- | --- |
| report wall time, median of {result["repeats"]} | {result["median_s"]:.1f} s |
| each repeat | {times} s |
| target | < {result["target_s"]:.0f} s on 2 cores: {verdict} |
| repeats byte-identical | {result["identical"]} |
| summary rows written | {result["summary_rows"]} |
| making the runs (not timed above) | {result["sweep_s"]:.0f} s |
| machine | {result["cpus"]} CPUs, {result["machine"]}, Python {result["python"]} |

![report wall time per repeat](images/bench-report.png)
""",
        encoding="utf-8",
    )


def main() -> None:
    """Measure (unless ``--render-only``), write the result file, render the page."""
    harness.main(__doc__.splitlines()[0], RESULTS, measure, render)


if __name__ == "__main__":
    main()
