"""Engine benchmark: the batched embedded engine against the serial one, on the same prompts.

Run: ``.venv/bin/python benchmarks/bench_batched.py`` (writes
``benchmarks/results/batched.json`` and ``docs/benchmarks-batched.md`` from the same numbers;
``--summary-only`` rewrites the page from the saved file).

The prompts are what the main scenario (``scenarios/opinion_exchange.yaml``) sends in its
first step, for its first personas: a post and a probe on each topic per persona (probes
with log-probabilities, their answers drawn from every option's score). The serial engine
(``batch=1``) answers them one after another, as the gateway sent them before; the batched
engine (``batch=8``) gets them all at once, as the gateway sends them now. Both engines
run in this process, with prefix reuse on, each from a cold cache; rounds alternate which
engine goes first. The batched engine's answers are also checked against a second batched
pass with the calls submitted in reverse order: they must be byte-identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import harness  # benchmarks/, on the path when this script runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "batched.json"
SUMMARY = ROOT / "docs" / "benchmarks-batched.md"
SCENARIO = ROOT / "scenarios" / "opinion_exchange.yaml"
MODEL = "local/gemma3-270m"
PERSONAS = 5
MAX_TOKENS = 60
TEMPERATURE = 0.7
BATCH = 8
ROUNDS = 2


def _calls(personas: int) -> list[tuple[str, str, Any]]:
    """``(prompt, preamble, sampling)`` of a post and a probe per topic for each persona."""
    from simworld.config.persona import load_library
    from simworld.config.scenario import load_scenario
    from simworld.engine.agent import answer_model
    from simworld.llm.providers.local import to_prompt
    from simworld.llm.providers.local_engine import Sampling
    from simworld.prompts import render as prompts

    scenario = load_scenario(SCENARIO)
    assert scenario.population.library is not None  # the shipped scenario names one
    library = load_library((SCENARIO.parent / scenario.population.library).resolve())
    out = []
    for n, persona in enumerate(library.personas[:personas]):
        system = prompts.persona_system(persona, scenario.topics)
        for t, topic in enumerate(scenario.topics):
            fields = {
                "statement": topic.statement,
                "options": prompts.options_block(topic),
                "memories": prompts.memories_block([]),
            }
            values = ", ".join(str(v) for v in topic.scale.values)
            for kind in ("post", "probe"):
                if kind == "probe":
                    user = prompts.render("probe", values=values, **fields)
                    schema = answer_model(topic).model_json_schema()
                    top = 5
                else:
                    user = prompts.render("post", instruction="", **fields)
                    schema, top = None, None
                messages = [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ]
                prompt = to_prompt(messages)
                seed = 1000 * n + 10 * t + (kind == "probe")
                sampling = Sampling(MAX_TOKENS, TEMPERATURE, seed, schema, top)
                out.append((prompt.text, prompt.preamble, sampling))
    return out


def _serial(config: Any, calls: list[tuple[str, str, Any]]) -> tuple[float, list[Any]]:
    from simworld.llm.providers.local_engine import LlamaEngine

    engine = LlamaEngine(dataclasses.replace(config, batch=1))
    start = time.perf_counter()
    gens = [engine.generate(t, preamble=p, sampling=s) for t, p, s in calls]
    return time.perf_counter() - start, gens


def _batched(
    config: Any, calls: list[tuple[str, str, Any]], *, reverse: bool = False
) -> tuple[float, list[Any], dict[str, int]]:
    from simworld.llm.providers.local_batch import BatchedEngine

    engine = BatchedEngine(dataclasses.replace(config, batch=BATCH))
    try:
        start = time.perf_counter()
        order = list(reversed(range(len(calls)))) if reverse else list(range(len(calls)))
        futures = {}
        for i in order:
            prompt, preamble, sampling = calls[i]
            futures[i] = engine.submit(prompt, preamble=preamble, sampling=sampling)
        gens = [futures[i].result() for i in range(len(calls))]
        return time.perf_counter() - start, gens, dict(engine.stats)
    finally:
        engine.close()


def _rates(wall: float, gens: list[Any]) -> dict[str, float]:
    prompt = sum(g.prompt_tokens for g in gens)
    completion = sum(g.completion_tokens for g in gens)
    return {
        "wall_s": round(wall, 2),
        "calls_per_s": round(len(gens) / wall, 3),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_per_s": round(prompt / wall, 1),
        "completion_tokens_per_s": round(completion / wall, 2),
    }


def run(personas: int, rounds: int, threads: int) -> dict[str, Any]:
    """Every round: serial and batched (alternating which goes first), then a reversed
    batched pass for the identity check."""
    from simworld.llm.providers.local import parse_model

    config = dataclasses.replace(parse_model(MODEL), threads=threads)
    calls = _calls(personas)
    out: dict[str, Any] = {"rounds": []}
    for r in range(rounds):
        entry: dict[str, Any] = {}
        order = ("serial", "batched") if r % 2 == 0 else ("batched", "serial")
        for name in order:
            if name == "serial":
                wall, gens = _serial(config, calls)
                entry["serial"] = _rates(wall, gens)
            else:
                wall, gens, stats = _batched(config, calls)
                entry["batched"] = {**_rates(wall, gens), "engine": stats}
                batched_gens = gens
        _, again, _ = _batched(config, calls, reverse=True)
        entry["reversed_identical"] = again == batched_gens
        entry["speedup"] = round(entry["serial"]["wall_s"] / entry["batched"]["wall_s"], 2)
        out["rounds"].append(entry)
        print(json.dumps(entry), flush=True)
    return out


HEADER = (
    "| round | serial | batched | speed-up | prompt tok/s serial / batched "
    "| completion tok/s serial / batched | prefix tokens copied / restored (batched) "
    "| reversed order byte-identical |\n|---|---|---|---|---|---|---|---|"
)


def summary(result: dict[str, Any]) -> str:
    """The doc page, from the result file's numbers."""
    m = result["machine"]
    rows = []
    for i, r in enumerate(result["rounds"], 1):
        s, b = r["serial"], r["batched"]
        rows.append(
            f"| {i} | {s['wall_s']:.1f} s | {b['wall_s']:.1f} s | {r['speedup']:.2f}x | "
            f"{s['prompt_tokens_per_s']:.0f} / {b['prompt_tokens_per_s']:.0f} | "
            f"{s['completion_tokens_per_s']:.1f} / {b['completion_tokens_per_s']:.1f} | "
            f"{b['engine']['copied_tokens']:,} / {b['engine']['restored_tokens']:,} | "
            f"{'yes' if r['reversed_identical'] else '**no**'} |"
        )
    first = result["rounds"][0]
    best = {
        side: min(r[side]["wall_s"] for r in result["rounds"]) for side in ("serial", "batched")
    }
    return f"""# Benchmark: batched embedded engine

Written by `benchmarks/bench_batched.py` from `benchmarks/results/batched.json`.

{first["serial"]["prompt_tokens"]:,} prompt tokens in {result["calls"]} calls (a post and a probe
on each topic for the first {result["personas"]} personas of `scenarios/opinion_exchange.yaml`,
probes with log-probabilities, answers drawn from the options' scores, `max_tokens`
{MAX_TOKENS}), answered by
the serial engine (`local/gemma3-270m?batch=1`, one call after another) and by the batched
engine (`batch={BATCH}`, all calls submitted at once), in one process, each from a cold
cache. Host: {m["cpus"]} CPU cores shared with other work, {m["threads"]} llama.cpp threads,
llama-cpp-python {m["llama_cpp_python"]}, {m["python"]}{_load(m)}.

{HEADER}
{chr(10).join(rows)}

Each side's fastest round (the least disturbed by other work on the host): serial
{best["serial"]:.1f} s, batched {best["batched"]:.1f} s, a speed-up of
{best["serial"] / best["batched"]:.2f}x. A single round's ratio is only as good as the
host was quiet during both of its passes.

Prompt tokens per second count every prompt token, including those whose KV was copied
or restored instead of evaluated; "copied" are tokens whose KV came from another sequence
with `llama_memory_seq_cp`, "restored" from a saved per-preamble state.
"""


