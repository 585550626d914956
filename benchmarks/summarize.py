"""Write docs/benchmarks.md from the result files of the last benchmark runs.

Run: ``.venv/bin/python benchmarks/summarize.py`` after the benchmarks.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import timings

from simworld.trackers.tracker_set import CHECKPOINT_S

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def verdict(ok: bool) -> str:
    """``met`` or a bold ``missed``."""
    return "met" if ok else "**missed**"


def _rows(plan: dict[str, Any], agents: int, path: str) -> list[dict[str, Any]]:
    return [r for r in plan["runs"] if r["agents"] == agents and r["path"] == path]


def _med(
    plan: dict[str, Any], agents: int, path: str, value: Callable[[dict[str, Any]], float]
) -> float:
    return median(value(r) for r in _rows(plan, agents, path))


def _step_s(r: dict[str, Any], i: int) -> float:
    return float(r["step_s"][i])


def repay_steps(plan: dict[str, Any], agents: int) -> int | None:
    """The steps after which a run of ``agents`` agents has made up, with the workers'
    faster steps, their longer wait before step 1 (medians over the runs of each path), or
    ``None`` when their steps were not faster."""

    def step(r: dict[str, Any]) -> float:
        return sum(r["step_s"]) / len(r["step_s"])

    def wait(r: dict[str, Any]) -> float:
        return float(r["prepare_s"])

    saved = _med(plan, agents, "in_process", step) - _med(plan, agents, "workers", step)
    if saved <= 0:
        return None
    extra = _med(plan, agents, "workers", wait) - _med(plan, agents, "in_process", wait)
    return max(math.ceil(extra / saved), 0)


def plan_section(plan: dict[str, Any], scaling: list[dict[str, Any]]) -> str:
    """The section on the path chosen from the plan, from ``plan.json`` (bench_plan.py) and
    the engine benchmark's zero-latency ``scaling`` rows."""
    runs = plan["runs"]
    sizes = sorted({r["agents"] for r in runs})

    rows, med = functools.partial(_rows, plan), functools.partial(_med, plan)

    def total(r: dict[str, Any]) -> float:
        return r["prepare_s"] + sum(r["step_s"])

    table = []
    for n in sizes:
        cells = [f"{n:,}", str(rows(n, "in_process")[0]["planned_calls_per_step"])]
        for path in ("in_process", "workers"):
            cells += [
                f"{med(n, path, lambda r: r['prepare_s']):.2f} s",
                " / ".join(
                    f"{med(n, path, functools.partial(_step_s, i=i)):.2f}"
                    for i in range(plan["steps"])
                )
                + " s",
                f"{med(n, path, lambda r: r['ratio_max']):.2f}",
            ]
        repay = repay_steps(plan, n)
        cells.append(
            "never" if repay is None else f"{repay:,} steps" if repay <= 1000 else "> 1,000 steps"
        )
        table.append("| " + " | ".join(cells) + " |")
    step_win = [n for n in sizes if med(n, "workers", _ratio) < med(n, "in_process", _ratio)]
    run_win = [n for n in sizes if med(n, "workers", total) < med(n, "in_process", total)]
    defaults = []
    for n, target in sorted((int(k), v) for k, v in plan["targets"].items()):
        got = rows(n, "default")
        if not got:
            continue
        worst = max(r["ratio_max"] for r in got)
        path = "LLM workers" if all(r["workers_started"] for r in got) else "in-process"
        steps = "; ".join(" / ".join(f"{x:.2f}" for x in r["step_s"]) + " s" for r in got)
        defaults.append(
            f"- {n:,} agents, default settings ({path}): steps {steps}, ideal "
            f"{got[0]['ideal_step_s']:.1f} s, worst ratio {worst:.2f} (target ≤ {target}: "
            f"{verdict(worst <= target)}); waiting before step 1 "
            f"{median(r['prepare_s'] for r in got):.2f} s."
        )
    load = plan["machine"]["loadavg"]
    speeds = [r["core_speed_s"] for r in runs]
    saved = ", ".join(
        f"{1 - x['default']['ms_per_agent_step'] / x['in_process']['ms_per_agent_step']:.0%} "
        f"at {x['agents']:,} agents"
        for x in scaling
        if x["agents"] >= plan["plan_min_calls_per_step"]
    )
    header = " | ".join(
        ["agents", "calls / step"]
        + [f"{p} {c}" for p in ("in-process", "workers") for c in ("wait", "steps", "worst ratio")]
        + ["workers repay their wait after"]
    )
    return f"""## The path chosen from the plan

A run counts the model calls of a step from its scenario (`planned_calls_per_step` in
`simworld/engine/model.py`) before it builds anything. With `SIMWORLD_LLM_WORKERS=auto`, at
{plan["plan_min_calls_per_step"]} calls per step or more it starts {plan["workers"]} LLM workers
then, while the population, network and prompts are built, and waits for them before step 1
(`SocialSimulation.prepare`); below that it warms litellm up in its own process instead. Both
waits are reported here as "wait" and are not part of any step.

`benchmarks/bench_plan.py`: every row is a fresh process (the workers' start-up counts),
{plan["steps"]}-step broadcast runs (one call per agent-step), fake provider at
{plan["latency_ms"]} ms, concurrency {plan["concurrency"]}; medians of {max(r["repeat"] for r in runs) + 1}
runs per path, paths run in turn.

| {header} |
| {" | ".join(["---"] * 9)} |
{chr(10).join(table)}

- Per step (worst step ratio), the workers were faster {_sizes(step_win)}; counting their
  start-up, a whole {plan["steps"]}-step run was faster with them {_sizes(run_win)}.
{chr(10).join(defaults)}
- The host: load average {load["start"][0]:.1f} at the start, {load["end"][0]:.1f} at the
  end (the benchmark's own processes count in it); the core-speed probe (`core_speed_s`,
  0.12 s on an idle core) took {min(speeds):.2f} to {max(speeds):.2f} s in the measured
  processes. The host is shared: on other days the same probe took twice as long, and every
  ratio here rose with it (litellm's CPU per call is most of what lies above the ideal).
- Why {plan["plan_min_calls_per_step"]} calls per step start the workers although, on an idle
  host and {plan["latency_ms"]} ms answers, a short run is over sooner without them: their
  gain per step grows with the CPU litellm needs per second of the run (more calls per
  step, faster answers, a slower or busier host), while their wait is paid once. At zero
  latency (the engine table above) they cut the time per agent-step by {saved}. The
  threshold keeps every step of a large run on the faster path from step 1;
  `SIMWORLD_LLM_WORKERS=0` keeps a short run in-process.
"""


