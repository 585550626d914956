"""``kill -9`` at exact write points, then ``simworld resume`` (or ``run --out`` again, for a
run killed before its first manifest): the outputs are byte-identical to an uninterrupted
run. The kill is injected at the N-th write point (before or after an atomic rename, after
a transcript flush) through ``SIMWORLD_TEST_KILL_AT``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simworld.cli import main
from simworld.runs.lock import is_unstarted
from simworld.runs.run import resume_run, run_scenario
from simworld.runs.writer import KILL_AT_ENV

SAME = ("transcript.jsonl", "opinions.parquet")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The scenario and its uninterrupted run."""
    import yaml
    from conftest import BASE_SCENARIO, deep_update

    root = tmp_path_factory.mktemp("kill")
    scenario = root / "s.yaml"
    data = deep_update(BASE_SCENARIO, {"protocol.steps": 3})
    scenario.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run_scenario(scenario, out_dir=root / "ref", cache_path=root / "ref.db")
    assert result.status == "completed"
    return scenario, root / "ref"


def _outputs(run_dir: Path) -> dict[str, bytes]:
    names = [*SAME, *(f"trackers/{p.name}" for p in (run_dir / "trackers").glob("*.parquet"))]
    return {name: (run_dir / name).read_bytes() for name in sorted(names)}


# Write points of this 3-step run (44 in all): 1 = the first manifest written to its
# temporary file, not renamed (an unstarted directory); 3 = step 0 in the transcript, its
# tables not yet renamed; 12 = mid-run, between a table's temporary file and its rename;
# 30 = among the final tracker frames; 43 = everything written but the final manifest.
POINTS = [1, 3, 12, 30, 43]


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_kill_at_a_write_point_then_resume_is_identical(reference, tmp_path, point):
    scenario, ref = reference
    run_dir, cache = tmp_path / "run", tmp_path / "c.db"
    cmd = [sys.executable, "-m", "simworld.cli", "run", str(scenario), "--out", str(run_dir)]
    env = {**os.environ, KILL_AT_ENV: str(point), "SIMWORLD_LLM_WORKERS": "0"}
    proc = subprocess.run(
        [*cmd, "--cache", str(cache), "--quiet"], env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    if is_unstarted(run_dir):
        assert point == 1
        code = main(["run", str(scenario), "--out", str(run_dir), "--cache", str(cache), "--quiet"])
        assert code == 0
    else:
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"
        assert resume_run(run_dir).status == "completed"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "completed"
    assert _outputs(run_dir) == _outputs(ref)
