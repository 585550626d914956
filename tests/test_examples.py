"""The scripts in examples/ run as a user would run them (fake provider, no network)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import simworld as sw

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, out_root: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), str(out_root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("name", ["step_scenario.py", "custom_tracker.py", "new_protocol.py"])
def test_examples_are_short(name: str) -> None:
    assert len((ROOT / "examples" / name).read_text(encoding="utf-8").splitlines()) < 100


@pytest.mark.slow
def test_step_scenario(tmp_path: Path) -> None:
    out = run_example("step_scenario.py", tmp_path)
    assert "opinions of 30 agents, steps [0, 1, 2]" in out
    assert ": completed" in out
    assert len(list((tmp_path / "opinion_exchange").iterdir())) == 1


@pytest.mark.slow
def test_custom_tracker(tmp_path: Path) -> None:
    out = run_example("custom_tracker.py", tmp_path)
    assert "'message_length': 'identical'" in out and "'different'" not in out
    assert "shows message_length: True" in out
    (run_dir,) = (tmp_path / "opinion_exchange").iterdir()
    assert (run_dir / "trackers" / "message_length.parquet").is_file()


@pytest.mark.slow
def test_new_protocol(tmp_path: Path) -> None:
    out = run_example("new_protocol.py", tmp_path)
    assert ": completed" in out
    assert "modes: ['bounded_confidence']" in out
    assert "replay identical: True" in out
    (run_dir,) = (tmp_path / "opinion_exchange").iterdir()
    manifest = (run_dir / "manifest.json").read_text(encoding="utf-8")
    assert "new_protocol.py:BoundedConfidence" in manifest
    events = pd.DataFrame(sw.read_transcript(run_dir))
    messages = events[events.type == "message"]
    opinions = pd.read_parquet(run_dir / "opinions.parquet")
    view = {(r.step, r.agent, r.topic): r.value for r in opinions.itertuples()}
    assert len(messages) > 0
    for m in messages.itertuples():
        own = view[(m.step - 1, m.agent, m.topic)]
        assert m.to and all(abs(view[(m.step - 1, a, m.topic)] - own) <= 1 for a in m.to)
