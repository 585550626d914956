"""A tracker of your own: it runs live, is re-derived by `simworld analyze`, and shows in the
report. The tracker is examples/message_length.py; the scenario names it by file.

    .venv/bin/python examples/custom_tracker.py [OUT_ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import simworld as sw

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent / "scenarios" / "opinion_exchange.yaml"
TRACKER = f"{HERE / 'message_length.py'}:MessageLength"


def main(out_root: str = "outputs/examples") -> None:
    """Record a run with the tracker, then read its frame and build the report."""
    changes = {"llm.model": "fake/default", "protocol.steps": 2, "trackers.extra": [TRACKER]}
    result = sw.run_scenario(SCENARIO, overrides=changes, out_root=out_root)
    lengths = sw.Run(result.run_dir).frame("message_length")  # written during the run
    print(lengths.groupby("step").mean_words.mean())
    print(sw.analyze_run(result.run_dir, check=True))  # every frame re-derives identically
    report = sw.build_report(result.run_dir)
    shown = "Tracker message_length" in report.read_text(encoding="utf-8")
    print(f"report {report} shows message_length: {shown}")


if __name__ == "__main__":
    main(*sys.argv[1:])
