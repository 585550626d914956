"""Run directories: status written last, unstarted directories, claims without races, a lock
against a second writer, sweep workers that die with their driver, and LLM workers that do
not import from the current directory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from simworld.cli import main
from simworld.errors import ResumeError
from simworld.llm.workers import WorkerPool
from simworld.runs.lock import claim_new, is_unstarted, locked
from simworld.runs.run import resume_run, run_scenario


def test_manifest_status_is_written_last(make_scenario, tmp_path, monkeypatch):
    """Every file is in place before the manifest says the run is complete."""
    renames: list[str] = []
    real_replace = os.replace

    def recording(src: str | Path, dst: str | Path) -> None:
        real_replace(src, dst)
        renames.append(Path(dst).name)

    monkeypatch.setattr(os, "replace", recording)
    result = run_scenario(make_scenario(), out_dir=tmp_path / "run", cache_path=tmp_path / "c")
    assert result.status == "completed"
    assert renames[-1] == "manifest.json"
    last_parquet = max(i for i, name in enumerate(renames) if name.endswith(".parquet"))
    assert renames.index("manifest.json", last_parquet) == len(renames) - 1
    assert {"drift.parquet", "opinions.parquet", "llm_calls.parquet"} <= set(renames)


def test_unstarted_directory_can_be_run_again_and_resume_says_how(make_scenario, tmp_path, capsys):
    """A run killed between creating its directory and writing its first manifest."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".manifest.json.tmp").write_text('{"status": "runn')
    assert is_unstarted(run_dir)
    assert main(["resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "before it started" in err and "--out" in err

    path = make_scenario()
    assert (
        main(["run", str(path), "--out", str(run_dir), "--quiet", "--cache", str(tmp_path / "c")])
        == 0
    )
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "completed"


def test_parallel_claims_get_distinct_directories(tmp_path):
    """Many claimants of one default name (same scenario, seed and second) never collide."""
    got: list[Path] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def claimant() -> None:
        barrier.wait()
        try:
            got.append(claim_new(tmp_path, "tiny", 11))
        except BaseException as exc:  # collected, asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=claimant) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(got)) == 8 and all(p.is_dir() for p in got)


@pytest.mark.slow
def test_parallel_cli_runs_into_one_out_root(make_scenario, tmp_path):
    """Three ``simworld run X --out-root o`` at once: three complete runs, no traceback."""
    path = make_scenario({"protocol.steps": 1})
    root = tmp_path / "o"
    cmd = [
        sys.executable,
        "-m",
        "simworld.cli",
        "run",
        str(path),
        "--out-root",
        str(root),
        "--quiet",
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    assert not any("Traceback" in err for _, err in outs)
    runs = sorted((root / "tiny").iterdir())
    assert len(runs) == 3
    for run in runs:
        assert json.loads((run / "manifest.json").read_text())["status"] == "completed"


HOLD_LOCK = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_second_writer_is_refused_while_the_directory_is_locked(make_scenario, tmp_path, capsys):
    """``resume`` while another process works in the directory: refused, nothing changed."""
    path = make_scenario({"protocol.steps": 2})
    run_dir = tmp_path / "run"
    run_scenario(path, out_dir=run_dir, cache_path=tmp_path / "c")
    manifest = run_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    data["status"] = "running"  # as if it were still going
    manifest.write_text(json.dumps(data))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert main(["resume", str(run_dir), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "in use by another simworld process" in err
        with pytest.raises(ResumeError, match="in use"):
            resume_run(run_dir)
    finally:
        holder.kill()
        holder.wait()
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert resume_run(run_dir).status == "completed"  # free again once the holder is gone


def test_lock_is_reentrant_within_a_process_and_exclusive_across(tmp_path):
    import fcntl

    with locked(tmp_path), locked(tmp_path):
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    finally:
        os.close(fd)


ORPHAN = textwrap.dedent(
    """
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    print(child.pid, flush=True)
    child.wait()
    """
)
WATCHER = textwrap.dedent(
    """
    import time
    from simworld.sweeps.executors import watch_parent
    watch_parent(0.05)
    time.sleep(120)
    """
)


def test_sweep_worker_exits_when_its_parent_is_killed():
    """The watch a sweep worker starts (:func:`watch_parent`) ends it when the driver dies."""
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, WATCHER], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.5)  # the child is watching
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the worker outlived its parent")


def test_llm_workers_do_not_import_from_the_current_directory(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    for name in ("random", "secrets"):
        (tmp_path / f"{name}.py").write_text(
            f"open({str(marker)!r}, 'a').write({name!r})\nraise SystemExit(3)\n"
        )
    monkeypatch.chdir(tmp_path)
    pool = WorkerPool(1)
    pool.start()
    try:
        assert asyncio.run(pool.wait_ready(timeout_s=120))
    finally:
        pool.close()
    assert not marker.exists()


def test_out_root_that_is_a_file_is_refused_in_one_line(make_scenario, tmp_path, capsys):
    root = tmp_path / "outputs"
    root.write_text("not a folder")
    assert main(["run", str(make_scenario()), "--out-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{root}: cannot hold run directories: is a file" in err
    assert main(["run", str(make_scenario()), "--out", str(root / "run")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_directory_or_pipe_as_the_scenario_and_a_file_as_the_run_directory_say_so(
    make_scenario, tmp_path, capsys
):
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert (
        capsys.readouterr().err == f"simworld: error: {tmp_path}: is a directory, not a YAML file\n"
    )
    fifo = tmp_path / "scenario.pipe"
    os.mkfifo(fifo)  # not opened: reading it would wait for a writer
    for path, why in (
        (fifo, "is not a regular file (a device, pipe or socket); give a YAML file"),
        ("-", "file not found (standard input is not read: give a YAML file)"),
    ):
        assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
        assert capsys.readouterr().err == f"simworld: error: {path}: {why}\n"
    assert not (tmp_path / "r").exists()
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    assert main(["run", str(make_scenario()), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err == f"simworld: error: {taken}: is a file, not a run directory; choose a new --out\n"
    assert taken.read_text() == "mine"


def test_a_run_that_breaks_before_it_starts_leaves_no_directory(
    make_scenario, tmp_path, monkeypatch
):
    """Whatever stops a run before its first manifest (bad input, or a bug raising anything
    else while the model is built) removes the run directory it claimed."""
    from simworld.engine import model
    from simworld.runs.run import run_scenario

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug while drawing the population")

    monkeypatch.setattr(model, "build_population", broken)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="a bug while drawing"):
        run_scenario(make_scenario(), out_dir=out)
    assert not out.exists()


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes(
    make_scenario, tmp_path, monkeypatch, capsys
):
    """No space left (or a quota, or read-only storage) is the storage's fault: one line,
    exit 1, and the run continues byte for byte once there is room."""
    import errno

    from simworld.runs.writer import RunWriter

    path = make_scenario({"protocol.steps": 3})
    reference = tmp_path / "reference"
    assert run_scenario(path, out_dir=reference, cache_path=tmp_path / "r.db").status == (
        "completed"
    )
    real_step = RunWriter.step

    def full_at_step_2(self, record, opinions):
        if record.step == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_step(self, record, opinions)

    monkeypatch.setattr(RunWriter, "step", full_at_step_2)
    run = tmp_path / "run"
    args = ["--out", str(run), "--cache", str(tmp_path / "c.db"), "--quiet"]
    assert main(["run", str(path), *args]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"simworld: error: {run}: cannot write the run's files (No space left on device); "
        f"free space, then continue it: simworld resume {run}\n"
    )
    monkeypatch.setattr(RunWriter, "step", real_step)
    assert main(["resume", str(run), "--quiet"]) == 0
    for name in ("transcript.jsonl", "opinions.parquet"):
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name
