"""Embedded-model benchmark: simworld's local/ provider against llama-cpp-python, and KV reuse.

Run: ``.venv/bin/python benchmarks/bench_local.py`` (writes ``benchmarks/results/local.json``
and ``docs/benchmarks-local.md`` from the same numbers).

(a) Throughput: the same post prompts of different personas go through simworld (gateway,
litellm, the ``local/`` provider) and straight to a ``llama_cpp.Llama`` of the same GGUF,
alternating call by call so both see the same machine load. Each direct call generates as
many tokens as simworld generated for that prompt (newline stops off), so both sides do the
same work; the ratio compares completion tokens per second of wall time.
(b) A 30-agent scenario (``scenarios/opinion_exchange.yaml``, one step: 30 posts and 120
probes), run by the CLI in a fresh process with prefix reuse on and off, alternating.
(c) Probe latency with and without log-probabilities (option scoring).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "local.json"
EXTRA_BUFTS_RESULTS = Path(__file__).parent / "results" / "extra_bufts.json"
SUMMARY = ROOT / "docs" / "benchmarks-local.md"
SCENARIO = ROOT / "scenarios" / "opinion_exchange.yaml"
MODEL = "local/gemma3-270m"
THROUGHPUT_PROMPTS = 12
THROUGHPUT_MAX_TOKENS = 64
SCENARIO_STEPS = 1
SCENARIO_REPEATS = 2
PROBES = 16
TEMPERATURE = 0.7
TARGET_RATIO = 0.9


def _requests(count: int, *, probe: bool, logprobs: bool = False) -> list[Any]:
    """Post (or probe) requests of ``count`` different personas on the scenario's first topic."""
    from simworld.config.persona import load_library
    from simworld.config.scenario import load_scenario
    from simworld.engine.agent import answer_model
    from simworld.llm.litellm_backend import CallIdentity, LLMRequest
    from simworld.prompts import render as prompts

    scenario = load_scenario(SCENARIO)
    topic = scenario.topics[0]
    library = load_library((SCENARIO.parent / scenario.population.library).resolve())
    out = []
    for persona in library.personas[:count]:
        system = prompts.persona_system(persona, scenario.topics)
        fields = {
            "statement": topic.statement,
            "options": prompts.options_block(topic),
            "memories": prompts.memories_block([]),
        }
        schema = None
        if probe:
            values = ", ".join(str(v) for v in topic.scale.values)
            user = prompts.render("probe", values=values, **fields)
            schema = answer_model(topic).model_json_schema()
        else:
            user = prompts.render("post", instruction="", **fields)
        out.append(
            LLMRequest(
                model=MODEL,
                messages=({"role": "system", "content": system}, {"role": "user", "content": user}),
                identity=CallIdentity(7, persona.id, 1, "probe" if probe else "post"),
                temperature=TEMPERATURE,
                max_tokens=THROUGHPUT_MAX_TOKENS,
                schema=schema,
                schema_name="Answer" if probe else None,
                logprobs=logprobs,
            )
        )
    return out


def _gateway() -> Any:
    from simworld.config.scenario import LLMConfig
    from simworld.llm.gateway import Gateway
    from simworld.llm.litellm_backend import LiteLLMModel

    config = LLMConfig(model=MODEL, cache="off", concurrency=1, temperature=TEMPERATURE)
    return Gateway(LiteLLMModel(), config=config, cache=None)


