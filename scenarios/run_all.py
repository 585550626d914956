"""Run every scenario of the library end to end and write a report for each.

Usage (from the repository root)::

    .venv/bin/python scenarios/run_all.py                        # embedded model, full size
    .venv/bin/python scenarios/run_all.py --model fake/default   # the fake provider (seconds)
    .venv/bin/python scenarios/run_all.py --quick                # 6 agents, few steps
    .venv/bin/python scenarios/run_all.py --only 'misinformation/*'

Each scenario runs into ``<out-root>/<scenario name>/<run-id>/`` (as ``simworld run`` does),
then gets its tracker frames and ``report/report.html``. A summary table (scenario, status,
calls, time, report) is printed and written to ``<out-root>/library_summary.md``. A scenario
that fails is reported with its error and the others still run; the exit code is 1 if any
failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from simworld.analysis.report import build_report
from simworld.config.scenario import Scenario, load_scenario
from simworld.errors import ConfigError
from simworld.runs.run import run_scenario
from simworld.support.process import tune_gc

HERE = Path(__file__).resolve().parent
QUICK_AGENTS = 6
QUICK_STEPS = 2
SUMMARY = "library_summary.md"


def library(root: Path = HERE) -> list[Path]:
    """Every scenario file under ``root`` (YAML files with a ``protocol`` section), sorted."""
    found = []
    for path in sorted(root.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "protocol" in data:
            found.append(path)
    return found


def quick_overrides(scenario: Scenario) -> dict[str, Any]:
    """Settings that shrink a scenario to a few minutes on the embedded model.

    At most :data:`QUICK_AGENTS` agents and :data:`QUICK_STEPS` steps, but never fewer steps
    than the last scheduled intervention or personality inventory needs, nor fewer than the
    Asch design's peer counts.
    """
    bfi = scenario.trackers.bfi
    steps = max(
        [
            QUICK_STEPS,
            *(item.step for item in scenario.interventions),
            *(bfi.steps if bfi is not None else []),
        ]
    )
    if scenario.protocol.asch is not None:
        steps = max(steps, len(scenario.protocol.asch.peers))
    return {
        "population.size": min(scenario.population.size, QUICK_AGENTS),
        "protocol.steps": min(scenario.protocol.steps, steps),
    }


def run_one(
    path: Path, *, model: str | None, quick: bool, out_root: Path, cache: Path | None
) -> dict[str, Any]:
    """Run one scenario and build its report; a failure is returned, not raised."""
    name = path.relative_to(HERE).as_posix()
    started = time.perf_counter()
    try:
        overrides: dict[str, Any] = {} if model is None else {"llm.model": model}
        if quick:
            overrides |= quick_overrides(load_scenario(path, overrides))
        result = run_scenario(
            path, overrides=overrides, out_root=out_root, cache_path=cache, progress=True
        )
        report = build_report(result.run_dir)
    except Exception as exc:  # reported in the summary; the exit code says so
        kind = "" if isinstance(exc, ConfigError) else f"{type(exc).__name__}: "
        return {"scenario": name, "status": f"failed: {kind}{exc}", "seconds": 0.0}
    return {
        "scenario": name,
        "status": result.status,
        "calls": result.accounting.calls,
        "seconds": round(time.perf_counter() - started, 1),
        "report": str(report),
    }


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = ["| scenario | status | calls | seconds | report |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['status']} | {r.get('calls', '')} | {r['seconds']} "
            f"| {r.get('report', '')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the library; 0 when every scenario completed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="litellm model string (default: each file's model)")
    parser.add_argument("--quick", action="store_true", help="6 agents and a few steps each")
    parser.add_argument("--only", default="*", help="glob over paths under scenarios/")
    parser.add_argument("--out-root", type=Path, default=Path("outputs"), help="run root")
    parser.add_argument("--cache", type=Path, help="record/replay cache (default per run root)")
    args = parser.parse_args(argv)
    chosen = [p for p in library() if fnmatch.fnmatch(p.relative_to(HERE).as_posix(), args.only)]
    if not chosen:
        print(f"no scenario matches {args.only!r}", file=sys.stderr)
        return 2
    rows = []
    for i, path in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {path.relative_to(HERE)}", flush=True)
        rows.append(
            run_one(
                path, model=args.model, quick=args.quick, out_root=args.out_root, cache=args.cache
            )
        )
    table = summary_table(rows)
    args.out_root.mkdir(parents=True, exist_ok=True)
    (args.out_root / SUMMARY).write_text(table, encoding="utf-8")
    print(table)
    return 0 if all(r["status"] == "completed" for r in rows) else 1


if __name__ == "__main__":
    tune_gc()  # a process of its own, like the simworld command
    sys.exit(main())