def _sizes(sizes: list[int]) -> str:
    """Where one path won: ``at 100, 400 agents``, or at none."""
    return f"at {', '.join(f'{n:,}' for n in sizes)} agents" if sizes else "at none of the sizes"


def _ratio(r: dict[str, Any]) -> float:
    return float(r["ratio_max"])


def local_host(result: dict[str, Any]) -> str:
    """Where ``bench_local.py``'s (a) ran, as the pages name hosts (empty for a result file
    that does not record it)."""
    host = result.get("parts", {}).get("throughput", {}).get("host")
    return f" on {timings.host_name(host)}" if host else ""


def local_others_line() -> str:
    """(a)'s ratio on the other hosts' ``bench_local.py`` runs (``local.NAME.json``), or
    nothing without any."""
    others = [
        f"{r['throughput']['ratio']:.3f}{local_host(r)} ({verdict(r['throughput']['ratio'] >= 0.9)})"
        for r in timings.other_hosts(RESULTS / "local.json")
    ]
    return f"\n  On other hosts: {'; '.join(others)}." if others else ""


def costs_line(costs: dict[str, Any] | None) -> str:
    """What simworld's determinism costs the embedded model (``bench_local.py`` (d)), or
    nothing for a result file without it."""
    if not costs:
        return ""
    return (
        "\n  What determinism costs, against llama-cpp-python's way: a prompt's prefill in "
        f"simworld's pieces {costs['prefill_pieces_vs_whole']:.2f}×,\n  a lone generated "
        f"token with its pad {costs['padded_vs_plain']:.2f}× (on one thread "
        f"{costs['one_thread_vs_plain']:.2f}×)."
    )


def main_job_line() -> str:
    """The main job's figures (``main_job.json``), or that it has not been measured."""
    path = RESULTS / "main_job.json"
    if not path.is_file():
        return "not measured yet (`benchmarks/bench_main_job.py`)."
    result = json.loads(path.read_text())
    runs = result["runs"]
    parts = [
        f"{timings.side_name(label)} {timings.side_model(label, r)} "
        f"{r['wall_time_s']:.0f} s wall ({r['steps']} step(s))"
        for label, r in runs.items()
    ]
    text = ", ".join(parts) + f" on {result['host']['cpu_model']}"
    ratios = [
        f"{name.lower()} / default {result[key]}x"
        + (f" (target {result['targets']['speedup']:.0f}x)" if key in timings.TARGETED else "")
        for name, key in timings.RATIOS
        if key in result
    ]
    if ratios:
        text += "; " + ", ".join(ratios)
    return text + (" (a `--quick` run)." if result["quick"] else ".")


