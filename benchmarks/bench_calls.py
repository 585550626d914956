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
characters / 4 estimate of :mod:`simworld.llm.prefix`), and the cacheable-prefix share (the
estimated prompt tokens repeating the same agent's previous prompt, the run's
``prefix_share``). An agent-step is one agent in one interaction step (30 × 3 = 90); the
step-0 probes are counted in the totals.

Run: ``.venv/bin/python benchmarks/bench_calls.py`` (writes ``benchmarks/results/calls.json``,
then ``docs/benchmarks-calls.md`` from that file; ``--doc`` rewrites only the page).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pandas as pd

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
TARGET_PREFIX_SHARE = 0.70
HEADER = (
    "| option | calls | by purpose | calls / agent-step | provider prompt tokens / agent-step "
    "| estimated prompt tokens / agent-step | prefix share |\n"
    "| --- | --- | --- | --- | --- | --- | --- |"
)


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
        "prefix_tokens_est": int(totals["prefix_tokens_est"]),
        "prefix_share": round(manifest["prefix_share"], 4),
        "prefix_share_by_kind": {
            kind: round(float(g.prefix_tokens.sum() / g.prompt_tokens_est.sum()), 4)
            for kind, g in calls.groupby(calls.purpose.str.split(":").str[0], sort=True)
        },
        "failures": int(totals["failures"]),
    }


def write_doc(data: dict[str, Any]) -> None:
    """``docs/benchmarks-calls.md`` from the result file's numbers."""
    rows = data["options"]
    table = "\n".join(
        f"| `{r['option']}` | {r['calls']} | "
        + ", ".join(f"{k} {v}" for k, v in r["calls_by_kind"].items())
        + f" | {r['calls_per_agent_step']:.2f} | {r['prompt_tokens_per_agent_step']:,.0f} | "
        f"{r['prompt_tokens_est_per_agent_step']:,.0f} | {100 * r['prefix_share']:.1f} % |"
        for r in rows
    )
    base = rows[0]
    by_name = {r["option"]: r for r in rows}

    def saving(name: str, key: str) -> str:
        return f"{100 * (1 - by_name[name][key] / base[key]):.0f} %"

    met = base["prefix_share"] >= data["target_prefix_share"]
    by_kind = ", ".join(f"{k} {100 * v:.1f} %" for k, v in base["prefix_share_by_kind"].items())
    DOC.write_text(
        f"""# Benchmark: calls and prompt tokens per agent-step

Written by `benchmarks/bench_calls.py` from `benchmarks/results/calls.json`; do not edit by
hand. Run it with `.venv/bin/python benchmarks/bench_calls.py`.

`{data["scenario"]}` ({base["agents"]} agents, {base["steps"]} steps, both topics probed at
step 0 and after every step) on `{data["model"]}`, once per call-saving option. Counts, not
timings. An agent-step is one agent in one interaction step ({base["agent_steps"]} here); the
step-0 probes are included in the totals. Provider tokens are what the provider reports (the
fake counts whitespace-separated words); estimated tokens are characters / 4. The prefix
share is the share of estimated prompt tokens that repeat the start of the same agent's
previous prompt in the same role, what a provider prefix cache can reuse (see
`docs/outputs.md`, `llm_calls.prefix_tokens`).

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
- Cacheable-prefix share of the default: {100 * base["prefix_share"]:.1f} % (target
  ≥ {100 * data["target_prefix_share"]:.0f} %: {"met" if met else "**missed**"}).
  By purpose: {by_kind}.
  The prompts put what repeats between an agent's consecutive calls first: the persona's
  system prompt, then the topic, then what the agent heard (oldest first), then the options
  (a counterbalanced probe draws their order per call) and the task (post, reply or private
  probe) last; an agent's probes are sent with the topic just discussed first and the one to
  be discussed next last. Stance calls put their fixed instructions and the options first and
  the message last. What is not shared: every chain's first call (nothing before it), the
  probe of the other topic (the topic and what was heard about it differ, only the persona is
  shared), what was heard since the agent's post (new lines, and the oldest dropped from the
  memory window), and the topic and message of each stance call (its chain, the annotator's
  calls about one speaker, has one call per step and the topics take turns).

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
            "target_prefix_share": TARGET_PREFIX_SHARE,
            "options": options,
        }
        RESULTS.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    write_doc(json.loads(RESULTS.read_text(encoding="utf-8")))


if __name__ == "__main__":
    main()
