"""The ``simworld`` console script."""

from __future__ import annotations

import sys

import pytest

import simworld.support.process
from simworld.cli import console


@pytest.mark.parametrize(("argv", "tuned"), [(["run", "missing.yaml"], True), (["schema"], False)])
def test_console_tunes_the_collector_only_before_a_simulation(argv, tuned, monkeypatch, capsys):
    calls: list[None] = []
    monkeypatch.setattr(simworld.support.process, "tune_gc", lambda: calls.append(None))
    monkeypatch.setattr(sys, "argv", ["simworld", *argv])
    code = console()
    assert bool(calls) is tuned
    assert code == (2 if tuned else 0)  # a missing scenario file is bad input
    if tuned:
        assert "missing.yaml" in capsys.readouterr().err


INTERRUPTED_IN_NATIVE_CODE = """
import ctypes
import sys

import simworld.cli


def main(argv):  # a native module's PyRun_* evaluation, interrupted, as a Ctrl-C mid-import
    run = ctypes.pythonapi.PyRun_String
    run.restype = ctypes.py_object
    run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
    run(b"raise KeyboardInterrupt", 257, {}, {})


simworld.cli.main = main
sys.argv = ["simworld", "schema"]
sys.exit(simworld.cli.console())
"""


def test_ctrl_c_inside_native_code_exits_130_under_python_m(tmp_path):
    """A Ctrl-C that escaped a native module's evaluation of Python code (CPython keeps a
    record of it) still ends ``python -m simworld.cli`` with 130 and the one line, not a
    death by SIGINT after the line (seen about once in 15 Ctrl-Cs during the imports)."""
    import subprocess

    (tmp_path / "interrupted_in_native_code.py").write_text(INTERRUPTED_IN_NATIVE_CODE)
    proc = subprocess.run(
        [sys.executable, "-m", "interrupted_in_native_code"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "simworld: interrupted\n"  # no run directory was written


STOPS = pytest.mark.parametrize(
    ("sent", "code", "said"),
    [
        ("SIGINT", 130, "simworld: interrupted"),
        ("SIGTERM", 143, "simworld: terminated (SIGTERM)"),
        ("SIGHUP", 129, "simworld: terminated (SIGHUP)"),
    ],
    ids=["ctrl_c", "sigterm", "sighup"],
)
"""A terminal's Ctrl-C, a job scheduler's (or ``timeout``'s) SIGTERM, a closed terminal's
SIGHUP: the command's exit code and its line."""


@STOPS
def test_ctrl_c_while_the_command_imports_is_one_line(
    tmp_path, stop_signals_deliverable, sent, code, said
):
    """Ctrl-C (or SIGTERM) in the seconds a run's command spends importing its engine
    (litellm among it) ends it with its one line too, not a traceback, and writes nothing."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    scenario = str(root / "scenarios/opinion_exchange.yaml")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simworld.cli", "run", scenario, "--model", "fake/default",
         "--out", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 120
    try:
        # tiktoken's native module loads with litellm: the engine's imports are under way
        while "tiktoken" not in maps.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "litellm never loaded"
            time.sleep(0.01)
        proc.send_signal(getattr(signal, sent))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # an assertion failed first
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == [said], err  # and names no run directory
    assert not os.path.exists(run_dir)


def _worker_pids(group: int) -> list[int]:
    """Processes of process group ``group`` that run an LLM worker (``simworld.llm.worker``)."""
    import os
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (ValueError, OSError):  # not a process, or it ended meanwhile
            continue
        if b"simworld.llm.worker" in argv:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2], ids=["in_process", "llm_workers"])
@STOPS
def test_a_stopped_run_is_one_line_and_resumes(
    tmp_path, stop_signals_deliverable, workers, sent, code, said
):
    """A stop during a run: exit 130 (143, 129), one line and no traceback; the run
    directory is marked interrupted and ``simworld resume`` completes it. With LLM workers
    (``SIMWORLD_LLM_WORKERS=2``) the signal goes to the whole process group, as a terminal
    sends it: no worker prints a traceback (one that took the Ctrl-C itself would) and none
    is left running."""
    import json
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "simworld.cli"]
    env = {**os.environ, "SIMWORLD_LLM_WORKERS": str(workers)}
    proc = subprocess.Popen(
        [*cmd, "run", str(root / "scenarios/opinion_exchange.yaml"), "--steps", "2",
         "--model", "fake/default?latency_ms=300", "--out", str(run_dir),
         "--cache", str(tmp_path / "cache.sqlite"), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        transcript = run_dir / "transcript.jsonl"
        deadline = time.monotonic() + 600  # start-up alone can take minutes on a loaded host
        while b'"llm_call"' not in (transcript.read_bytes() if transcript.is_file() else b""):
            assert proc.poll() is None and time.monotonic() < deadline, "no call was answered"
            time.sleep(0.2)
        assert len(_worker_pids(proc.pid)) == workers, "the calls went elsewhere"
        if workers:
            os.killpg(proc.pid, getattr(signal, sent))  # what the terminal does
        else:
            proc.send_signal(getattr(signal, sent))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # an assertion failed first
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == [
        f"{said}; {run_dir} is marked interrupted: simworld resume {run_dir}"
    ]
    deadline = time.monotonic() + 30
    while _worker_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _worker_pids(proc.pid) == [], "a worker outlived the command"
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "interrupted"
    assert manifest["error"] == (
        "interrupted by the user" if sent == "SIGINT" else f"terminated ({sent})"
    )
    done = subprocess.run(
        [*cmd, "resume", str(run_dir)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "completed"


@pytest.mark.slow
def test_a_run_started_with_nohup_goes_on_after_a_sighup(tmp_path):
    """``nohup simworld run ...``: the command was started ignoring SIGHUP and keeps
    ignoring it; the run completes."""
    import json
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simworld.cli", "run", str(root / "scenarios/opinion_exchange.yaml"),
         "--steps", "1", "--model", "fake/default?latency_ms=100", "--out", str(run_dir),
         "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SIMWORLD_LLM_WORKERS": "0"},
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # as nohup does
    )  # fmt: skip
    transcript = run_dir / "transcript.jsonl"
    deadline = time.monotonic() + 600
    while not (transcript.is_file() and transcript.stat().st_size) and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "completed"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["schema", "run"])
def test_a_reader_that_leaves_stdout_ends_the_command_without_a_traceback(tmp_path, command):
    """``simworld ... | head -3``: the output's reader leaves early; the command exits 1 with
    nothing on stderr (a run is complete on disk all the same)."""
    import os
    import subprocess
    from pathlib import Path

    scenario = str(Path(__file__).resolve().parents[1] / "scenarios/opinion_exchange.yaml")
    argv = ["schema"]
    if command == "run":
        argv = ["run", scenario, "--model", "fake/default", "--steps", "1", "--quiet"]
        argv += ["--cache-mode", "off", "--out", str(tmp_path / "run")]
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "simworld.cli", *argv],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (1, "")
    if command == "run":
        assert '"status": "completed"' in (tmp_path / "run" / "manifest.json").read_text()