def main() -> None:
    """Render the summary."""
    load = {
        n: json.loads((RESULTS / f"{n}.json").read_text())
        for n in ("engine", "replay", "local", "memory", "sweep")
    }
    e, r, lo, m, s = (load[n] for n in ("engine", "replay", "local", "memory", "sweep"))
    lat = e["latency"]
    paths, cpu, workers = lat["paths"], e["cpu_per_call_ms"], e["workers"]
    ret = {x["memories"]: x for x in m["retrieval"]}
    forget = [x["median_s"] for x in m["forgetting"]]
    reuse = lo["prefix_reuse"]
    on, off = reuse["with_reuse"]["calls_per_s"], reuse["without_reuse"]["calls_per_s"]
    replays = ", ".join(f"{x:.2f}" for x in r["replays_s"]) + " s"
    scaling_rows = "\n".join(
        f"| {x['agents']:,} | {x['default']['ms_per_agent_step']:.2f} | "
        f"{x['in_process']['ms_per_agent_step']:.2f} | "
        f"< 2: {verdict(x['default']['ms_per_agent_step'] < 2)} |"
        for x in e["scaling"]
    )
    path_names = {
        "workers": f"through litellm in {workers} LLM worker process{'es' if workers > 1 else ''}"
        " (what a large run uses)",
        "workers_two_per_core": f"through litellm in {2 * e['machine']['cores']} LLM worker processes, two per core",
        "in_process": "through litellm in the simulation's process (`SIMWORLD_LLM_WORKERS=0`, and runs whose plan is under the threshold)",
        "engine_only": "engine only (a backend that just sleeps)",
    }
    path_rows = "\n".join(
        f"| {path_names[name]} | {min(p['step_s']):.2f} s | {median(p['step_s']):.2f} s | "
        f"{p['ratio_best']:.2f} / {p['ratio_median']:.2f} | "
        f"{verdict(p['ratio_median'] <= lat['target_ratio'])} |"
        for name, p in paths.items()
    )
    rival = paths.get("workers_two_per_core")
    per_core = (
        "\n  One per core: in paired runs (alternating which went first) 2 workers beat 4 every\n"
        "  time, and each worker holds its own litellm. Stepped in turn with the default in this\n"
        f"  run, two per core gave {rival['ratio_best']:.2f} / {rival['ratio_median']:.2f}."
        if rival
        else ""
    )
    load_start, load_end = e["machine"]["loadavg"]["start"][0], e["machine"]["loadavg"]["end"][0]
    speed = e["machine"]["core_speed_s"]
    rss = e["worker_rss_mb"] or [float("nan")]
    rss_range = " to ".join(dict.fromkeys(f"{x:.0f}" for x in (min(rss), max(rss))))
    doc = f"""# Benchmarks

Every figure here comes from a benchmark in `benchmarks/` whose output file is in
`benchmarks/results/`; this page is written from those files by
`benchmarks/summarize.py`. The machine: 2 cores, 24 GiB, Python 3.11, sometimes shared with
other work while these ran (load averages are in the result files), so ratios are measured
side by side in one run.

| benchmark | command | result file |
| --- | --- | --- |
| engine | `.venv/bin/python benchmarks/bench_engine.py` | `engine.json` |
| path chosen from the plan | `.venv/bin/python benchmarks/bench_plan.py` | `plan.json` |
| replay | `.venv/bin/python benchmarks/bench_replay.py` | `replay.json` |
| embedded model | `.venv/bin/python benchmarks/bench_local.py` | `local.json` (other hosts: `local.NAME.json`, `--out`), [details](benchmarks-local.md) |
| memory | `.venv/bin/python benchmarks/bench_memory.py` | `memory.json`, [details](benchmarks-memory.md) |
| sweeps | `.venv/bin/python benchmarks/bench_sweep.py` | `sweep.json`, [details](benchmarks-sweep.md) |
| main job | `.venv/bin/python benchmarks/bench_main_job.py` | `main_job.json` (other hosts: `main_job.NAME.json`, `--out`), [details](benchmarks-main-job.md) |
| test command | `.venv/bin/python benchmarks/bench_tests.py` | `tests.json`, [details](benchmarks-tests.md) |

## Engine

Fake provider at {lat["latency_ms"]} ms latency, {lat["agents"]} agents posting to their
neighbours (broadcast, no probes, stance extraction off: one call per agent-step),
concurrency {lat["concurrency"]}. Ideal step: ceil(1000/64) × 100 ms = {lat["ideal_step_s"]:.1f} s.

| path | best step | median step | ratio to ideal (best / median) | target ≤ {lat["target_ratio"]} |
| --- | --- | --- | --- | --- |
{path_rows}

litellm spends {cpu["in_process"]["cpu_ms"]:.2f} ms of CPU per call in the process that makes it
(zero-latency fake calls through the gateway, simworld's own work included): parameter
mapping, response and cost bookkeeping (and, before the change below, a hop to a thread and
back). All of it ran on the
simulation's one event loop, so {lat["agents"]} calls per step kept that loop busy for about
{cpu["in_process"]["cpu_ms"] * lat["agents"] / 1000:.1f} s of every {lat["ideal_step_s"]:.1f} s step, and the calls queued behind it. Three changes:

- simworld's litellm settings are applied in one place, `configure_litellm()` in
  `simworld/llm/litellm_backend.py`. Besides telemetry and debug output off, litellm's per-call success
  logging (a task per call that rebuilds a standard logging payload and recomputes the cost)
  runs only when a litellm callback is registered; simworld registers none and
  records every call itself (tests lock this in). So does litellm's per-call "zero-cost
  diagnosis" (a second pricing lookup for calls that cost nothing, as the fake and embedded
  models' do), and a simulation's event loop runs litellm's synchronous set-up of a call in
  place instead of hopping to a thread and back, as the workers do. The rest of litellm's
  per-call work (parameter mapping, provider lookups, response metadata) has no switch.
- A large, fast run hands its calls to LLM worker processes (`simworld/llm/workers.py`, their
  side in `simworld/llm/worker.py`): each runs the same litellm backend, so every call still
  goes through `litellm.acompletion`, on its own event loop. The simulation's process keeps
  retries, seeds, the cache,
  accounting and cost, and spends {cpu["workers"]["cpu_ms"] if workers else float("nan"):.2f} ms of CPU per call on
  them and on the messages. Outputs are byte-identical either way (tested).
  `SIMWORLD_LLM_WORKERS`: `auto` (the default: min(cores, 4) workers, here {workers},
  started before the first step of a run whose steps make enough calls, see "The path chosen
  from the plan" below, or once one backend has made {e["auto_start"]["calls"]} calls at
  {e["auto_start"]["calls_per_s"]:.0f} calls/s or more, so small, latency-bound runs and tests
  stay in-process), `0`, or a number of workers.{per_core}
  A worker's start-up, mostly importing litellm, took {e["worker_start_s"]:.1f} s here and was done before
  these measurements; each worker held {rss_range} MB resident at the end.
  Each worker warms litellm up with a few fake calls before it takes work, runs litellm's
  synchronous half of a call in place instead of hopping to a thread and back, and starts
  the calls it receives in arrival order, one per turn of its event loop, as the
  simulation's own process does with the calls it makes itself (below).
- The `simworld` command (for `run`, `resume` and `replay`), `scenarios/run_all.py` and
  the LLM workers tune Python's garbage collector once their imports are done
  (`tune_gc()` in `simworld/support/process.py`; this benchmark does the same before it measures).
  The imports leave objects alive for good ({e["frozen_objects"]:,} frozen in this benchmark's process,
  which also imports mesa and pandas), and every full collection walked them all: the longest
  collection in {e["cpu_calls"]:,} calls with Python's defaults took {cpu["in_process_default_gc"]["gc_longest_pause_ms"]:.0f} ms. Frozen, they are skipped,
  and the youngest generation is collected every 7,000 net allocations instead of 700. The
  collector's share of a call, measured in this run: {cpu["in_process_default_gc"]["gc_ms"]:.3f} ms of
  {cpu["in_process_default_gc"]["cpu_ms"]:.2f} ms with Python's defaults, {cpu["in_process"]["gc_ms"]:.3f} ms tuned.

Why arrival order matters: the 64 calls of a wave start together and end together (the fake
latency has no jitter), so each wave brings 64 × {cpu["in_process"]["cpu_ms"]:.2f} ms of litellm CPU at once,
spread over the workers on two cores, or all on the simulation's loop in-process. A process
that started every call at once interleaved their set-up at every `await`, so each call
reached its 100 ms wait only when nearly the whole burst had been set up, and the whole
burst's answers came back together. Started in arrival order, one per turn of the loop
(`Turns` in `simworld/support/turns.py`, used by `LiteLLMModel` for the calls it makes in its
own process, a worker's or the simulation's), the first call waits for its own set-up and the
last for everyone's: half as long on average, and the answers come back spread out, so the
next wave's calls start spread out too. Side by side, alternating which went first, that
lowered the ratio in every pair; with it, more workers than cores stopped paying. What is left of the gap is
that CPU, so the margin to 1.15 depends on how much of the two cores the run gets: while
other work held part of them, earlier versions measured well above the target. Running each
call in a worker thread through the blocking `litellm.completion` was tried earlier and was
no better beyond run-to-run noise.

When a call takes its slot: a call made in the simulation's process takes its slot of
`llm.concurrency` when its request leaves, after litellm has set the call up, and gives it back
as the answer arrives, before litellm's bookkeeping on it (`simworld/llm/slots.py`); a call to
the LLM workers takes it before it is sent. While calls took their slot before their set-up,
at the end of every wave each call waiting for a slot also waited for the set-ups of the calls
before it, done one after another once a slot came free; now they are done while the
requests out are waiting for their answers. The in-process rows here and at 100 agents in
"The path chosen from the plan" are measured with it.

The host: load average {load_start:.1f} at the start, {load_end:.1f} at the end (the
benchmark's own processes count in it); the worker path needs its second core. A fixed
pure-Python loop (`core_speed_s` in the result file) took
{speed["start"]:.3f} s at the start and {speed["end"]:.3f} s at the end: it shows how much of a core the host
gave, which the load average does not.

Engine time per agent-step at zero latency (prompt building, litellm, fake answer,
transcript, tables, trackers). The default path is in-process for 100 agents (200 calls, too
few to start workers) and uses the workers beyond:

| agents | ms per agent-step (default path) | in-process | target |
| --- | --- | --- | --- |
{scaling_rows}

## Replay

`scenarios/opinion_exchange.yaml`, {r["agents"]} agents, {r["steps"]} steps ({r["calls"]} logical
calls: posts, stance extraction, probes), fake provider at {r["latency_ms"]} ms, concurrency
{r["concurrency"]}: live {r["live_s"]:.1f} s, verified replay {r["replay_s"]:.2f} s (median of
{replays}) with {r["replay_model_calls"]} model calls and identical outputs ({r["identical"]}):
{r["speedup"]:.0f}× faster (target ≥ 50×: {verdict(r["speedup"] >= 50)}; {r["speedup_best"]:.0f}× with
the fastest replay). A replay is the engine's own work with every answer read from the cache:
prompts, the transcript (fsynced after every step) and the run's tables. Trackers update only
the rows a step's events touch, and write their frames when the run ends (and every
{CHECKPOINT_S:.0f} s while it runs) rather than after every step.

## Embedded model

- {"Total tokens per second, same work," if "pairs" in lo["throughput"] else "Completion tokens per second"} through simworld vs. llama-cpp-python directly on the same
  prompts{local_host(lo)}: {lo["throughput"]["ratio"]:.3f} (target ≥ 0.9: {verdict(lo["throughput"]["ratio"] >= 0.9)}).{local_others_line()}{costs_line(lo.get("costs"))}
- Main job: {main_job_line()}
- 30-agent scenario, one step: {on:.2f} calls/s with prefix (key/value) reuse, {off:.2f}
  without: {on / off:.2f}× faster, identical outputs either way.

## Memory

Retrieval p95 for one agent: {ret[1000]["p95_ms"]:.2f} ms at 1,000 memories,
{ret[10000]["p95_ms"]:.2f} ms at 10,000 (target ≤ 20 ms: {verdict(ret[10000]["p95_ms"] <= 20)}),
{ret[100000]["p95_ms"]:.1f} ms at 100,000 (scoring; embedding the query with the real model
adds a few ms). One forgetting pass over 100,000 memories: {min(forget):.3f}–{max(forget):.3f} s
(target ≤ 2 s: {verdict(max(forget) <= 2)}).

## Sweeps

16 short runs, fake provider at 50 ms: 2 workers vs 1 {s["speedup_2_vs_1"]:.2f}× (target ≥ 1.8×:
{verdict(s["speedup_2_vs_1"] >= 1.8)}; {s["speedup_2_vs_1_after_startup"]:.2f}× leaving out the
workers' start-up, which is importing litellm and mesa); Ray vs local
{s["ray_overhead_with_init"]:.2f}× including Ray's start-up, {s["ray_overhead_running"]:.2f}×
with Ray running (target ≤ 1.2×: {verdict(s["ray_overhead_with_init"] <= 1.2)}).
"""
    plan_file = RESULTS / "plan.json"
    if plan_file.exists():
        doc += "\n" + plan_section(json.loads(plan_file.read_text()), e["scaling"])
    DOC.write_text(doc)
    print(f"wrote {DOC}")
    timings.main()


if __name__ == "__main__":
    main()
