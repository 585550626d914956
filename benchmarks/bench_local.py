"""Embedded-model benchmark: simworld's local/ provider against llama-cpp-python, and KV reuse.

Run: ``.venv/bin/python benchmarks/bench_local.py`` (writes ``benchmarks/results/local.json``
and ``docs/benchmarks-local.md`` from the same numbers).

(a) Throughput: the same post prompts of different personas go through simworld (gateway,
litellm, the ``local/`` provider) and straight to a ``llama_cpp.Llama`` of the same GGUF
loaded the same way, in alternating blocks, with simworld's sampling settings and as many
tokens asked for as simworld generated; the ratio compares total (prompt + completion) tokens
per second with every prompt token evaluated on both sides, and is also given with each
side's default prefix reuse. Then the simworld calls run in-process with their parts timed,
to show where simworld's time goes (``--only throughput``).
(b) A 30-agent scenario (``scenarios/opinion_exchange.yaml``, one step: 30 posts, their 30
stance annotations and 120 probes), run by the CLI in a fresh process with prefix reuse on
and off, alternating (``--only reuse``).
(c) Probe latency with answers drawn from the options' scores (the default) and sampled token
by token (``?answers=sampled``) (``--only probes``).
(d) What determinism costs: a prompt's prefill whole and in the engine's pieces, and a
generated token's decode alone on every thread, alone on one thread and with a pad token,
with one plain ``llama_cpp.Llama`` (``--only costs``).

``--only PART`` (repeatable) runs those parts and keeps the others from the saved result file;
the file records, per part, the host, commit, start time and load of the run it comes from
(``parts``), and the page says which run gave which part when they differ.
``--out benchmarks/results/local.NAME.json`` keeps another kind of host's run beside the main
one (``local.json``): the page lists it under "Other hosts".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import harness  # benchmarks/, on the path when this script runs
from bench_main_job import host
from timings import host_name, other_hosts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "local.json"
EXTRA_BUFTS_RESULTS = Path(__file__).parent / "results" / "extra_bufts.json"
# What ``extra_bufts=auto`` does (simworld.llm.providers.local_engine.use_extra_bufts).
EXTRA_BUFTS_POLICY = (
    "They crash where the build has AMX kernels on an AMX CPU; where they work, they gain\n"
    "nothing that outlasts the noise (above), and with them on, an AVX2-only build gave the\n"
    "batched engine (`batch=8`) answers that depend on which calls share a batch (its three\n"
    "batch-independence tests in `tests/test_local.py` failed), while the serial engine's\n"
    "answers stayed identical whatever ran before. So `extra_bufts=auto` (the default) keeps\n"
    "them off on every host; `?extra_bufts=on` turns them on, reproducible with the serial\n"
    "engine (the default `batch=1`) on a CPU without AMX. With the default, the whole test\n"
    "suite has run on a 2-core Xeon with AVX-512 and AMX (`benchmarks/results/tests.json`)\n"
    "and on a 2-core AMD EPYC with AVX-512 and no AMX (`.ci/run` from a fresh clone); the\n"
    "main job on both (`main_job.json`, now and in earlier commits: the same\n"
    "`transcript.jsonl` and `opinions.parquet`, byte for byte) and on a 2-core AMD EPYC with\n"
    "AVX2 only (`main_job.json` in earlier commits)."
)
SUMMARY = ROOT / "docs" / "benchmarks-local.md"
SCENARIO = ROOT / "scenarios" / "opinion_exchange.yaml"
MODEL = "local/gemma3-270m"
THROUGHPUT_PROMPTS = 12


class Part(NamedTuple):
    """One part of the benchmark: its letter on the page and its keys in the result file."""

    letter: str
    keys: tuple[str, ...]


PARTS = {
    "throughput": Part("a", ("throughput", "profile")),
    "probes": Part("c", ("probe_logprobs",)),
    "costs": Part("d", ("costs",)),
    "reuse": Part("b", ("prefix_reuse",)),
}
"""The benchmark's parts as ``--only`` names them, in the order they run."""
THROUGHPUT_MAX_TOKENS = 64
THROUGHPUT_ROUNDS = 2
# pairing -> (simworld model suffix, reset the direct Llama before each call)
THROUGHPUT_PAIRS = {"same_work": ("?prefix_cache=off", True), "default": ("", False)}
# timed label -> (module, class or "", function): the parts of a simworld call worth a share,
# timed in whichever thread runs them (the engine works in its own threads)
TIMED = {
    "engine generate (all of the engine's work)": (
        "simworld.llm.providers.local_engine",
        "LlamaEngine",
        "generate",
    ),
    "prefill (the prompt's pieces)": (
        "simworld.llm.providers.local_engine",
        "LlamaEngine",
        "_prefill",
    ),
    "slot steps (a sampled token each)": (
        "simworld.llm.providers.local_slots",
        "DecodeSlots",
        "step",
    ),
    "first token, then the move into a slot": (
        "simworld.llm.providers.local_engine",
        "LlamaEngine",
        "_start_in_slot",
    ),
    "sampling (llama.cpp's chain on the logits)": (
        "simworld.llm.providers.local_sampler",
        "TokenSampler",
        "pick_logits",
    ),
    "llama_decode (all of llama.cpp's evaluation)": ("llama_cpp", "", "llama_decode"),
    "tokenize": ("simworld.llm.providers.local_engine", "LlamaEngine", "tokenize"),
    "prompt building (to_prompt)": ("simworld.llm.providers.local", "", "to_prompt"),
}
COST_ROUNDS = 3
COST_TOKENS = 32
FA_TILE = 64
"""Queries from which llama.cpp's CPU flash attention takes its tiled path (a batch of
fewer takes the per-row path; llama-cpp-python 0.3.36)."""
COST_RATIOS = ("prefill_pieces_vs_whole", "padded_vs_plain", "one_thread_vs_plain")
"""(d)'s ratios, as the other hosts' table lists them."""
SCENARIO_STEPS = 1
SCENARIO_REPEATS = 2
PROBES = 16
TEMPERATURE = 0.7
TARGET_RATIO = 0.9
# (c): answers over a fixed set of options drawn from the options' scores (the default) or
# sampled token by token (simworld.llm.providers.local_options)
PROBE_SIDES = {"drawn": MODEL, "sampled": f"{MODEL}?answers=sampled"}
CALL_TIMEOUT_S = 1800.0  # a loaded machine must not turn a slow call into a failed one


