"""Replay benchmark: a recorded 30-agent, 10-step run re-executed from the cache vs. live.

The run is recorded once (live, about 20 s) and replayed with verification ``REPLAYS`` times,
each into a new run directory; the speed-up uses the median replay, as the machine is shared.

Run: ``.venv/bin/python benchmarks/bench_replay.py`` (writes ``benchmarks/results/replay.json``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/, on the path when this script runs

from simworld.runs.replay import verify_replay
from simworld.runs.run import run_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "opinion_exchange.yaml"
RESULTS = Path(__file__).parent / "results" / "replay.json"
LATENCY_MS = 100
STEPS = 10
REPLAYS = 3
TARGET_SPEEDUP = 50.0


def main() -> None:
    """Record the run live, replay it ``REPLAYS`` times with verification, write the results."""
    overrides = {"llm.model": f"fake/default?latency_ms={LATENCY_MS}", "protocol.steps": STEPS}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        live = run_scenario(
            SCENARIO,
            overrides=overrides,
            out_dir=Path(tmp) / "live",
            cache_path=Path(tmp) / "cache.sqlite",
        )
        live_s = time.perf_counter() - started
        replays, reports = [], []
        for n in range(REPLAYS):
            started = time.perf_counter()
            reports.append(verify_replay(Path(tmp) / "live", out_dir=Path(tmp) / f"replay{n}"))
            replays.append(time.perf_counter() - started)
    replay_s = statistics.median(replays)
    result = {
        "machine": {"python": platform.python_version(), "loadavg": os.getloadavg()},
        "scenario": "scenarios/opinion_exchange.yaml",
        "agents": live.agents,
        "steps": STEPS,
        "latency_ms": LATENCY_MS,
        "concurrency": 8,
        "calls": live.accounting.calls,
        "live_s": round(live_s, 3),
        "replay_s": round(replay_s, 3),
        "replays_s": [round(x, 3) for x in replays],
        "replay_model_calls": max(r.result.accounting.model_calls for r in reports),
        "identical": all(r.identical for r in reports),
        "speedup": round(live_s / replay_s, 2),
        "speedup_best": round(live_s / min(replays), 2),
        "target_speedup": TARGET_SPEEDUP,
    }
    harness.write_result(RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
