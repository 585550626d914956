"""Calls and prompt tokens per agent-step of the main scenario, for each call-saving option.

Counts, not timings: ``scenarios/opinion_exchange.yaml`` (30 agents, 3 steps, 2 topics probed
at every step and at step 0) on the fake provider, once per option:

- ``separate``: the default, a stance call per message (``trackers.stance: true``);
- ``inline``: the speaker reports its position in the speech call (``trackers.stance: inline``);
- ``probe batch``: both topics of a probe in one call (``protocol.probe_batch: true``);
- ``inline + probe batch``: both;
- ``no stances``: no stance extraction at all (``trackers.stance: false``), for reference.

For each: logical calls per agent-step (by purpose), prompt tokens per agent-step (as the
provider reports them, the fake counting whitespace-separated words, and as the
characters / 4 estimate of :mod:`simworld.llm.prefix`), and the two prefix shares of
:mod:`simworld.llm.prefix`: the cacheable share (the estimated prompt tokens in leading blocks
an earlier prompt of the run began with, what a provider's shared block cache can reuse, the
run's ``cacheable_share``; the issue's target, >= 70 %, is judged on it) and, beside it, the
per-agent share (the tokens repeating the same agent's previous prompt, ``prefix_share``). An
agent-step is one agent in one interaction step (30 × 3 = 90); the step-0 probes are counted
in the totals.

It also measures the memory of a full :class:`~simworld.llm.prefix.BlockCache`
(:data:`~simworld.llm.prefix.CACHE_BLOCKS` digests, traced with :mod:`tracemalloc`), the figure
``docs/outputs.md`` quotes.

Run: ``.venv/bin/python benchmarks/bench_calls.py`` (writes ``benchmarks/results/calls.json``,
then ``docs/benchmarks-calls.md`` from that file; ``--doc`` rewrites only the page).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import harness  # benchmarks/, on the path when this script runs
import pandas as pd

from simworld.llm.prefix import CACHE_BLOCK_CHARS, CACHE_BLOCKS, BlockCache
from simworld.runs.run import run_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "opinion_exchange.yaml"
RESULTS = Path(__file__).parent / "results" / "calls.json"
DOC = ROOT / "docs" / "benchmarks-calls.md"
MODEL = "fake/default"
OPTIONS: dict[str, dict[str, Any]] = {
    "separate": {"trackers.stance": True},
    "inline": {"trackers.stance": "inline"},
    "probe batch": {"protocol.probe_batch": True},
    "inline + probe batch": {"trackers.stance": "inline", "protocol.probe_batch": True},
    "no stances": {"trackers.stance": False},
}
TARGET_CACHEABLE_SHARE = 0.70
HEADER = (
    "| option | calls | by purpose | calls / agent-step | provider prompt tokens / agent-step "
    "| estimated prompt tokens / agent-step | cacheable share | per-agent prefix share |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
)
FILL_BLOCKS = 1024
"""Blocks per prompt when filling a block cache to measure its memory."""


def measure(name: str, overrides: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run the scenario with ``overrides`` on the fake provider and count its calls."""
    run_dir = tmp / name.replace(" ", "_")
    result = run_scenario(
        SCENARIO,
        overrides={"llm.model": MODEL, "llm.cache": "off", **overrides},
        out_dir=run_dir,
    )
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    calls = pd.read_parquet(run_dir / "llm_calls.parquet")
    agent_steps = result.agents * result.steps
    totals = manifest["totals"]
    kinds = Counter(str(p).split(":", 1)[0] for p in calls.purpose)
    return {
        "option": name,
        "overrides": {k: v for k, v in overrides.items()},
        "agents": result.agents,
        "steps": result.steps,
        "agent_steps": agent_steps,
        "calls": int(totals["calls"]),
        "calls_by_kind": dict(sorted(kinds.items())),
        "calls_per_agent_step": round(totals["calls"] / agent_steps, 3),
        "prompt_tokens": int(totals["prompt_tokens"]),
        "prompt_tokens_per_agent_step": round(totals["prompt_tokens"] / agent_steps, 1),
        "prompt_tokens_est": int(totals["prompt_tokens_est"]),
        "prompt_tokens_est_per_agent_step": round(totals["prompt_tokens_est"] / agent_steps, 1),
        "cacheable_tokens_est": int(totals["cacheable_tokens_est"]),
        "cacheable_share": round(manifest["cacheable_share"], 4),
        "cacheable_share_by_kind": share_by_kind(calls, "cacheable_tokens"),
        "prefix_tokens_est": int(totals["prefix_tokens_est"]),
        "prefix_share": round(manifest["prefix_share"], 4),
        "prefix_share_by_kind": share_by_kind(calls, "prefix_tokens"),
        "failures": int(totals["failures"]),
    }


