"""``simworld sweep`` refuses runs too large for the machine before writing anything, as
``simworld run`` does, and ``--force`` runs them anyway (issue 19, item 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import BASE_SCENARIO, deep_update

from simworld.cli import main
from simworld.runs import estimate
from simworld.sweeps.executors import RunTask, execute_task

TINY_MACHINE = 1024  # 1 KiB: no run fits


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    data = deep_update(BASE_SCENARIO, {"population.size": 5, "protocol.steps": 1})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_sweep_too_large_is_refused_then_forced(
    scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setattr(estimate, "machine_memory", lambda: TINY_MACHINE)
    out = tmp_path / "sweep"
    args = ["sweep", str(scenario), "--out", str(out), "--seeds", "3", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(scenario) in err and "run #0 (seed=3)" in err and "--force" in err
    assert not out.exists()
    assert main([*args, "--force"]) == 0
    assert "1 completed" in capsys.readouterr().out
    assert len(list((out / "runs").iterdir())) == 1


@pytest.mark.parametrize("force", [False, True])
def test_force_reaches_the_run_in_the_worker(
    scenario: Path, tmp_path: Path, monkeypatch, force: bool
) -> None:
    """The task carries --force to the run (here the task runs in this process)."""
    monkeypatch.setattr(estimate, "machine_memory", lambda: TINY_MACHINE)
    task = RunTask(
        index=0,
        scenario_path=str(scenario),
        overrides={"seed": 3},
        run_dir=str(tmp_path / "run"),
        cache_path=str(tmp_path / "c.db"),
        lock_path=str(tmp_path / "run.lock"),
        force=force,
    )
    result = execute_task(task)
    if force:
        assert result.status == "completed", result.error
    else:
        assert result.status == "failed" and "--force" in (result.error or "")
        assert not (tmp_path / "run").exists()
