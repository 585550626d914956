"""Transcript size benchmark: complete graphs, recipients written compactly or as lists.

Run: ``.venv/bin/python benchmarks/bench_transcript.py`` (writes
``benchmarks/results/transcript.json``, then ``docs/benchmarks-transcript.md`` and its figure
``docs/images/bench-transcript.png`` from that file). Each size runs the shipped
opinion-exchange scenario on a complete graph for ``STEPS`` steps with the fake provider,
twice: writing ``to`` compactly (``{"neighbours_of": ...}``, what runs write) and as lists
(``explicit``, what runs wrote before). It records the transcript's bytes, the bytes of its
``message`` lines, and whether the tracker frames of the two forms are byte-identical.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import harness  # benchmarks/, on the path when this script runs
import matplotlib.pyplot as plt

from simworld.config.scenario import resolve_scenario
from simworld.runs.run import execute
from simworld.support.recipients import COMPACT, EXPLICIT

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "opinion_exchange.yaml"
RESULTS = Path(__file__).parent / "results" / "transcript.json"
DOC = ROOT / "docs" / "benchmarks-transcript.md"
FIGURE = ROOT / "docs" / "images" / "bench-transcript.png"
SIZES = (50, 100, 200, 400)
STEPS = 2
MB = 1024**2
HEADER = (
    "| agents | messages | transcript, lists | transcript, compact | message lines, lists "
    "| message lines, compact | same tracker frames and opinions |\n"
    "| --- | --- | --- | --- | --- | --- | --- |"
)


def one_run(agents: int, form: str, out: Path) -> dict[str, Any]:
    """Run one size in one form; its transcript's bytes and the run's wall time."""
    overrides = {
        "llm.model": "fake/default",
        "population.size": agents,
        "population.replace": True,
        "network": {"generator": "complete"},
        "protocol.steps": STEPS,
    }
    scenario, source = resolve_scenario(SCENARIO, overrides)
    run_dir = out / f"{form}-{agents}"
    started = time.perf_counter()
    result = execute(
        scenario,
        source=source,
        run_dir=run_dir,
        cache_path=out / f"{form}-{agents}.db",
        recipients=form,  # type: ignore[arg-type]
    )
    wall = time.perf_counter() - started
    assert result.status == "completed", result.error
    path = run_dir / "transcript.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    message = [x for x in lines if '"type": "message"' in x]
    return {
        "bytes": path.stat().st_size,
        "message_bytes": sum(len(x.encode("utf-8")) for x in message),
        "messages": len(message),
        "wall_s": round(wall, 2),
        "run_dir": run_dir,
    }


def frames(run_dir: Path) -> dict[str, bytes]:
    """The tracker frames and the opinions table, as bytes."""
    files = [*sorted((run_dir / "trackers").glob("*.parquet")), run_dir / "opinions.parquet"]
    return {p.name: p.read_bytes() for p in files}


def measure() -> dict[str, Any]:
    """Every size in both forms."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="simworld-bench-transcript-") as tmp:
        for agents in SIZES:
            compact = one_run(agents, COMPACT, Path(tmp))
            explicit = one_run(agents, EXPLICIT, Path(tmp))
            same = frames(compact.pop("run_dir")) == frames(explicit.pop("run_dir"))
            rows.append(
                {"agents": agents, "compact": compact, "explicit": explicit, "same_frames": same}
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return {
        "scenario": SCENARIO.stem,
        "steps": STEPS,
        "sizes": rows,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def render(result: dict[str, Any]) -> None:
    """``docs/benchmarks-transcript.md`` and its figure, from the result file's numbers."""
    rows = result["sizes"]
    agents = [r["agents"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for form, marker in (("explicit", "s"), ("compact", "o")):
        per_agent = [r[form]["bytes"] / r["agents"] / 1024 for r in rows]
        label = "lists (before)" if form == "explicit" else "compact (now)"
        ax.plot(agents, per_agent, marker=marker, label=label)
    ax.set_xlabel("agents on a complete graph (count)")
    ax.set_ylabel("transcript per agent (KiB)")
    ax.set_title(f"Transcript bytes per agent, {result['steps']} steps")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    harness.save_figure(fig, FIGURE)
    table = "\n".join(
        f"| {r['agents']} | {r['compact']['messages']} | {r['explicit']['bytes'] / MB:.2f} | "
        f"{r['compact']['bytes'] / MB:.2f} | {r['explicit']['message_bytes'] / MB:.2f} | "
        f"{r['compact']['message_bytes'] / MB:.2f} | {r['same_frames']} |"
        for r in rows
    )
    largest = rows[-1]
    saved = 1 - largest["compact"]["bytes"] / largest["explicit"]["bytes"]
    first_kib, last_kib = (r["compact"]["bytes"] / r["agents"] / 1024 for r in (rows[0], largest))
    DOC.write_text(
        f"""# Benchmark: transcript size on complete graphs

Written by `benchmarks/bench_transcript.py` from `benchmarks/results/transcript.json`; do not
edit by hand. Run it with `.venv/bin/python benchmarks/bench_transcript.py`.

The shipped `{result["scenario"]}` scenario on a complete graph, {result["steps"]} steps,
fake provider, each size run twice: the messages' `to` written compactly
(`{{"neighbours_of": ...}}` for a post heard by all of the speaker's neighbours, what runs
write; [outputs.md](outputs.md)) and as lists (what runs wrote before). Sizes in MiB.

{HEADER}
{table}

With lists, the message lines grow with the square of the agents (each of n posts lists
n − 1 ids); compact, each message line keeps its size, and the transcript per agent goes
from {first_kib:.1f} to {last_kib:.1f} KiB between {rows[0]["agents"]} and {largest["agents"]}
agents (the rest of the lines, mostly model-call records, not the recipients). At
{largest["agents"]} agents the transcript is {saved:.0%} smaller. Machine: {result["machine"]},
Python {result["python"]}.

![transcript bytes per agent](images/bench-transcript.png)
""",
        encoding="utf-8",
    )


def main() -> None:
    """Measure (unless ``--render-only``), write the result file, render the page."""
    harness.main(__doc__.splitlines()[0], RESULTS, measure, render)


if __name__ == "__main__":
    main()