def share_by_kind(calls: pd.DataFrame, column: str) -> dict[str, float]:
    """``column``'s share of the estimated prompt tokens per kind of call (purpose before ``:``)."""
    return {
        kind: round(float(g[column].sum() / g.prompt_tokens_est.sum()), 4)
        for kind, g in calls.groupby(calls.purpose.str.split(":").str[0], sort=True)
    }


def cache_memory() -> dict[str, int]:
    """Bytes a :class:`BlockCache` holds when full, traced with :mod:`tracemalloc`.

    Fills a cache with :data:`CACHE_BLOCKS` distinct digests (prompts of :data:`FILL_BLOCKS`
    blocks, each starting differently), then adds one more prompt to check it stays at the cap.
    """
    prompts = CACHE_BLOCKS // FILL_BLOCKS
    tail = "x" * CACHE_BLOCK_CHARS * (FILL_BLOCKS - 1)
    tracemalloc.start()
    try:
        cache = BlockCache()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(prompts):
            cache.measure(f"{i:0{CACHE_BLOCK_CHARS}d}" + tail)
        full = tracemalloc.get_traced_memory()[0] - before
        digests = len(cache)
        cache.measure(f"{prompts:0{CACHE_BLOCK_CHARS}d}" + tail)
        after = len(cache)
    finally:
        tracemalloc.stop()
    return {
        "capacity": CACHE_BLOCKS,
        "digests_when_full": digests,
        "digests_after_one_more_prompt": after,
        "bytes_when_full": full,
        "bytes_per_digest": round(full / digests),
    }


