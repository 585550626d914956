"""Engine benchmark: step wall time vs. the ideal at 100 ms latency, and per-agent-step cost.

Each is measured for the paths a call can take: litellm in LLM worker processes (what a
large run uses, :mod:`simworld.llm.workers`; started and warm before the measurements, their
start-up is reported apart), also with two workers per core beside the default's one,
litellm in this process (``SIMWORLD_LLM_WORKERS=0``, and runs planned under the threshold), and an
engine-only backend that just sleeps. The paths' simulations are stepped in turn, so all see
the same machine load. Also this process's CPU per call.

Run: ``.venv/bin/python benchmarks/bench_engine.py`` (writes ``benchmarks/results/engine.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness  # benchmarks/, on the path when this script runs

from simworld import SocialSimulation
from simworld.config.scenario import LLMConfig, Scenario
from simworld.llm.gateway import Gateway
from simworld.llm.litellm_backend import (
    CallIdentity,
    Completion,
    LanguageModel,
    LiteLLMModel,
    LLMRequest,
)
from simworld.llm.workers import WorkerPolicy, shared_pool
from simworld.support.process import tune_gc

RESULTS = Path(__file__).parent / "results" / "engine.json"
LATENCY_MS = 100
CONCURRENCY = 64
LATENCY_AGENTS = 1000
LATENCY_STEPS = 4
CPU_CALLS = 3000
CPU_WARMUP_CALLS = 300
CPU_MESSAGES = (
    {"role": "system", "content": "You are Aiko, 34, from Japan. " * 20},
    {"role": "user", "content": "Topic: Cities should ban cars from their centres.\n" * 10},
)
SCALING_AGENTS = (100, 1000, 10_000)
TARGET_RATIO = 1.15
SPEED_LOOP = 10**7
SPEED_REPEATS = 5
TARGET_MS_PER_AGENT_STEP = 2.0


def scenario(n: int, *, model: str, concurrency: int) -> Scenario:
    """A broadcast scenario of ``n`` synthetic agents on a small world, no probes."""
    return Scenario.model_validate(
        {
            "name": "bench",
            "seed": 1,
            "population": {
                "size": n,
                "distributions": {
                    "nationality": {"Japan": 1, "France": 1, "Brazil": 1, "Kenya": 1},
                    "opinions": {"t": {str(v): 1 for v in range(1, 6)}},
                },
            },
            "network": {"generator": "watts_strogatz", "k": 6, "p": 0.1},
            "topics": [
                {
                    "id": "t",
                    "statement": "Cities should ban cars from their centres.",
                    "scale": {
                        "type": "likert",
                        "labels": [
                            "Strongly disagree",
                            "Disagree",
                            "Neutral",
                            "Agree",
                            "Strongly agree",
                        ],
                    },
                }
            ],
            "protocol": {"steps": 3, "mode": "broadcast", "probe_at": []},
            "llm": {"model": model, "concurrency": concurrency, "cache": "off"},
            # one call per agent-step: the ideal below counts posts only
            "trackers": {"stance": False},
        }
    )


class SleepingModel(LanguageModel):
    """A backend that only waits: isolates the engine's own overhead from litellm's."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s

    async def complete(
        self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
    ) -> Completion:
        """Wait, then answer a fixed sentence."""
        await asyncio.sleep(self.latency_s)
        return Completion(text="For me it is Agree.", prompt_tokens=100, completion_tokens=5)


def time_paths(
    backends: dict[str, Callable[[], LanguageModel]],
    n: int,
    *,
    model: str,
    concurrency: int,
    steps: int,
) -> dict[str, list[float]]:
    """Wall time of each of ``steps`` steps of one simulation per backend (construction and
    :meth:`SocialSimulation.prepare` excluded), the simulations stepped in turn so that every
    path sees the same machine."""
    sims = {}
    for name, make in backends.items():
        sc = scenario(n, model=model, concurrency=concurrency)
        sims[name] = SocialSimulation.from_scenario(sc, backend=make())
        sims[name].prepare()  # the path chosen from the plan, ready (bench_plan.py times it)
    times: dict[str, list[float]] = {name: [] for name in sims}
    for _ in range(steps):
        for name, sim in sims.items():
            started = time.perf_counter()
            sim.step()
            times[name].append(time.perf_counter() - started)
    for sim in sims.values():
        sim.close()
    return times


def time_steps(
    n: int, *, model: str, concurrency: int, steps: int, backend: LanguageModel | None = None
) -> list[float]:
    """:func:`time_paths` of one backend, by default the real one (:class:`LiteLLMModel`
    with its default worker policy)."""
    make = (lambda: backend) if backend is not None else LiteLLMModel
    return time_paths({"one": make}, n, model=model, concurrency=concurrency, steps=steps)["one"]


