"""Engine benchmark: step wall time vs. the ideal at 100 ms latency, and per-agent-step cost.

Run: ``.venv/bin/python benchmarks/bench_engine.py`` (writes ``benchmarks/results/engine.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

from simworld.gateway import Gateway
from simworld.llm import Completion, LanguageModel, LiteLLMModel, LLMRequest
from simworld.model import SocialSimulation
from simworld.scenario import Scenario

RESULTS = Path(__file__).parent / "results" / "engine.json"
LATENCY_MS = 100
CONCURRENCY = 64
LATENCY_AGENTS = 1000
SCALING_AGENTS = (100, 1000, 10_000)
TARGET_RATIO = 1.15
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

    async def complete(self, request: LLMRequest, *, attempt: int, timeout_s: float) -> Completion:
        """Wait, then answer a fixed sentence."""
        await asyncio.sleep(self.latency_s)
        return Completion(text="For me it is Agree.", prompt_tokens=100, completion_tokens=5)


def time_steps(
    n: int, *, model: str, concurrency: int, steps: int, backend: LanguageModel | None = None
) -> list[float]:
    """Wall time of each of ``steps`` steps (model construction excluded)."""
    sc = scenario(n, model=model, concurrency=concurrency)
    gateway = Gateway(backend or LiteLLMModel(), config=sc.llm, cache=None)
    sim = SocialSimulation(sc, gateway=gateway)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        sim.step()
        times.append(time.perf_counter() - started)
    sim.close()
    return times


def main() -> None:
    """Run both measurements and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 10,000-agent size")
    args = parser.parse_args()
    time_steps(50, model="fake/default", concurrency=CONCURRENCY, steps=1)  # warm-up
    ideal = math.ceil(LATENCY_AGENTS / CONCURRENCY) * LATENCY_MS / 1000
    latency_model = f"fake/default?latency_ms={LATENCY_MS}"
    step_times = time_steps(LATENCY_AGENTS, model=latency_model, concurrency=CONCURRENCY, steps=3)
    best = min(step_times)
    direct = time_steps(
        LATENCY_AGENTS,
        model=latency_model,
        concurrency=CONCURRENCY,
        steps=3,
        backend=SleepingModel(LATENCY_MS / 1000),
    )
    scaling: list[dict[str, Any]] = []
    for n in SCALING_AGENTS[:2] if args.quick else SCALING_AGENTS:
        times = time_steps(n, model="fake/default", concurrency=CONCURRENCY, steps=2)
        scaling.append(
            {"agents": n, "step_s": min(times), "ms_per_agent_step": min(times) / n * 1e3}
        )
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        },
        "latency": {
            "agents": LATENCY_AGENTS,
            "concurrency": CONCURRENCY,
            "latency_ms": LATENCY_MS,
            "ideal_step_s": ideal,
            "step_s": step_times,
            "ratio_best": best / ideal,
            "ratio_median": sorted(step_times)[1] / ideal,
            "target_ratio": TARGET_RATIO,
            "engine_only_step_s": direct,
            "engine_only_ratio_best": min(direct) / ideal,
            "engine_only_ratio_median": sorted(direct)[1] / ideal,
        },
        "scaling": scaling,
        "target_ms_per_agent_step": TARGET_MS_PER_AGENT_STEP,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
