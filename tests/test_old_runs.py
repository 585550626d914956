"""Runs recorded before issue 17 still analyze to the same frames, except the added columns."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from simworld.analysis.tables import inconstancy_by_diversity
from simworld.runs.run import run_scenario
from simworld.trackers.tracker_set import TRACKERS_DIR, analyze_run

CHANGED = {"conformity", "inconstancy"}  # columns added (and conformity's heard version)


def make_old(run: Path) -> None:
    """Make a fresh fixed-order run look recorded before issue 17: manifest and frames."""
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    del manifest["scenario"]["protocol"]["counterbalance"]
    del manifest["signal"]
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (run / TRACKERS_DIR / "signal.parquet").unlink()
    path = run / TRACKERS_DIR / "inconstancy.parquet"
    pq.write_table(pq.read_table(path).drop(["own_share"]), path)


def test_an_old_run_analyzes_to_the_same_frames_but_the_new_columns(make_scenario, tmp_path):
    scenario = make_scenario(
        {"protocol": {"steps": 2, "mode": "group", "group_size": 4, "rounds": 1},
         "protocol.counterbalance": False, "population.size": 8}
    )  # fmt: skip
    run = tmp_path / "old"
    assert run_scenario(scenario, out_dir=run, cache_path=tmp_path / "c.db").status == "completed"
    before = {p.stem: pd.read_parquet(p) for p in (run / TRACKERS_DIR).glob("*.parquet")}
    make_old(run)
    # the per-S table by own share works on the old frame file (re-derived in memory)
    by_share = inconstancy_by_diversity(run, by="own_share")
    assert len(by_share) and by_share["n"].sum() > 0
    status = analyze_run(run, check=True)
    assert status["signal"] == "new" and status["inconstancy"] == "different"
    assert {k for k, v in status.items() if v != "identical"} <= CHANGED | {"signal"}
    analyze_run(run)
    for name, frame in before.items():
        after = pd.read_parquet(run / TRACKERS_DIR / f"{name}.parquet")
        pd.testing.assert_frame_equal(after, frame)