def cpu_per_call_ms(backend: LanguageModel, calls: int = CPU_CALLS) -> dict[str, float]:
    """This process's CPU per call (ms) for zero-latency fake calls through a gateway, the
    part of it the garbage collector took, and the collector's longest pause."""
    config = LLMConfig(model="fake/default", concurrency=CONCURRENCY, cache="off")
    gateway = Gateway(backend, config=config, cache=None)

    def request(i: int) -> LLMRequest:
        return LLMRequest(
            model=config.model,
            messages=CPU_MESSAGES,
            identity=CallIdentity(seed=1, agent=f"a{i}", step=1, purpose="post"),
            temperature=config.temperature,
            max_tokens=config.max_tokens,
        )

    async def run(first: int, count: int) -> None:
        await asyncio.gather(*(gateway.call(request(i)) for i in range(first, first + count)))

    collected = longest = 0.0
    collecting_since = 0.0

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal collected, longest, collecting_since
        if phase == "start":
            collecting_since = time.process_time()
        else:
            pause = time.process_time() - collecting_since
            collected += pause
            longest = max(longest, pause)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(run(0, CPU_WARMUP_CALLS))
    gc.callbacks.append(on_gc)
    started = time.process_time()
    loop.run_until_complete(run(CPU_WARMUP_CALLS, calls))
    used = time.process_time() - started
    gc.callbacks.remove(on_gc)
    loop.close()
    return {
        "cpu_ms": used / calls * 1e3,
        "gc_ms": collected / calls * 1e3,
        "gc_longest_pause_ms": longest * 1e3,
    }


def core_speed_s() -> float:
    """Best of :data:`SPEED_REPEATS` timings of a fixed pure-Python loop: how much of a core
    this process gets (the load average does not show a busy host's other guests)."""
    timings = []
    for _ in range(SPEED_REPEATS):
        started = time.perf_counter()
        sum(range(SPEED_LOOP))
        timings.append(time.perf_counter() - started)
    return min(timings)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def path_result(step_s: list[float], ideal: float) -> dict[str, Any]:
    """Step times and their ratios to the ideal step."""
    return {
        "step_s": step_s,
        "ratio_best": min(step_s) / ideal,
        "ratio_median": statistics.median(step_s) / ideal,
    }


def start_workers(workers: int) -> float:
    """Start the shared LLM worker processes and wait for them; seconds it took."""
    started = time.perf_counter()
    if workers and not asyncio.run(shared_pool(workers).wait_ready()):
        raise RuntimeError("the LLM worker processes did not start")
    return time.perf_counter() - started


def main() -> None:
    """Run the measurements and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 10,000-agent size")
    args = parser.parse_args()
    load_start, speed_start = os.getloadavg(), core_speed_s()
    time_steps(50, model="fake/default", concurrency=CONCURRENCY, steps=1)  # warm-up
    cpu_default_gc = cpu_per_call_ms(LiteLLMModel(workers=0))
    tune_gc()  # as the simworld command and every worker process do
    frozen = gc.get_freeze_count()
    auto = WorkerPolicy.resolve()
    workers, cores = auto.workers, os.cpu_count() or 1
    worker_start_s = start_workers(workers)
    ideal = math.ceil(LATENCY_AGENTS / CONCURRENCY) * LATENCY_MS / 1000
    backends: dict[str, Callable[[], LanguageModel]] = {}
    if workers:
        backends["workers"] = lambda: LiteLLMModel(workers=workers)
    if workers == cores:  # the default's rival: two workers per core
        start_workers(2 * cores)
        backends["workers_two_per_core"] = lambda: LiteLLMModel(workers=2 * cores)
    backends["in_process"] = lambda: LiteLLMModel(workers=0)
    backends["engine_only"] = lambda: SleepingModel(LATENCY_MS / 1000)
    steps = time_paths(
        backends,
        LATENCY_AGENTS,
        model=f"fake/default?latency_ms={LATENCY_MS}",
        concurrency=CONCURRENCY,
        steps=LATENCY_STEPS,
    )
    paths = {name: path_result(times, ideal) for name, times in steps.items()}
    cpu = {
        "in_process_default_gc": cpu_default_gc,
        "in_process": cpu_per_call_ms(LiteLLMModel(workers=0)),
    }
    if workers:
        cpu["workers"] = cpu_per_call_ms(LiteLLMModel(workers=workers))
    scaling: list[dict[str, Any]] = []
    for n in SCALING_AGENTS[:2] if args.quick else SCALING_AGENTS:
        row: dict[str, Any] = {"agents": n}
        for name, backend in (("default", None), ("in_process", LiteLLMModel(workers=0))):
            times = time_steps(
                n, model="fake/default", concurrency=CONCURRENCY, steps=2, backend=backend
            )
            row[name] = {"step_s": times, "ms_per_agent_step": min(times) / n * 1e3}
        scaling.append(row)
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "loadavg": {"start": load_start, "end": os.getloadavg()},
            "core_speed_s": {"start": speed_start, "end": core_speed_s()},
        },
        "workers": workers,
        "worker_start_s": worker_start_s,
        "worker_rss_mb": [rss_mb(pid) for pid in shared_pool(workers).pids],
        "frozen_objects": frozen,
        "auto_start": {"calls": auto.after_calls, "calls_per_s": auto.min_calls_per_s},
        "cpu_calls": CPU_CALLS,
        "cpu_per_call_ms": cpu,
        "latency": {
            "agents": LATENCY_AGENTS,
            "concurrency": CONCURRENCY,
            "latency_ms": LATENCY_MS,
            "ideal_step_s": ideal,
            "target_ratio": TARGET_RATIO,
            "paths": paths,
        },
        "scaling": scaling,
        "target_ms_per_agent_step": TARGET_MS_PER_AGENT_STEP,
    }
    harness.write_result(RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