def _load(machine: dict[str, Any]) -> str:
    """The host's one-minute load average at the start and end of the run, when recorded."""
    load = machine.get("load_avg_1m")
    if not load:
        return ""
    return f"; load average (1 min) {load[0]:.2f} at the start, {load[1]:.2f} at the end"


def main() -> None:
    """Run, write the result file, then the doc page from it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--personas", type=int, default=PERSONAS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite the page from the saved result file"
    )
    args = parser.parse_args()
    if args.summary_only:
        SUMMARY.write_text(summary(harness.read_result(RESULTS)), encoding="utf-8")
        return
    load_start = os.getloadavg()[0]
    result = run(args.personas, args.rounds, args.threads)
    load_end = os.getloadavg()[0]
    result.update(
        {
            "personas": args.personas,
            "calls": len(_calls(args.personas)),
            "machine": {
                "cpus": os.cpu_count(),
                "threads": args.threads,
                "llama_cpp_python": metadata.version("llama_cpp_python"),
                "python": platform.python_version(),
                "load_avg_1m": [round(load_start, 2), round(load_end, 2)],
            },
        }
    )
    harness.write_result(RESULTS, result)
    SUMMARY.write_text(summary(harness.read_result(RESULTS)), encoding="utf-8")


if __name__ == "__main__":
    main()
