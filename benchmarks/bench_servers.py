"""Model-server benchmark: one scenario on two servers vs one, and the HTTP path's cost per call.

Run: ``.venv/bin/python benchmarks/bench_servers.py`` (writes
``benchmarks/results/servers.json`` and ``docs/benchmarks-servers.md`` from the same numbers;
``--summary-only`` rewrites the page from the saved results).

1. **Two servers vs one.** simworld's fake OpenAI-compatible server
   (:mod:`simworld.llm.fake_server`) runs in its own process with a fixed capacity (``CAPACITY``
   requests at once, ``LATENCY_MS`` each; the rest queue). The same scenario runs against
   one server (``llm.api_base``) and against two (``llm.deployments``, routing ``balanced``),
   in turn, ``ROUNDS`` times; each run starts with an empty cache. Outputs must be
   byte-identical. Each answer takes longer than the simulation's own work per call (as a
   real model server's does), so the servers, not the simulation, set the pace.
2. **HTTP overhead per call.** The same calls through the gateway, one at a time, to the
   in-process ``fake/`` provider and to the fake server over HTTP, both at
   ``OVERHEAD_LATENCY_MS``: the difference in wall time per call, and the simulation
   process's CPU time per call, for each path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import harness  # benchmarks/, on the path when this script runs
from summarize import verdict  # benchmarks/, on the path when this script runs

from simworld.config.scenario import LLMConfig
from simworld.llm.gateway import Gateway
from simworld.llm.litellm_backend import CallIdentity, LiteLLMModel, LLMRequest
from simworld.runs.run import run_scenario

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "servers.json"
SUMMARY = ROOT / "docs" / "benchmarks-servers.md"
LIBRARY = ROOT / "agents" / "global_panel.yaml"
CAPACITY = 2
LATENCY_MS = 1000
AGENTS = 16
STEPS = 2
ROUNDS = 2
OVERHEAD_LATENCY_MS = 20
OVERHEAD_CALLS = 60
TARGET_SPEEDUP = 1.8
MODEL = "openai/fake"


def start_server(latency_ms: float, capacity: int | None) -> tuple[subprocess.Popen[str], str]:
    """A fake server in its own process; returns it and its base URL."""
    cmd = [sys.executable, "-m", "simworld.llm.fake_server", "--latency-ms", str(latency_ms)]
    if capacity is not None:
        cmd += ["--capacity", str(capacity)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {url!r}")
    return proc, url


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop a server process and wait for it."""
    proc.terminate()
    proc.wait(timeout=30)


def scenario_file(folder: Path) -> Path:
    """Broadcast among ``AGENTS`` agents on a complete graph for ``STEPS`` steps, one topic:
    each phase of a step (posts, stances, probes) is a burst of ``AGENTS`` calls at once."""
    return harness.one_topic_scenario(
        folder / "scenario.yaml",
        name="bench_servers",
        library=LIBRARY,
        agents=AGENTS,
        protocol={"steps": STEPS, "mode": "broadcast"},
        llm={"model": MODEL, "concurrency": 64, "cache": "record"},
    )


def timed_run(scenario: Path, out: Path, llm: dict[str, Any]) -> dict[str, Any]:
    """One run with the given ``llm`` overrides; wall time and its outputs."""
    overrides = {f"llm.{k}": v for k, v in llm.items()}
    started = time.perf_counter()
    result = run_scenario(
        scenario, overrides=overrides, out_dir=out, cache_path=out.with_suffix(".db")
    )
    wall = time.perf_counter() - started
    assert result.status == "completed", result.error
    return {
        "wall_s": round(wall, 3),
        "calls": result.accounting.calls,
        "failures": result.accounting.failures,
        "outputs": (out / "transcript.jsonl").read_bytes()
        + (out / "opinions.parquet").read_bytes(),
    }


