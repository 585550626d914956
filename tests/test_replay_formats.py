"""Replaying a run recorded in an older file format: identical in content is identical (exit
0), with a note that the recorded file's format is older; a changed value is still a
difference (exit 1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from simworld.cli import main
from simworld.runs.replay import verify_replay
from simworld.runs.run import run_scenario


def _as_json_probs(path: Path, change: bool = False) -> None:
    """Rewrite ``opinions.parquet`` as runs did before ``probs`` was a typed list."""
    df = pd.read_parquet(path)
    texts = [None if p is None else json.dumps({c["option"]: c["prob"] for c in p})
             for p in df["probs"]]  # fmt: skip
    if change:
        i = next(i for i, t in enumerate(texts) if t is not None)
        texts[i] = json.dumps({"1": 1.0})
    df.assign(probs=texts).to_parquet(path)


@pytest.fixture
def recorded(make_scenario: Callable[..., Path], tmp_path: Path) -> Path:
    run = tmp_path / "run"
    path = make_scenario({"protocol.steps": 1})
    assert run_scenario(path, out_dir=run, cache_path=tmp_path / "c.db").status == "completed"
    assert pd.read_parquet(run / "opinions.parquet")["probs"].notna().any()
    return run


def test_an_older_table_format_replays_identical_in_content(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _as_json_probs(recorded / "opinions.parquet")
    report = verify_replay(recorded)
    assert report.identical and not report.byte_identical
    assert report.notes and report.notes[0].startswith("opinions.parquet: same values")
    assert main(["replay", str(recorded), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "replay     identical in content (transcript.jsonl, opinions.parquet)" in out
    assert "note       opinions.parquet: same values, different bytes" in out
    assert "DIFFERENT" not in out


def test_a_changed_value_in_an_older_table_is_still_a_difference(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _as_json_probs(recorded / "opinions.parquet", change=True)
    assert main(["replay", str(recorded), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT  opinions.parquet row" in out and ": probs" in out