def _requests(
    count: int, *, probe: bool, logprobs: bool = False, model: str = MODEL, first: int = 0
) -> list[Any]:
    """Post (or probe) requests of ``count`` different personas (the library's from the
    ``first``-th on) on the scenario's first topic."""
    from simworld.config.persona import load_library
    from simworld.config.scenario import load_scenario
    from simworld.engine.agent import answer_model
    from simworld.llm.litellm_backend import CallIdentity, LLMRequest
    from simworld.prompts import render as prompts

    scenario = load_scenario(SCENARIO)
    topic = scenario.topics[0]
    assert scenario.population.library is not None  # the shipped scenario names one
    library = load_library((SCENARIO.parent / scenario.population.library).resolve())
    out = []
    personas = library.personas[first : first + count]
    if len(personas) < count:
        raise SystemExit(f"{SCENARIO}: {first + count} personas needed, its library has fewer")
    for persona in personas:
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
                model=model,
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


def _gateway(model: str = MODEL) -> Any:
    from simworld.config.scenario import LLMConfig
    from simworld.llm.gateway import Gateway
    from simworld.llm.litellm_backend import LiteLLMModel

    config = LLMConfig(
        model=model,
        cache="off",
        concurrency=1,
        temperature=TEMPERATURE,
        timeout_s=CALL_TIMEOUT_S,
        max_retries=0,
    )
    return Gateway(LiteLLMModel(), config=config, cache=None)


def _direct_llama() -> tuple[Any, dict[str, Any]]:
    """A plain ``llama_cpp.Llama`` loaded exactly as the engine loads its model: same file,
    context, thread count and extra buffer types (off)."""
    from simworld.llm.providers.local import parse_model
    from simworld.llm.providers.local_engine import _load_llama, use_extra_bufts

    config = parse_model(MODEL)
    threads = config.threads or os.cpu_count() or 1
    extra = use_extra_bufts(config.extra_bufts)
    setup = {"threads": threads, "n_ctx": config.n_ctx, "extra_bufts": extra}
    return _load_llama(config, threads, extra_bufts=extra), setup


def _simworld_block(
    loop: asyncio.AbstractEventLoop, gateway: Any, requests: list[Any]
) -> tuple[list[float], list[Any]]:
    """Each request through simworld (after one warm-up call): seconds and outcomes."""
    loop.run_until_complete(gateway.call(requests[0]))
    times, outcomes = [], []
    for request in requests[1:]:
        started = time.perf_counter()
        outcomes.append(loop.run_until_complete(gateway.call(request)))
        times.append(time.perf_counter() - started)
    failed = [o.errors for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"simworld calls failed: {failed}")
    return times, outcomes