def servers_part(folder: Path) -> dict[str, Any]:
    """Two servers vs one, alternating, ``ROUNDS`` times."""
    scenario = scenario_file(folder)
    procs = [start_server(LATENCY_MS, CAPACITY) for _ in range(2)]
    urls = [url for _, url in procs]
    one = {"api_base": urls[0]}
    two = {"deployments": [{"api_base": u} for u in urls]}  # routing: balanced (the default)
    runs: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
    try:
        for i in range(ROUNDS):
            order = ("one", "two") if i % 2 == 0 else ("two", "one")
            for name in order:
                llm = one if name == "one" else two
                runs[name].append(timed_run(scenario, folder / f"{name}{i}", llm))
                print(name, runs[name][-1]["wall_s"], "s", file=sys.stderr)
    finally:
        for proc, _ in procs:
            stop(proc)
    outputs = {r.pop("outputs") for rs in runs.values() for r in rs}
    best = {name: min(r["wall_s"] for r in rs) for name, rs in runs.items()}
    calls = runs["one"][0]["calls"]
    return {
        "capacity": CAPACITY,
        "latency_ms": LATENCY_MS,
        "agents": AGENTS,
        "steps": STEPS,
        "calls": calls,
        "runs": runs,
        "best_s": best,
        "speedup": round(best["one"] / best["two"], 3),
        "speedup_median": round(
            median(r["wall_s"] for r in runs["one"]) / median(r["wall_s"] for r in runs["two"]),
            3,
        ),
        "ceiling_one_s": round(calls / CAPACITY * LATENCY_MS / 1000, 2),
        "outputs_identical": len(outputs) == 1,
    }


def per_call(config: LLMConfig, calls: int) -> dict[str, float]:
    """Wall and CPU time per call, ``calls`` calls one after another through a gateway."""
    gateway = Gateway(LiteLLMModel(workers=0), config=config, cache=None)
    route = config.route()

    def request(i: int) -> LLMRequest:
        return LLMRequest(
            model=config.model,
            messages=({"role": "user", "content": f"Say something about item {i}."},),
            identity=CallIdentity(seed=0, agent="bench", step=0, purpose="post", index=i),
            temperature=0.7,
            max_tokens=32,
            route=route,
        )

    async def go() -> tuple[float, float]:
        for i in range(5):  # warm up: imports, clients, connections
            await gateway.call(request(10_000 + i))
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(calls):
            outcome = await gateway.call(request(i))
            assert outcome.ok
        return time.perf_counter() - wall, time.process_time() - cpu

    wall, cpu = asyncio.run(go())
    return {"wall_ms": round(wall / calls * 1000, 3), "cpu_ms": round(cpu / calls * 1000, 3)}


def overhead_part() -> dict[str, Any]:
    """The HTTP path vs the in-process fake at the same latency, one call at a time."""
    proc, url = start_server(OVERHEAD_LATENCY_MS, None)
    try:
        fake = per_call(
            LLMConfig(model=f"fake/default?latency_ms={OVERHEAD_LATENCY_MS}", cache="off"),
            OVERHEAD_CALLS,
        )
        http = per_call(LLMConfig(model=MODEL, api_base=url, cache="off"), OVERHEAD_CALLS)
    finally:
        stop(proc)
    return {
        "latency_ms": OVERHEAD_LATENCY_MS,
        "calls": OVERHEAD_CALLS,
        "fake_in_process": fake,
        "http": http,
        "overhead_wall_ms": round(http["wall_ms"] - fake["wall_ms"], 3),
        "overhead_cpu_ms": round(http["cpu_ms"] - fake["cpu_ms"], 3),
    }


