"""What the benchmarks share: the result file, the figure, the command line, a test scenario,
and what a result records of its run (the checkout's commit and local changes, the load).

Imported by the ``bench_*.py`` scripts as ``harness`` (``benchmarks/`` is on the path when one
of them runs). A benchmark measures, writes its result file under ``benchmarks/results/``
(:func:`write_result`) and renders its page from that file, never from numbers in memory
(:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

Result = dict[str, Any]
ROOT = Path(__file__).resolve().parents[1]
"""The checkout the benchmarks belong to."""
LIKERT = ["Strongly disagree", "Disagree", "Neutral", "Agree", "Strongly agree"]


def commit(checkout: Path = ROOT) -> str | None:
    """The short hash of ``checkout``'s ``HEAD`` (``None`` outside a git checkout)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True
        )
    except OSError:
        return None
    return done.stdout.strip() or None


OUTPUTS = ("benchmarks/results/", "docs/", "README.md")
"""What benchmark runs write (result files, the pages and README figures rendered from them):
changes there are not local changes of the code measured."""


def local_changes(checkout: Path = ROOT) -> list[str]:
    """The files ``checkout`` has changed since its commit (``git status --porcelain``),
    except :data:`OUTPUTS`: a re-run in a checkout an earlier run wrote to measures the
    commit's code."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=checkout,
            capture_output=True,
            text=True,
        )
    except OSError:
        return []
    changed = [line[3:] for line in done.stdout.splitlines() if line.strip()]
    return [path for path in changed if not path.startswith(OUTPUTS)]


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def write_result(path: Path, result: Result) -> None:
    """Write a result file: indented JSON ending in a newline (its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def read_result(path: Path) -> Result:
    """Read a result file written by :func:`write_result`."""
    data: Result = json.loads(path.read_text(encoding="utf-8"))
    return data


def main(
    description: str,
    results: Path,
    measure: Callable[[], Result],
    render: Callable[[Result], None],
) -> None:
    """A benchmark's command: measure (unless ``--render-only``), write the result file,
    render the page from that file, and print the file.

    Args:
        description: The command's help (the first line of the script's docstring).
        results: The result file.
        measure: Runs the benchmark; returns the result.
        render: Writes the page (and its figures) from a result read back from the file.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--render-only", action="store_true", help="re-render from the file")
    args = parser.parse_args()
    if not args.render_only:
        write_result(results, measure())
    render(read_result(results))
    print(results.read_text(encoding="utf-8"))


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as a page's PNG (no software stamp, so reruns match) and
    close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def machine(load_before: tuple[float, float, float]) -> Result:
    """The host as a result file records it: Python, CPU, cores, load before and now."""
    return {
        "python": platform.python_version(),
        "cpu": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def one_topic_scenario(
    path: Path,
    *,
    name: str,
    library: Path,
    agents: int,
    protocol: dict[str, Any],
    llm: dict[str, Any],
) -> Path:
    """Write a scenario of ``agents`` agents on a complete graph discussing one Likert topic
    (remote work); returns ``path``."""
    data = {
        "name": name,
        "seed": 0,
        "population": {"library": str(library), "size": agents},
        "network": {"generator": "complete"},
        "topics": [
            {
                "id": "remote_work",
                "statement": "Companies should let employees work from home as much as they want.",
                "scale": {"type": "likert", "labels": LIKERT},
            }
        ],
        "protocol": protocol,
        "llm": llm,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