def _direct_block(
    direct: Any, prompts: list[list[int]], lengths: list[int], seeds: list[int], *, reset: bool
) -> tuple[list[float], list[int]]:
    """Each prompt straight to llama-cpp-python with simworld's sampling settings, asking for
    as many tokens as simworld generated (after one warm-up call): seconds and tokens made."""
    from simworld.llm.providers.local_sampler import MIN_P, TEXT_REPEAT_PENALTY, TOP_K, TOP_P

    times, made = [], []
    for i, (tokens, length, seed) in enumerate(zip(prompts, lengths, seeds, strict=True)):
        if reset:
            direct.reset()  # evaluate the whole prompt, as simworld does without prefix reuse
        started = time.perf_counter()
        answer = direct.create_completion(
            tokens,
            max_tokens=max(length, 1),
            temperature=TEMPERATURE,
            top_k=TOP_K,
            top_p=TOP_P,
            min_p=MIN_P,
            repeat_penalty=TEXT_REPEAT_PENALTY,
            seed=seed,
        )
        if i:  # the first call is the warm-up
            times.append(time.perf_counter() - started)
            made.append(answer["usage"]["completion_tokens"])
    return times, made


def throughput(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """(a) simworld vs. llama-cpp-python directly on the same prompts, in alternating blocks.

    Two pairings: ``same_work``, both evaluating every prompt token (simworld with
    ``?prefix_cache=off``, the plain ``Llama`` reset before each call), and ``default``, each
    as it comes (simworld's piece-wise prefix reuse, llama-cpp-python's own longest-prefix
    reuse). Blocks of all the prompts alternate between the sides (the order flips every
    round), rather than single calls: the side that just ran leaves OpenMP threads spinning
    for a moment, which would slow whichever call came next in another process.
    """
    from simworld.llm.providers.local import to_prompt

    direct, setup = _direct_llama()
    requests = _requests(THROUGHPUT_PROMPTS + 1, probe=False)
    prompts = [
        direct.tokenize(to_prompt(list(r.messages)).text.encode(), add_bos=True) for r in requests
    ]
    seeds = [r.identity.derived_seed(0) for r in requests]
    out: dict[str, Any] = {
        "calls": THROUGHPUT_PROMPTS,
        "max_tokens": THROUGHPUT_MAX_TOKENS,
        "rounds": THROUGHPUT_ROUNDS,
        "setup": setup,
        "pairs": {},
    }
    for pair, (suffix, reset) in THROUGHPUT_PAIRS.items():
        model = MODEL + suffix
        gateway = _gateway(model)
        pair_requests = [dataclasses.replace(r, model=model) for r in requests]
        lengths = [0] * len(requests)
        sides: dict[str, list[float]] = {"simworld": [], "direct": []}
        counts: dict[str, list[int]] = {"simworld": [], "direct": []}
        for rnd in range(THROUGHPUT_ROUNDS):
            order = ("simworld", "direct") if rnd % 2 == 0 else ("direct", "simworld")
            for side in order:
                if side == "simworld":
                    times, outcomes = _simworld_block(loop, gateway, pair_requests)
                    lengths = [THROUGHPUT_MAX_TOKENS] + [o.completion_tokens for o in outcomes]
                    made = [o.completion_tokens for o in outcomes]
                else:  # round 0 runs simworld first: its lengths are known here
                    times, made = _direct_block(direct, prompts, lengths, seeds, reset=reset)
                sides[side] += times
                counts[side] += made
                print(f"(a) {pair} round {rnd} {side}: {sum(times):.2f} s, tokens {made}")
        prompt_tokens = sum(len(t) for t in prompts[1:]) * THROUGHPUT_ROUNDS
        result: dict[str, Any] = {"simworld_model": model, "direct_reset": reset}
        for side, times in sides.items():
            seconds, completion = sum(times), sum(counts[side])
            result[side] = {
                "seconds": round(seconds, 3),
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "completion_tokens_per_s": round(completion / seconds, 2),
                "total_tokens_per_s": round((prompt_tokens + completion) / seconds, 1),
            }
        result["ratio"] = round(
            result["simworld"]["total_tokens_per_s"] / result["direct"]["total_tokens_per_s"], 3
        )
        out["pairs"][pair] = result
    same = out["pairs"]["same_work"]
    out["simworld"], out["direct"], out["ratio"] = same["simworld"], same["direct"], same["ratio"]
    out["target_ratio"] = TARGET_RATIO
    return out


@contextlib.contextmanager
def timed(spent: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in each of :data:`TIMED`'s functions, in any thread, to
    ``spent`` while the block runs (each function wrapped by a timer, then restored)."""
    import importlib

    originals = []
    for label, (module_name, class_name, name) in TIMED.items():
        module = importlib.import_module(module_name)
        owner = getattr(module, class_name) if class_name else module
        original = getattr(owner, name)

        def timer(*args: Any, _f: Any = original, _label: str = label, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0.0) + time.perf_counter() - started

        originals.append((owner, name, original))
        setattr(owner, name, timer)
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def profile_simworld(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """Where simworld's time goes on the throughput prompts: the calls run inline
    (``SIMWORLD_LOCAL_PROCESS=inline``, so the engine works in this process) one after
    another, with the parts in :data:`TIMED` timed, as shares of the calls' total."""
    os.environ["SIMWORLD_LOCAL_PROCESS"] = "inline"
    spent: dict[str, float] = {}
    try:
        gateway = _gateway(MODEL + "?prefix_cache=off")
        requests = [
            dataclasses.replace(r, model=MODEL + "?prefix_cache=off")
            for r in _requests(THROUGHPUT_PROMPTS + 1, probe=False)
        ]
        loop.run_until_complete(gateway.call(requests[0]))
        with timed(spent):
            started = time.perf_counter()
            for request in requests[1:]:
                loop.run_until_complete(gateway.call(request))
            total = time.perf_counter() - started
    finally:
        os.environ.pop("SIMWORLD_LOCAL_PROCESS", None)
    return {
        "calls": THROUGHPUT_PROMPTS,
        "seconds": round(total, 3),
        "shares": {label: round(spent.get(label, 0.0) / total, 4) for label in TIMED},
    }


def determinism_costs() -> dict[str, Any]:
    """(d) What simworld's determinism costs, with one plain ``Llama`` loaded as the engine
    loads its model, on the throughput prompts, the ways alternating within every round.

    Prefill: every prompt whole (llama-cpp-python's batches of ``n_batch``), in the pieces
    the serial engine cuts it into (:func:`piece_ends`) and in pieces of :data:`FA_TILE`
    tokens (the last one shorter), which take flash attention's tiled path where most of
    the engine's shorter pieces do not. A generated token's decode,
    :data:`COST_TOKENS` after each prompt: alone on every thread (llama-cpp-python), alone on
    one thread (the other way to keep a single token's numbers independent of the thread
    count) and with a pad token on every thread (simworld's way, for a lone call in a decode
    slot and the serial engine's single tokens).
    """
    import llama_cpp

    from simworld.llm.providers.local import to_prompt
    from simworld.llm.providers.local_engine import (
        _common_prefix,
        grid_ends,
        piece_ends,
        state_tokens,
    )

    direct, setup = _direct_llama()
    ctx, threads = direct.ctx, setup["threads"]
    memory = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(direct.n_batch, 0, 1)
    line_ends: dict[int, bool] = {}

    def ends_line(token: int) -> bool:
        if token not in line_ends:
            line_ends[token] = direct.detokenize([token]).endswith(b"\n")
        return line_ends[token]

    def decode(entries: list[tuple[int, int, bool]], n_threads: int) -> None:
        llama_cpp.llama_set_n_threads(ctx, n_threads, n_threads)
        batch.n_tokens = len(entries)
        for j, (token, pos, logits) in enumerate(entries):
            batch.token[j], batch.pos[j], batch.logits[j] = token, pos, logits
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = 0
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def prefill(tokens: list[int], ends: list[int]) -> float:
        llama_cpp.llama_memory_seq_rm(memory, 0, -1, -1)
        started, begin, last = time.perf_counter(), 0, len(tokens) - 1
        for end in ends:
            decode([(t, p, p == last) for p, t in enumerate(tokens[begin:end], begin)], threads)
            begin = end
        return time.perf_counter() - started

    def tokens_after(tokens: list[int], pad: bool, n_threads: int) -> float:
        started = time.perf_counter()
        for k in range(COST_TOKENS):
            pos = len(tokens) + k
            entries = [(tokens[k], pos, True)] + ([(tokens[k], pos + 1, False)] if pad else [])
            decode(entries, n_threads)
            llama_cpp.llama_memory_seq_rm(memory, 0, pos + 1, -1)
        llama_cpp.llama_memory_seq_rm(memory, 0, len(tokens), -1)
        return time.perf_counter() - started

    state_len = state_tokens(direct.model, direct.n_ctx())
    prompts = []
    for request in _requests(THROUGHPUT_PROMPTS, probe=False):
        prompt = to_prompt(list(request.messages))
        tokens = direct.tokenize(prompt.text.encode(), add_bos=True)
        preamble = _common_prefix(direct.tokenize(prompt.preamble.encode(), add_bos=True), tokens)
        prompts.append((tokens, piece_ends(tokens, preamble, state_len, ends_line)))
    token_ways = {"plain": (False, threads), "one_thread": (False, 1), "padded": (True, threads)}
    cut_ways: dict[str, Callable[[list[int], list[int]], list[int]]] = {
        "whole": lambda tokens, _: grid_ends(len(tokens), direct.n_batch),
        "pieces": lambda _, ends: ends,
        "tiles": lambda tokens, _: grid_ends(len(tokens), FA_TILE),
    }
    spent = dict.fromkeys([*cut_ways, *token_ways], 0.0)

    def rotated(names: list[str], rnd: int) -> list[str]:
        return names[rnd % len(names) :] + names[: rnd % len(names)]

    try:
        for rnd in range(COST_ROUNDS):
            ways, turn = rotated(list(cut_ways), rnd), rotated(list(token_ways), rnd)
            for tokens, ends in prompts:
                for way in ways:
                    spent[way] += prefill(tokens, cut_ways[way](tokens, ends))
                for name in turn:
                    spent[name] += tokens_after(tokens, *token_ways[name])
    finally:
        llama_cpp.llama_batch_free(batch)
    n_prompts = COST_ROUNDS * len(prompts)
    n_tokens = n_prompts * COST_TOKENS
    ms = {name: round(1000 * spent[name] / n_tokens, 2) for name in token_ways}
    return {
        "prompts": len(prompts),
        "rounds": COST_ROUNDS,
        "threads": threads,
        "prompt_tokens": round(sum(len(t) for t, _ in prompts) / len(prompts)),
        "pieces": round(sum(len(e) for _, e in prompts) / len(prompts), 1),
        "prefill_whole_s": round(spent["whole"] / n_prompts, 3),
        "prefill_pieces_s": round(spent["pieces"] / n_prompts, 3),
        "prefill_pieces_vs_whole": round(spent["pieces"] / spent["whole"], 3),
        "prefill_tiles_s": round(spent["tiles"] / n_prompts, 3),
        "prefill_tiles_vs_whole": round(spent["tiles"] / spent["whole"], 3),
        "token_ms": ms,
        "one_thread_vs_plain": round(ms["one_thread"] / ms["plain"], 3),
        "padded_vs_plain": round(ms["padded"] / ms["plain"], 3),
    }


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
    """(c) Mean probe latency, log-probabilities on, answers drawn (the default) and sampled.

    The probes are of personas (a) did not use: (a) leaves the default model's engine with
    its personas' preambles saved, which would spare the drawn side (the default model)
    their prefill and not the sampled side (another engine).
    """
    out: dict[str, Any] = {"probes": PROBES}
    for label, model in PROBE_SIDES.items():
        gateway = _gateway(model)
        requests = _requests(
            PROBES + 1, probe=True, logprobs=True, model=model, first=THROUGHPUT_PROMPTS + 1
        )
        loop.run_until_complete(gateway.call(requests[0]))
        started = time.perf_counter()
        outcomes = [loop.run_until_complete(gateway.call(r)) for r in requests[1:]]
        seconds = time.perf_counter() - started
        out[label] = {
            "model": model,
            "mean_latency_s": round(seconds / PROBES, 3),
            "parsed": sum(o.ok for o in outcomes),
            "with_option_probs": sum("option_probs" in o.extra for o in outcomes),
            "completion_tokens": sum(o.completion_tokens for o in outcomes),
        }
    out["speedup"] = round(out["sampled"]["mean_latency_s"] / out["drawn"]["mean_latency_s"], 2)
    return out


def extra_bufts_section() -> str:
    """The section on llama.cpp's extra CPU buffer types, from ``bench_extra_bufts.py``'s
    result file (empty when it has not been run)."""
    if not EXTRA_BUFTS_RESULTS.is_file():
        return ""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_extra_bufts import features, host_name

    result = json.loads(EXTRA_BUFTS_RESULTS.read_text(encoding="utf-8"))
    lines = [
        "",
        "## Extra CPU buffer types: hosts tried and what turning them off costs",
        "",
        f"From `benchmarks/bench_extra_bufts.py` (`benchmarks/results/extra_bufts.json`, "
        f"details in [benchmarks-extra-bufts.md](benchmarks-extra-bufts.md)), "
        f"{len(result['hosts'])} host(s), medians of alternating rounds:",
    ]
    ratios = []
    for entry in result["hosts"]:
        builds = entry["builds"]
        lines += [
            "",
            f"{host_name(entry['host'])}: {len(builds)} llama-cpp-python "
            f"{builds[0].get('llama_cpp_python', '')} build(s), {entry['threads']} thread, "
            f"{entry['rounds']} rounds.",
            "",
        ]
        for build in builds:
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
                ratios += [ratio["prefill_tok_s"], ratio["decode_tok_s"]]
                lines.append(
                    f"- build with {info}: with them off, prefill runs at "
                    f"{ratio['prefill_tok_s']:.2f}x and decode at {ratio['decode_tok_s']:.2f}x "
                    "the speed with them on."
                )
    if ratios:
        lines += [
            "",
            f"Where they work, turning them off runs at {min(ratios):.2f}x to "
            f"{max(ratios):.2f}x the speed with them on.",
        ]
    lines += [
        "",
        EXTRA_BUFTS_POLICY,
    ]
    return "\n".join(lines) + "\n"


def throughput_section(a: dict[str, Any], profile: dict[str, Any] | None) -> str:
    """Section (a): both pairings, the ratio, and where simworld's time goes."""
    from simworld.llm.providers.local_sampler import MIN_P, TEXT_REPEAT_PENALTY, TOP_K, TOP_P

    if "pairs" not in a:  # a result file from before the pairings
        return f"Ratio simworld / direct: **{a['ratio']}** (target >= {a['target_ratio']})."
    setup = a["setup"]
    names = {
        "same_work": "same work: every prompt token evaluated on both sides",
        "default": "each side's default prefix reuse",
    }
    rows = []
    for pair, r in a["pairs"].items():
        for side in ("simworld", "direct"):
            x = r[side]
            rows.append(
                f"| {names[pair]} | {side} | {x['seconds']} | {x['prompt_tokens']} | "
                f"{x['completion_tokens']} | {x['completion_tokens_per_s']} | "
                f"{x['total_tokens_per_s']} |"
            )
    lines = [
        f"{a['calls']} post prompts of different personas (one more before each block, as a",
        "warm-up), through simworld (gateway, litellm, the `local/` provider in its child",
        "process) and straight to a `llama_cpp.Llama` of the same GGUF loaded the same way",
        f"({setup['threads']} threads, n_ctx {setup['n_ctx']}, extra buffer types "
        f"{'on' if setup['extra_bufts'] else 'off'}), with simworld's sampling chain (repeat",
        f"penalty {TEXT_REPEAT_PENALTY}, top-k {TOP_K}, top-p {TOP_P}, min-p {MIN_P}, the same "
        "temperature and seed) and asked",
        "for as many tokens as simworld generated. Blocks of all prompts alternate between the",
        f"sides, the order flipping each round ({a['rounds']} rounds): a call right after the",
        "other process's leaves it competing with that process's spinning OpenMP threads.",
        "",
        "| pairing | path | seconds | prompt tokens | completion tokens | completion tok/s "
        "| total tok/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Ratio of total tokens/s, simworld / direct, same work: **{a['ratio']}** (target >= "
        f"{a['target_ratio']}: {'met' if a['ratio'] >= a['target_ratio'] else '**missed**'}); "
        f"with each side's default reuse: {a['pairs']['default']['ratio']}. Direct calls stop",
        "at end-of-sequence, so the rates, not the seconds, are comparable.",
    ]
    if profile:
        lines += [
            "",
            f"Where simworld's time goes: the {profile['calls']} same-work calls run in-process "
            f"(`SIMWORLD_LOCAL_PROCESS=inline`) one after another, {profile['seconds']} s in "
            "all, with these parts timed in whichever thread ran them; share of the total "
            "(parts nest: prefill, slot steps and the move into a slot are within engine generate, "
            "llama_decode within prefill and slot steps):",
            "",
            *(f"- {name}: {share:.1%}" for name, share in profile["shares"].items()),
            "",
            "What engine generate leaves of the total is simworld's own path around the model "
            "(gateway, litellm, the provider's request and response).",
        ]
    return "\n".join(lines) + "\n"


def costs_section(d: dict[str, Any] | None, a: dict[str, Any]) -> str:
    """Section (d): what simworld's determinism costs, and the ratio those costs alone give."""
    if not d:
        return ""
    ms = d["token_ms"]
    same = a["pairs"]["same_work"]["simworld"] if "pairs" in a else a["simworld"]
    per_call = same["completion_tokens"] / (a["calls"] * a["rounds"])
    direct = d["prefill_whole_s"] + per_call * ms["plain"] / 1000
    simworld = d["prefill_pieces_s"] + per_call * ms["padded"] / 1000
    tiles_row, tiles_note = "", ""
    if "prefill_tiles_s" in d:  # measured since edb8c43
        tiles_row = (
            f"| a prompt's prefill, in pieces of {FA_TILE} tokens (the last one shorter) | "
            f"{d['prefill_tiles_s']} s | {d['prefill_tiles_vs_whole']} |\n"
        )
        tiles_note = f"""
The pieces of {FA_TILE} tokens are fewer than simworld's, and all but a prompt's last take
the tiled path of llama.cpp's CPU flash attention, which a batch of {FA_TILE} or more queries
takes; a smaller batch, as most of simworld's pieces (cut at line ends) are, takes the
per-row path. On the tiled path a token's numbers do not depend on where its piece begins
or ends; an engine built on that (every piece {FA_TILE} tokens or more, reused at any token) ran
the main job no faster and was not kept.
"""
    return f"""## (d) What determinism costs

The same {d["prompts"]} post prompts (about {d["prompt_tokens"]} tokens each) with one plain
`llama_cpp.Llama` loaded as the engine loads its model ({d["threads"]} threads), the ways
alternating within each of {d["rounds"]} rounds:

| | time | vs llama-cpp-python's way |
| --- | --- | --- |
| a prompt's prefill, whole (llama-cpp-python) | {d["prefill_whole_s"]} s | 1 |
| a prompt's prefill, in simworld's pieces ({d["pieces"]} a prompt) | {d["prefill_pieces_s"]} s \
| {d["prefill_pieces_vs_whole"]} |
{tiles_row}| a generated token alone, every thread (llama-cpp-python) | {ms["plain"]} ms | 1 |
| a generated token alone, one thread (the other way off the split-KV path) | \
{ms["one_thread"]} ms | {d["one_thread_vs_plain"]} |
| a generated token with a pad, every thread (simworld's way for a single token) | \
{ms["padded"]} ms | {d["padded_vs_plain"]} |

Why simworld pays them: the pieces make every prompt token's KV entry the same whatever
was reused before it (see Notes); and a single token's decode on more than one thread takes
flash attention's split-KV path, whose sums depend on the thread count, which changes as a
pool's engines lend each other threads, so a lone token gets a pad token that keeps it off
that path (a lone call in a decode slot, and every single token of the serial engine:
`slots=1`, sampled answers, log-probabilities); decoding it on one thread would too, at the
cost above. At (a)'s {per_call:.1f} completion tokens a call,
these costs alone give simworld / direct = {direct / simworld:.3f} (sampling and simworld's
own path left out, on both sides).
{tiles_note}"""


def provenance(result: dict[str, Any]) -> str:
    """Which run of ``bench_local.py`` each part's numbers come from (``--only`` keeps the
    other parts of the saved file): one sentence if one run gave them all."""
    parts = result.get("parts", {})

    def where(part: str) -> str:
        record = parts.get(part, {})
        if "host" not in record:  # written before runs were recorded per part
            return f"recorded in commit {record.get('recorded_in', '(unknown)')}"
        made = record["host"]
        changed = " with the local changes the file lists" if record["local_changes"] else ""
        cpu = f"{made['cores']} cores ({made['cpu_model']}, {', '.join(made['flags'])})"
        return f"run at commit {made['commit']}{changed} on {cpu}, started {record['started']}"

    sources = {part: where(part) for part in PARTS}
    versions = f"model `{MODEL}`, llama-cpp-python {result['machine']['llama_cpp_python']}"
    if len(set(sources.values())) == 1:
        return (
            f"Numbers from one run of `benchmarks/bench_local.py` ({versions}), copied from\n"
            f"`benchmarks/results/local.json`: {sources['throughput']}."
        )
    lines = "\n".join(
        f"- ({PARTS[part].letter}): {sources[part]}"
        for part in sorted(PARTS, key=lambda part: PARTS[part].letter)
    )
    return (
        f"Numbers from runs of `benchmarks/bench_local.py` ({versions}), copied from\n"
        "`benchmarks/results/local.json`; `--only` re-ran some parts and kept the others:\n\n"
        + lines
    )


def other_hosts_section(others: list[dict[str, Any]]) -> str:
    """The page's section on other hosts' runs (``local.NAME.json``; empty without any)."""
    if not others:
        return ""
    rows = []
    for result in others:
        a, costs = result["throughput"], result.get("costs") or {}
        made = [record["host"] for record in result["parts"].values() if "host" in record]
        commits = ", ".join(dict.fromkeys(h["commit"] for h in made))
        cells = [
            a["ratio"],
            a["pairs"]["default"]["ratio"],
            f"{result['prefix_reuse']['speedup']}x",
            f"{result['probe_logprobs']['speedup']}x",
            *(f"{costs[key]}x" if key in costs else "-" for key in COST_RATIOS),
        ]
        h = result["parts"]["throughput"]["host"]  # (a)'s, as docs/benchmarks.md names it
        rows.append(
            f"| {host_name(h)}; flags {', '.join(h['flags'])} | {commits} | "
            + " | ".join(str(cell) for cell in cells)
            + " |"
        )
    return f"""## Other hosts

The same benchmark on other kinds of 2-core host (`bench_local.py --out
benchmarks/results/local.NAME.json`); each ratio is side by side within its host's run:

| host | commit | (a) same work | (a) each side's reuse | (b) reuse on / off \
| (c) sampled / drawn | (d) pieces | (d) pad | (d) one thread |
|{" --- |" * 9}
{chr(10).join(rows)}

"""


def summary(result: dict[str, Any], others: list[dict[str, Any]] | None = None) -> str:
    """The markdown summary of one result file (``others``: other hosts' results, in a
    section of their own)."""
    from simworld.llm.providers.local_engine import LINE_PIECE, PREFILL_CHUNK

    a, b, c = result["throughput"], result["prefix_reuse"], result["probe_logprobs"]
    on, off = b["with_reuse"], b["without_reuse"]
    return f"""# Benchmark: the embedded local model

{provenance(result)}

## (a) simworld vs. llama-cpp-python called directly

{throughput_section(a, result.get("profile"))}
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

## (c) Probe latency: answers drawn and sampled

{c["probes"]} probes with log-probabilities, one after another, of personas (a) did not use
(neither side starts with their preambles saved): {c["drawn"]["mean_latency_s"]} s
each with the answer drawn from every option's score (the default, `{c["drawn"]["model"]}`),
{c["sampled"]["mean_latency_s"]} s each sampled token by token and then scored
(`{c["sampled"]["model"]}`): **{c["speedup"]}x**. Option distributions:
{c["drawn"]["with_option_probs"]} and {c["sampled"]["with_option_probs"]} of {c["probes"]};
completion tokens {c["drawn"]["completion_tokens"]} and {c["sampled"]["completion_tokens"]}.

{costs_section(result.get("costs"), a)}
{other_hosts_section(others or [])}## Notes

- Prompts are cut into pieces by their content alone, each evaluated in one batch: a piece
  ends at the end of the preamble (instructions and persona card), at a line end after it
  once it holds {LINE_PIECE} tokens, and after at most {PREFILL_CHUNK} tokens. llama.cpp's CPU
  kernels round differently for different batch sizes: with llama-cpp-python's automatic
  longest-prefix reuse a call's output depends on which call ran before it, so concurrent
  runs would not be reproducible. Reuse keeps the pieces a prompt shares with the previous
  prompt (cut at the same places), or restores a KV state saved with llama.cpp's
  per-sequence state API: each persona's preamble, or a recent prompt (at most its first
  512 tokens, Gemma 3's sliding window: a longer sequence's state keeps only the window's
  last positions of those layers) cut back to the pieces it shares with the new one, so an
  agent's next call starts from its last one (persona, topic line and earlier memories)
  even when other agents' calls ran between. A saved prompt state a call starts from is
  replaced by that call's own. Only a prompt's last piece asks for logits: the earlier ones
  skip the output matrix.
- llama-cpp-python's `LlamaRAMCache` (`save_state`/`load_state`) was tried and not used: it
  copies the whole logits buffer (262k-token vocabulary times the batch size) on every save
  and load, which made it slower than evaluating the prompt again.
""" + extra_bufts_section()


def main() -> None:
    """Run the benchmark; write the JSON result and the markdown summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite the markdown from the saved JSON"
    )
    parser.add_argument(
        "--prompts",
        type=int,
        default=THROUGHPUT_PROMPTS,
        help=f"prompts per block in (a) (default {THROUGHPUT_PROMPTS}; fewer to check the script)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run this part (repeatable), keeping the others from the saved JSON",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="result file (local.NAME.json beside local.json: another kind of host's run)",
    )
    args = parser.parse_args()
    globals()["THROUGHPUT_PROMPTS"] = args.prompts
    if args.summary_only:
        write_summary()
        return
    import llama_cpp  # noqa: F401  # fail fast without the extra

    out: Path = args.out
    run = set(args.only or PARTS)
    saved = harness.read_result(out) if run != set(PARTS) and out.is_file() else {}
    missing = sorted(part for part in set(PARTS) - run if PARTS[part].keys[0] not in saved)
    if missing:
        raise SystemExit(f"{out}: no saved {', '.join(missing)} to keep; run them too")
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "llama_cpp_python": metadata.version("llama-cpp-python"),
        },
        "parts": dict(saved.get("parts", {})),
    }
    made = {  # the same for every part this run measures
        "host": host(),
        "local_changes": harness.local_changes(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),  # names this run
    }
    loop = asyncio.new_event_loop()
    measure = {
        "throughput": lambda: (throughput(loop), profile_simworld(loop)),
        "probes": lambda: (probe_logprobs(loop),),
        "costs": lambda: (determinism_costs(),),
        "reuse": lambda: (prefix_reuse(),),
    }
    for part, (_, keys) in PARTS.items():
        if part not in run:
            result.update({key: saved.get(key) for key in keys})
            continue
        load_start = harness.loadavg()
        result.update(zip(keys, measure[part](), strict=True))
        result["parts"][part] = {
            **made,
            "loadavg_start": load_start,
            "loadavg_end": harness.loadavg(),
        }
    loop.close()
    harness.write_result(out, result)
    write_summary()
    print(json.dumps(result, indent=2))


def write_summary() -> None:
    """Write the page from ``local.json``, listing the other hosts' files beside it (none
    while ``local.json`` is missing)."""
    if RESULTS.is_file():
        SUMMARY.write_text(summary(harness.read_result(RESULTS), other_hosts(RESULTS)))


if __name__ == "__main__":
    main()