def summary(result: dict[str, Any]) -> str:
    """The markdown page of one result file."""
    m, s, o = result["machine"], result["servers"], result["overhead"]
    speedup, target = s["speedup"], result["target_speedup"]
    lines = []
    for label, key in (("one server", "one"), ("two servers", "two")):
        walls = ", ".join(f"{r['wall_s']:.2f} s" for r in s["runs"][key])
        lines.append(f"| {label} | {walls} | {s['best_s'][key]:.2f} s |")
    rows = "\n".join(lines)
    fake, http = o["fake_in_process"], o["http"]
    return f"""# Model-server benchmark

`benchmarks/bench_servers.py` writes `benchmarks/results/servers.json` and this page from the
same numbers (load average {m["loadavg_before"][0]} before, {m["loadavg_after"][0]} after, on
{m["cpus"]} cores shared with other work: wall times include waiting for a core).

## Two servers vs one

Each server is simworld's fake OpenAI-compatible server (`python -m simworld.llm.fake_server`) in
its own process, with a fixed capacity of {s["capacity"]} requests at once at
{s["latency_ms"]} ms each (more wait). The scenario: {s["agents"]} agents broadcasting on a
complete graph for {s["steps"]} steps, {s["calls"]} calls, each step's posts, stances and
probes sent as bursts of {s["agents"]}. One server: `llm.api_base`; two: `llm.deployments`
(routing `balanced`, the default). The runs alternate, each from an empty cache; their
transcripts and opinion tables were byte-identical: {s["outputs_identical"]}. Each answer
takes longer than the simulation's own work per call, as a real model server's does, so the
servers set the pace (with answers as fast as the simulation's per-call work, see below,
the simulation's process would).

| servers | wall time of each run | best |
| --- | --- | --- |
{rows}

| measure | result | target |
| --- | --- | --- |
| two servers vs one (best runs) | **{speedup:.2f}×** | ≥ {target}× — {verdict(speedup >= target)} |
| two servers vs one (median runs) | {s["speedup_median"]:.2f}× | (for comparison) |

One server cannot answer faster than {s["ceiling_one_s"]} s ({s["calls"]} calls ÷
{s["capacity"]} at once × {s["latency_ms"]} ms), two servers not faster than half that; the
rest of a run's wall time is the simulation's own work (building the population, preparing
calls, writing outputs), a little more with two servers (the Router's work per call).

## Cost of the HTTP path per call

{o["calls"]} calls one after another through the gateway at {o["latency_ms"]} ms model
latency, to the in-process `fake/` provider and to the fake server over HTTP (litellm's
OpenAI client, a local TCP connection, JSON both ways):

| path | wall per call | CPU of the simulation's process per call |
| --- | --- | --- |
| in-process fake | {fake["wall_ms"]:.2f} ms | {fake["cpu_ms"]:.2f} ms |
| HTTP to 127.0.0.1 | {http["wall_ms"]:.2f} ms | {http["cpu_ms"]:.2f} ms |
| **overhead of HTTP** | **{o["overhead_wall_ms"]:.2f} ms** | **{o["overhead_cpu_ms"]:.2f} ms** |

Against a real server's latency (hundreds of milliseconds per answer) this overhead is
small; the CPU figure bounds how many calls per second one simulation process can keep
in flight (the LLM worker processes take it off the simulation for `llm.api_base`; calls
over `llm.deployments` stay in the simulation's process).

Re-run with `.venv/bin/python benchmarks/bench_servers.py`.
"""


def main() -> None:
    """Run both parts; write the results file and the page."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite the page from the saved results"
    )
    args = parser.parse_args()
    if args.summary_only:
        SUMMARY.write_text(summary(harness.read_result(RESULTS)))
        return
    os.environ["SIMWORLD_LLM_WORKERS"] = "0"  # the same process path for one and two servers
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_servers_") as tmp:
        servers = servers_part(Path(tmp))
    overhead = overhead_part()
    result = {
        "machine": harness.machine(load_before),
        "servers": servers,
        "overhead": overhead,
        "target_speedup": TARGET_SPEEDUP,
    }
    harness.write_result(RESULTS, result)
    SUMMARY.write_text(summary(result))
    speedup, extra = servers["speedup"], overhead["overhead_wall_ms"]
    print(f"two vs one: {speedup}x; HTTP overhead {extra} ms per call", file=sys.stderr)


if __name__ == "__main__":
    main()