def throughput(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """(a) simworld vs. direct llama-cpp-python, alternating call by call."""
    import llama_cpp

    from simworld.llm.providers.local import parse_model, to_prompt

    gateway = _gateway()
    config = parse_model(MODEL)
    threads = os.cpu_count() or 1
    direct = llama_cpp.Llama(
        model_path=str(config.path),
        n_ctx=config.n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    requests = _requests(THROUGHPUT_PROMPTS + 1, probe=False)
    sides = {"simworld": [0.0, 0, 0], "direct": [0.0, 0, 0]}  # seconds, prompt, completion
    for i, request in enumerate(requests):
        started = time.perf_counter()
        outcome = loop.run_until_complete(gateway.call(request))
        ours = time.perf_counter() - started
        tokens = direct.tokenize(to_prompt(list(request.messages)).text.encode(), add_bos=True)
        started = time.perf_counter()
        answer = direct.create_completion(
            tokens,
            max_tokens=max(outcome.completion_tokens, 1),
            temperature=TEMPERATURE,
            top_k=40,
            top_p=0.95,
            min_p=0.05,
            repeat_penalty=1.1,
            seed=i,
        )
        theirs = time.perf_counter() - started
        if i == 0:
            continue  # warm-up: first calls load weights and caches
        for side, seconds, usage in (
            ("simworld", ours, (outcome.prompt_tokens, outcome.completion_tokens)),
            ("direct", theirs, (len(tokens), answer["usage"]["completion_tokens"])),
        ):
            sides[side][0] += seconds
            sides[side][1] += usage[0]
            sides[side][2] += usage[1]
    out: dict[str, Any] = {"calls": THROUGHPUT_PROMPTS, "max_tokens": THROUGHPUT_MAX_TOKENS}
    for side, (seconds, prompt, completion) in sides.items():
        out[side] = {
            "seconds": round(seconds, 3),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "completion_tokens_per_s": round(completion / seconds, 2),
            "total_tokens_per_s": round((prompt + completion) / seconds, 1),
        }
    out["ratio"] = round(
        out["simworld"]["completion_tokens_per_s"] / out["direct"]["completion_tokens_per_s"], 3
    )
    out["target_ratio"] = TARGET_RATIO
    return out


def scenario_run(model: str, folder: Path) -> dict[str, Any]:
    """(b) One CLI run of the 30-agent scenario in a fresh process."""
    run_dir = folder / "run"
    command = [
        *(sys.executable, "-m", "simworld.cli", "run", str(SCENARIO), "--model", model),
        *("--steps", str(SCENARIO_STEPS), "--cache-mode", "off", "--quiet"),
        *("--out", str(run_dir)),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    process_s = time.perf_counter() - started
    manifest = json.loads((run_dir / "manifest.json").read_text())
    totals = manifest["totals"]
    wall = manifest["wall_time_s"]
    return {
        "model": model,
        "status": manifest["status"],
        "agents": manifest["agents"],
        "steps": manifest["steps_completed"],
        "model_calls": totals["model_calls"],
        "failures": totals["failures"],
        "prompt_tokens": totals["prompt_tokens"],
        "completion_tokens": totals["completion_tokens"],
        "wall_time_s": wall,
        "process_time_s": round(process_s, 2),
        "calls_per_s": round(totals["model_calls"] / wall, 3),
        "transcript": _spoken(run_dir / "transcript.jsonl"),
    }


def _spoken(transcript: Path) -> str:
    """Messages and probe answers of a run (the model string and call keys left out)."""
    events = [json.loads(line) for line in transcript.read_text().splitlines()]
    kept = [
        (e["type"], e["agent"], e.get("text"), e.get("answer"), e.get("raw"))
        for e in events
        if e["type"] in {"message", "probe"}
    ]
    return json.dumps(kept)


def prefix_reuse() -> dict[str, Any]:
    """(b) The scenario with and without prefix (KV-cache) reuse, alternating; best of each."""
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(SCENARIO_REPEATS):
            for label, model in (("on", MODEL), ("off", MODEL + "?prefix_cache=off")):
                runs[label].append(scenario_run(model, Path(tmp) / f"{label}{repeat}"))
    transcripts = {run.pop("transcript") for group in runs.values() for run in group}
    on, off = (min(runs[k], key=lambda r: r["wall_time_s"]) for k in ("on", "off"))
    return {
        "scenario": str(SCENARIO.relative_to(ROOT)),
        "repeats": SCENARIO_REPEATS,
        "with_reuse": on,
        "without_reuse": off,
        "speedup": round(on["calls_per_s"] / off["calls_per_s"], 3),
        "identical_outputs": len(transcripts) == 1,
    }


def probe_logprobs(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """(c) Mean probe latency without and with log-probabilities."""
    gateway = _gateway()
    out: dict[str, Any] = {"probes": PROBES}
    for label, flag in (("plain", False), ("logprobs", True)):
        requests = _requests(PROBES + 1, probe=True, logprobs=flag)
        loop.run_until_complete(gateway.call(requests[0]))
        started = time.perf_counter()
        outcomes = [loop.run_until_complete(gateway.call(r)) for r in requests[1:]]
        seconds = time.perf_counter() - started
        out[label] = {
            "mean_latency_s": round(seconds / PROBES, 3),
            "parsed": sum(o.ok for o in outcomes),
            "with_option_probs": sum("option_probs" in o.extra for o in outcomes),
        }
    return out


def extra_bufts_section() -> str:
    """The section on llama.cpp's extra CPU buffer types, from ``bench_extra_bufts.py``'s
    result file (empty when it has not been run)."""
    if not EXTRA_BUFTS_RESULTS.is_file():
        return ""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_extra_bufts import features

    result = json.loads(EXTRA_BUFTS_RESULTS.read_text(encoding="utf-8"))
    host = result["host"]
    lines = [
        "",
        "## Extra CPU buffer types: hosts tried and what turning them off costs",
        "",
        f"From `benchmarks/bench_extra_bufts.py` (`benchmarks/results/extra_bufts.json`, "
        f"details in [benchmarks-extra-bufts.md](benchmarks-extra-bufts.md)): one host, "
        f"{host['cpus']} cores with {', '.join(host['flags'])}, two llama-cpp-python "
        f"{result['builds'][0].get('llama_cpp_python', '')} builds, {result['threads']} "
        f"thread, medians of {result['rounds']} alternating rounds.",
        "",
    ]
    for build in result["builds"]:
        info = features(build.get("system_info", ""))
        ratio = build.get("off_over_on")
        if ratio is None:
            crashed = [k for k in ("on", "off") if "crashed" in build[k]]
            lines.append(
                f"- build with {info}: extra buffer types "
                + ", ".join(f"{k}: crashed ({build[k]['crashed']})" for k in crashed)
                + "; no comparison."
            )
        else:
            lines.append(
                f"- build with {info}: with them off, prefill runs at "
                f"{ratio['prefill_tok_s']:.2f}x and decode at {ratio['decode_tok_s']:.2f}x "
                "the speed with them on."
            )
    lines += [
        "",
        "Turning them off costs nothing measurable where they work, and they crash where the",
        "build has AMX kernels on an AMX CPU, so `extra_bufts=auto` (the default) turns them",
        "off on every host; `?extra_bufts=on` still forces them. Not tried: an AVX2-only CPU",
        "or build, and CPUs of other vendors.",
    ]
    return "\n".join(lines) + "\n"


def summary(result: dict[str, Any]) -> str:
    """The markdown summary of one result file."""
    from simworld.llm.providers.local_engine import PREFILL_CHUNK

    a, b, c = result["throughput"], result["prefix_reuse"], result["probe_logprobs"]
    on, off = b["with_reuse"], b["without_reuse"]
    return f"""# Benchmark: the embedded local model

Numbers from one run of `benchmarks/bench_local.py` ({result["machine"]["cpus"]} CPU cores,
llama-cpp-python {result["machine"]["llama_cpp_python"]}, model `{MODEL}`), copied from
`benchmarks/results/local.json`.

## (a) simworld vs. llama-cpp-python called directly

{a["calls"]} post prompts of different personas, alternating call by call between simworld
(gateway, litellm, `local/` provider) and a plain `llama_cpp.Llama` on the same GGUF that
generates the same number of tokens.

| path | seconds | prompt tokens | completion tokens | completion tok/s | total tok/s |
| --- | --- | --- | --- | --- | --- |
| simworld | {a["simworld"]["seconds"]} | {a["simworld"]["prompt_tokens"]} | \
{a["simworld"]["completion_tokens"]} | {a["simworld"]["completion_tokens_per_s"]} | \
{a["simworld"]["total_tokens_per_s"]} |
| direct | {a["direct"]["seconds"]} | {a["direct"]["prompt_tokens"]} | \
{a["direct"]["completion_tokens"]} | {a["direct"]["completion_tokens_per_s"]} | \
{a["direct"]["total_tokens_per_s"]} |

Ratio simworld / direct: **{a["ratio"]}** (target >= {a["target_ratio"]}).

## (b) 30-agent scenario, prefix (KV-cache) reuse on and off

`{b["scenario"]}`, {on["steps"]} step, {on["agents"]} agents, run by the CLI in a fresh
process each time, on and off alternating, {b["repeats"]} runs each; the faster run of each
is shown.

| prefix reuse | model calls | failures | wall time (s) | calls/s |
| --- | --- | --- | --- | --- |
| on | {on["model_calls"]} | {on["failures"]} | {on["wall_time_s"]} | {on["calls_per_s"]} |
| off | {off["model_calls"]} | {off["failures"]} | {off["wall_time_s"]} | {off["calls_per_s"]} |

Speedup from reuse: **{b["speedup"]}x**. Messages and probe answers identical in every run,
reuse on or off: **{b["identical_outputs"]}**.

## (c) Probe latency and log-probabilities

{c["probes"]} probes: {c["plain"]["mean_latency_s"]} s each without log-probabilities,
{c["logprobs"]["mean_latency_s"]} s with them (every option scored);
{c["logprobs"]["with_option_probs"]} of {c["probes"]} carried an option distribution.

## Notes

- Prompts are always evaluated in the same {PREFILL_CHUNK}-token batches aligned to absolute
  positions, because llama.cpp's CPU kernels round differently for different batch sizes:
  with llama-cpp-python's automatic longest-prefix reuse a call's output depends on which
  call ran before it, so concurrent runs would not be reproducible. Reuse keeps whole
  aligned chunks of the previous prompt and restores each persona's preamble (instructions
  and persona card) from a KV state saved with llama.cpp's per-sequence state API.
- llama-cpp-python's `LlamaRAMCache` (`save_state`/`load_state`) was tried and not used: it
  copies the whole logits buffer (262k-token vocabulary times the batch size) on every save
  and load, which made it slower than evaluating the prompt again.
- The direct baseline in (a) also reuses the instructions shared by all personas (shorter
  than one aligned chunk, so simworld evaluates them again) and stops at end-of-sequence.
""" + extra_bufts_section()


def main() -> None:
    """Run the benchmark; write the JSON result and the markdown summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite the markdown from the saved JSON"
    )
    if parser.parse_args().summary_only:
        SUMMARY.write_text(summary(json.loads(RESULTS.read_text())))
        return
    import llama_cpp  # noqa: F401  # fail fast without the extra

    loop = asyncio.new_event_loop()
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "llama_cpp_python": metadata.version("llama-cpp-python"),
        },
        "throughput": throughput(loop),
        "probe_logprobs": probe_logprobs(loop),
    }
    loop.close()
    result["prefix_reuse"] = prefix_reuse()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    SUMMARY.write_text(summary(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
