"""No process simworld starts imports modules from the current directory (issue 19, item 11):
a ``random.py``, ``secrets.py`` or ``threading.py`` there is never imported in place of the
standard library's, by the LLM workers, the embedded model's child or the sweep workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BASE_SCENARIO, deep_update
from test_llm_workers import request

from simworld.llm.providers.local_child import ChildEngine
from simworld.llm.providers.local_engine import EngineConfig
from simworld.llm.workers import WorkerPool
from simworld.support.process import SAFE_PATH_ENV, safe_path
from simworld.sweeps.driver import run_sweep

# ``threading`` is imported by a spawned child before multiprocessing sets its sys.path; the
# others are what a user's folder is likely to hold.
SHADOWS = ("random", "secrets", "threading", "tempfile")


@pytest.fixture
def shadowed_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory whose modules shadow the standard library's and leave a mark."""
    for name in SHADOWS:
        (tmp_path / f"{name}.py").write_text(
            "import os, pathlib, sys\n"
            f"pathlib.Path({str(tmp_path)!r}, 'imported-{name}').write_text("
            "f'{os.getpid()} {os.getppid()} {sys.argv}')\n"
            f"raise ImportError('the {name}.py of the current directory')\n",
            encoding="utf-8",
        )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def marks(directory: Path) -> list[str]:
    """Which shadowing modules were imported, and by which process (pid, parent, argv)."""
    return sorted(f"{p.name}: {p.read_text()}" for p in directory.glob("imported-*"))


def test_llm_workers_answer_without_importing_the_cwd(shadowed_cwd: Path) -> None:
    pool = WorkerPool(1)
    try:

        async def call() -> str:
            assert await pool.wait_ready()
            done = await pool.complete(request("w"), attempt=0, timeout_s=60)
            return done.text

        assert asyncio.run(call())
        assert pool.alive()
    finally:
        pool.close()
    assert marks(shadowed_cwd) == []


def test_the_embedded_model_child_starts_without_importing_the_cwd(
    shadowed_cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child starts (no model is loaded: the file does not exist, so it exits at once);
    what matters is that its start-up imported nothing from the current directory."""
    monkeypatch.delenv(SAFE_PATH_ENV, raising=False)
    config = EngineConfig(path=shadowed_cwd / "absent.gguf")
    engine = ChildEngine("local/absent", config)
    try:
        engine._process.join(timeout=120)
        assert engine._process.exitcode is not None
    finally:
        engine.close()
    assert marks(shadowed_cwd) == []
    assert SAFE_PATH_ENV not in os.environ  # set only while the child starts


@pytest.mark.slow
def test_sweep_workers_run_without_importing_the_cwd(shadowed_cwd: Path, tmp_path: Path) -> None:
    data = deep_update(BASE_SCENARIO, {"population.size": 6, "protocol.steps": 1})
    scenario = tmp_path / "elsewhere" / "sweep.yaml"
    scenario.parent.mkdir()
    scenario.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    result = run_sweep(scenario, seeds="0-1", out_dir=tmp_path / "elsewhere" / "sweep", workers=1)
    assert result.ok, result.summary()
    assert marks(shadowed_cwd) == []


@pytest.mark.slow
def test_simworld_run_starts_nothing_that_imports_the_cwd(
    shadowed_cwd: Path, tmp_path: Path
) -> None:
    """The command, as installed (its own path is its script's folder): no interpreter it
    starts imports from the current directory."""
    data = deep_update(BASE_SCENARIO, {"population.size": 6, "protocol.steps": 1})
    scenario = tmp_path / "elsewhere" / "run.yaml"
    scenario.parent.mkdir()
    scenario.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    command = Path(sys.executable).parent / "simworld"
    env = {k: v for k, v in os.environ.items() if k != SAFE_PATH_ENV}
    done = subprocess.run(
        [str(command), "run", str(scenario), "--out", str(tmp_path / "elsewhere" / "run")],
        capture_output=True, text=True, timeout=300, env=env, cwd=shadowed_cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "resource_tracker" not in done.stderr
    assert marks(shadowed_cwd) == []


def test_safe_path_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SAFE_PATH_ENV, "")
    with safe_path():
        assert os.environ[SAFE_PATH_ENV] == "1"
    assert os.environ[SAFE_PATH_ENV] == ""
    monkeypatch.delenv(SAFE_PATH_ENV)
    with safe_path():
        assert os.environ[SAFE_PATH_ENV] == "1"
    assert SAFE_PATH_ENV not in os.environ
