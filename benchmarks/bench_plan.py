"""Plan benchmark: the path model calls take, chosen before the first step, and its crossover.

A run knows from its scenario how many model calls a step makes
(``simworld.engine.model.planned_calls_per_step``); with ``SIMWORLD_LLM_WORKERS=auto`` (the
default) it starts the LLM worker processes while it is being built when that number reaches
``PLAN_MIN_CALLS_PER_STEP`` (``simworld/llm/workers.py``), and waits for them before its first
step (``SocialSimulation.prepare``). This benchmark measures both sides of that choice.

Every measurement is a fresh process (workers belong to a process, and their start-up is part
of what is measured): build the simulation (``build_s``: the plan starts the workers here),
wait for the chosen path (``prepare_s``), then time each step of a 2-step run. The scenario is
``bench_engine.scenario`` (broadcast on a small world, one post per agent-step, no probes, no
stance calls), fake provider at 100 ms, concurrency 64; the ideal step is
``ceil(agents / 64) × 0.1 s``. Paths: ``default`` (``auto``), ``in_process`` (``0``) and
``workers`` (``min(cores, 4)`` workers started from the plan whatever its size). Sizes and
paths are run in turn, twice, so that every path sees the same machine load; the load average
and a core-speed probe are recorded, because the host is shared. So is the CPU the steps
took, in this process (``steps_cpu_s``) and in each LLM worker process (``workers_cpu_s``, read
from ``/proc``): on a shared or small host the workers path is bound by its workers' CPU per
call, which the parent's own CPU does not show.

Run: ``.venv/bin/python benchmarks/bench_plan.py`` (writes ``benchmarks/results/plan.json``;
``benchmarks/summarize.py`` then writes its section of ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness  # benchmarks/, on the path when this script runs

RESULTS = Path(__file__).parent / "results" / "plan.json"
LATENCY_MS = 100
CONCURRENCY = 64
STEPS = 2
REPEATS = 2
SIZES = (25, 50, 100, 200, 400, 1000)
TARGETS = {100: 1.3, 1000: 1.15}
"""Agents -> the largest ratio of every step to the ideal, on the default path (issue 20)."""
CHILD_TIMEOUT_S = 600


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_one(agents: int) -> dict[str, Any]:
    """In this (fresh) process: build, prepare and step a simulation of ``agents`` agents."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_engine import core_speed_s, scenario

    from simworld import SocialSimulation
    from simworld.engine.model import planned_calls_per_step
    from simworld.llm.workers import WorkerPolicy, shared_pool
    from simworld.support.process import tune_gc

    tune_gc()  # as the simworld command does
    speed = core_speed_s()
    cpu0, started = time.process_time(), time.perf_counter()
    sc = scenario(agents, model=f"fake/default?latency_ms={LATENCY_MS}", concurrency=CONCURRENCY)
    policy = WorkerPolicy.resolve()
    sim = SocialSimulation.from_scenario(sc)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    sim.prepare()
    prepare_s = time.perf_counter() - started
    pool = shared_pool(policy.workers) if policy.workers else None
    pids = pool.pids if pool is not None and pool.started else []
    workers_cpu0 = [process_cpu_s(pid) for pid in pids]
    steps_cpu0, steps = time.process_time(), []
    for _ in range(STEPS):
        started = time.perf_counter()
        sim.step()
        steps.append(time.perf_counter() - started)
    steps_cpu_s = time.process_time() - steps_cpu0
    workers_cpu_s = [process_cpu_s(p) - c for p, c in zip(pids, workers_cpu0, strict=True)]
    sim.close()
    return {
        "agents": agents,
        "planned_calls_per_step": planned_calls_per_step(sc),
        "workers_started": bool(pool and pool.started),
        "calls_in_workers": pool.calls if pool else 0,
        "build_s": build_s,
        "prepare_s": prepare_s,
        "step_s": steps,
        "cpu_s": time.process_time() - cpu0,
        "steps_cpu_s": steps_cpu_s,
        "workers_cpu_s": workers_cpu_s,
        "core_speed_s": speed,
        "loadavg": os.getloadavg()[0],
    }


def run_child(agents: int, workers: str | None) -> dict[str, Any]:
    """:func:`measure_one` in a new process with ``SIMWORLD_LLM_WORKERS=workers`` (unset:
    the default)."""
    env = dict(os.environ)
    env.pop("SIMWORLD_LLM_WORKERS", None)
    if workers is not None:
        env["SIMWORLD_LLM_WORKERS"] = workers
    done = subprocess.run(
        [sys.executable, __file__, "--one", str(agents)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure every size and path, write the result file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", type=int, help="measure one size in this process (internal)")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one)))
        return
    from simworld.llm.workers import PLAN_MIN_CALLS_PER_STEP, WorkerPolicy

    auto = WorkerPolicy.resolve()
    paths: dict[str, str | None] = {"in_process": "0", "workers": str(auto.workers or 1)}
    load_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for agents in args.sizes:
            names = [*paths, *(["default"] if agents in TARGETS else [])]
            if repeat % 2:  # alternate which path goes first
                names.reverse()
            for name in names:
                row = run_child(agents, paths.get(name))
                row |= {"path": name, "repeat": repeat}
                row["ideal_step_s"] = math.ceil(agents / CONCURRENCY) * LATENCY_MS / 1000
                row["ratio_max"] = max(row["step_s"]) / row["ideal_step_s"]
                runs.append(row)
                print(json.dumps(row), flush=True)
    result = {
        "machine": {
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "loadavg": {"start": load_start, "end": os.getloadavg()},
        },
        "latency_ms": LATENCY_MS,
        "concurrency": CONCURRENCY,
        "steps": STEPS,
        "workers": auto.workers,
        "plan_min_calls_per_step": PLAN_MIN_CALLS_PER_STEP,
        "targets": {str(k): v for k, v in TARGETS.items()},
        "runs": runs,
    }
    harness.write_result(RESULTS, result)


if __name__ == "__main__":
    main()
