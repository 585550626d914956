"""The bad-input battery: every file in ``tests/bad_inputs`` is refused by ``simworld run``
with exit 2 and one line on stderr naming the file and the field (or line) at fault; no
traceback, nothing written, within a time bound. A few run in a subprocess under memory and
CPU limits (the ones built to exhaust them)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simworld.cli import main

HERE = Path(__file__).resolve().parent / "bad_inputs"
EXPECTED: dict[str, str] = json.loads((HERE / "expected.json").read_text(encoding="utf-8"))
SECONDS = 10.0
# Built to exhaust time or memory: run as a real command under resource limits.
IN_SUBPROCESS = ("alias_bomb.yaml", "infeasible_complete_graph.yaml", "infeasible_rounds.yaml")
MEMORY_LIMIT = 3 * 1024**3
CPU_LIMIT_S = 60


def test_battery_is_complete():
    assert len(EXPECTED) >= 100
    assert sorted(EXPECTED) == sorted(p.name for p in HERE.glob("*.yaml"))


def _check(name: str, code: int, err: str, out_dir: Path) -> None:
    path = HERE / name
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("simworld: error: "), err
    # the file at fault: the scenario, or the edge list it names
    assert str(path) in err or str(HERE / "edges") in err, err
    assert EXPECTED[name] in err, err
    assert "Traceback" not in err
    assert len(err) < 600
    assert list(out_dir.iterdir()) == [], "something was written"


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n not in IN_SUBPROCESS))
def test_bad_scenario_is_refused_in_one_line(name, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    started = time.perf_counter()
    code = main(["run", str(HERE / name), "--out", str(out / "run"), "--cache", str(out / "c.db")])
    elapsed = time.perf_counter() - started
    captured = capsys.readouterr()
    _check(name, code, captured.err, out)
    assert captured.out == ""
    assert elapsed < SECONDS


def _limits() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))


@pytest.mark.slow
@pytest.mark.parametrize("name", IN_SUBPROCESS)
def test_resource_hungry_input_is_refused_under_limits(name, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "SIMWORLD_LLM_WORKERS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "simworld.cli", "run", str(HERE / name), "--out-root", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limits,
        env=env,
        cwd=tmp_path,
    )
    _check(name, proc.returncode, proc.stderr, out)


def test_force_runs_past_the_size_estimate(tmp_path, make_scenario):
    """--force skips the estimate (here on a run that does fit, so that it finishes)."""
    path = make_scenario({"protocol.steps": 1})
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--force", "--quiet"]) == 0


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"not a database at all, just text\n"), "not a SQLite"),
        (lambda p: (p.parent / "file").write_text("x") or None, "is a file"),
    ],
)
def test_bad_cache_path_is_refused_before_anything_is_written(
    make, needle, tmp_path, make_scenario, capsys
):
    cache = tmp_path / "cache.sqlite"
    make(cache)
    if needle == "is a file":
        cache = tmp_path / "file" / "cache.sqlite"
    out = tmp_path / "out"
    code = main(["run", str(make_scenario()), "--out", str(out), "--cache", str(cache)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err and str(cache) in err
    assert not out.exists()


def test_a_cache_that_cannot_be_written_is_refused_before_anything_is_written(
    tmp_path, make_scenario, capsys, monkeypatch
):
    import simworld.llm.cache as cache_module

    folder = tmp_path / "read-only"
    folder.mkdir()
    real = os.access
    monkeypatch.setattr(
        cache_module.os, "access", lambda p, mode: Path(p) != folder and real(p, mode)
    )  # as on a read-only file system (root ignores a folder's mode bits)
    cache, out = folder / "cache.sqlite", tmp_path / "out"
    code = main(["run", str(make_scenario()), "--out", str(out), "--cache", str(cache)])
    err = capsys.readouterr().err
    assert code == 2
    assert (
        err == f"simworld: error: {cache}: cannot record into the cache: {folder} is not writable\n"
    )
    assert not out.exists()


@pytest.mark.parametrize("bad", ["cache", "library"])
def test_bad_input_found_late_leaves_no_scenario_folder_in_the_out_root(
    bad, tmp_path, make_scenario, capsys
):
    root = tmp_path / "outputs"
    root.mkdir()
    path = make_scenario()
    args = ["run", str(path), "--out-root", str(root), "--quiet"]
    if bad == "cache":
        (tmp_path / "c").mkdir()
        args += ["--cache", str(tmp_path / "c")]
    else:  # a persona library that fails when the population is built, in the run directory
        library = tmp_path / "lib.yaml"
        library.write_text("personas: []\n", encoding="utf-8")
        args += ["--set", f"population.library={library}"]
    assert main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert list(root.iterdir()) == []