def write_doc(data: dict[str, Any]) -> None:
    """``docs/benchmarks-calls.md`` from the result file's numbers."""
    rows = data["options"]
    table = "\n".join(
        f"| `{r['option']}` | {r['calls']} | "
        + ", ".join(f"{k} {v}" for k, v in r["calls_by_kind"].items())
        + f" | {r['calls_per_agent_step']:.2f} | {r['prompt_tokens_per_agent_step']:,.0f} | "
        f"{r['prompt_tokens_est_per_agent_step']:,.0f} | {100 * r['cacheable_share']:.1f} % | "
        f"{100 * r['prefix_share']:.1f} % |"
        for r in rows
    )
    base = rows[0]
    by_name = {r["option"]: r for r in rows}

    def saving(name: str, key: str) -> str:
        return f"{100 * (1 - by_name[name][key] / base[key]):.0f} %"

    target = data["target_cacheable_share"]
    met = base["cacheable_share"] >= target
    by_kind = ", ".join(
        f"{k} {100 * v:.1f} % ({100 * base['prefix_share_by_kind'][k]:.1f} %)"
        for k, v in base["cacheable_share_by_kind"].items()
    )
    mem = data["cache_memory"]
    missed = ", ".join(f"`{r['option']}`" for r in rows if r["cacheable_share"] < target)
    options_note = f"Below the target: {missed}." if missed else "Every option meets the target."
    DOC.write_text(
        f"""# Benchmark: calls and prompt tokens per agent-step

Written by `benchmarks/bench_calls.py` from `benchmarks/results/calls.json`; do not edit by
hand. Run it with `.venv/bin/python benchmarks/bench_calls.py`.

`{data["scenario"]}` ({base["agents"]} agents, {base["steps"]} steps, both topics probed at
step 0 and after every step) on `{data["model"]}`, once per call-saving option. Counts, not
timings. An agent-step is one agent in one interaction step ({base["agent_steps"]} here); the
step-0 probes are included in the totals. Provider tokens are what the provider reports (the
fake counts whitespace-separated words); estimated tokens are characters / 4. The cacheable
share is the share of estimated prompt tokens in leading 64-character blocks that an earlier
prompt of the run to the same model, of any agent, also started with: what a provider's
shared prefix cache (vLLM, SGLang, hosted APIs) can reuse. The per-agent prefix share beside
it counts only the start each prompt shares with the same agent's previous prompt in the same
role (see `docs/outputs.md`, `llm_calls.cacheable_tokens` and `llm_calls.prefix_tokens`).

{HEADER}
{table}

- `trackers.stance: inline` saves {saving("inline", "calls")} of the calls and
  {saving("inline", "prompt_tokens_est")} of the estimated prompt tokens of the default; on the
  fake provider it gives the same messages and stances (the trade-off in measurement is
  described in `docs/trackers.md`).
- `protocol.probe_batch: true` saves {saving("probe batch", "calls")} of the calls and
  {saving("probe batch", "prompt_tokens_est")} of the estimated prompt tokens (the persona's
  system prompt is sent once per probe instead of once per topic); both options together save
  {saving("inline + probe batch", "calls")} of the calls and
  {saving("inline + probe batch", "prompt_tokens_est")} of the estimated prompt tokens. The
  trade-off in measurement (answers given together can prime each other, no option
  probabilities) is described with `protocol.probe_batch` in the README.
- Cacheable share of the default: {100 * base["cacheable_share"]:.1f} % (target
  ≥ {100 * target:.0f} %: {"met" if met else "**missed**"}; per-agent prefix share
  {100 * base["prefix_share"]:.1f} %).
  {options_note}
  By purpose, cacheable (per-agent): {by_kind}.
  The prompts put what repeats first: the persona's system prompt, then the topic, then what
  the agent heard (oldest first), then the options (a counterbalanced probe draws their order
  per call) and the task (post, reply or private probe) last; an agent's probes are sent with
  the topic just discussed first and the one to be discussed next last. Stance calls put their
  fixed instructions and the options first and the message last.
- Why the two shares differ. A shared cache also holds prompts older than the agent's last
  one, and other agents' prompts: an agent's probe of the other topic starts as its probe of
  that topic one step earlier did (the persona, the topic, and what it heard then, oldest
  first), where the per-agent measure sees only the persona in common with the probe just
  before it; and an annotator's stance call starts as the stance calls about other speakers in
  the same step did (the fixed instructions, the options and the step's topic) and as the call
  about the same speaker two steps earlier (the same topic again, and the speaker's name),
  which the per-agent measure (one chain per speaker, one call per step, the topics taking
  turns) mostly misses. Against that, the cache counts whole blocks
  only: the part of a shared start past the last whole 64-character block (up to 15 estimated
  tokens per call) counts for the per-agent measure but not for the cache.
  What neither can reuse: the run's first prompt of each persona and topic, what was heard
  since (new lines, and the oldest dropped from the memory window), and each stance call's
  message.
- Memory of the block cache: {mem["bytes_when_full"] / 1e6:,.0f} MB when full
  ({mem["digests_when_full"]:,} digests of 16 bytes, {mem["bytes_per_digest"]} bytes each with
  the LRU's bookkeeping, traced with `tracemalloc`); one more prompt leaves it at
  {mem["digests_after_one_more_prompt"]:,}. The main scenario's run never fills it (its
  {base["prompt_tokens_est"]:,} estimated prompt tokens are at most
  {base["prompt_tokens_est"] * 4 // 64:,} blocks).

Machine: {data["machine"]["cpus"]} CPUs, Python {data["machine"]["python"]}.
""",
        encoding="utf-8",
    )


def main() -> None:
    """Measure every option, write the result file, then the docs page from it."""
    if "--doc" not in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            options = [measure(n, o, Path(tmp)) for n, o in OPTIONS.items()]
        data = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "scenario": "scenarios/opinion_exchange.yaml",
            "model": MODEL,
            "target_cacheable_share": TARGET_CACHEABLE_SHARE,
            "options": options,
            "cache_memory": cache_memory(),
        }
        harness.write_result(RESULTS, data)
    write_doc(harness.read_result(RESULTS))


if __name__ == "__main__":
    main()
