"""Batch sweeps: parsing, dry runs, executors agreeing, failures, resume, and the shared cache.

The sweeps here are small (5 agents, 2 steps, 6 runs) with the fake provider at 100 ms
latency, so runs last long enough to be caught mid-way by the interruption test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from cache_writer import OWN_KEYS, SHARED_KEYS, write_keys
from conftest import BASE_SCENARIO, deep_update

from simworld.cli import main
from simworld.config.scenario import load_scenario
from simworld.errors import ConfigError
from simworld.llm.cache import ResponseCache
from simworld.runs.run import run_scenario
from simworld.support.rundir import SWEEP_MANIFEST
from simworld.sweeps.driver import (
    SweepResult,
    parse_grid,
    parse_int_list,
    plan_sweep,
    run_sweep,
)
from simworld.sweeps.executors import ray_unreachable
from simworld.sweeps.plan import estimate_run
from simworld.sweeps.store import COMBINED_FRAME

GRID = {"protocol.mode": ["broadcast", "pairs"]}
SEEDS = "0-2"
RUNS = 6
AGENTS, TOPICS, PROBES = 5, 2, 3  # probes at steps 0, 1, 2
STEPS = 2
KILL_WAIT_S = 120
CACHE_WRITERS = 6

SMALL = {
    "population.size": AGENTS,
    "network": {"generator": "watts_strogatz", "k": 2, "p": 0.2},
    "protocol.steps": STEPS,
    "llm.model": "fake/default?latency_ms=100",
}


def write_scenario(path: Path, changes: dict[str, Any] | None = None) -> Path:
    """Write the small sweep scenario (with dotted changes) to ``path``."""
    data = deep_update(BASE_SCENARIO, {**SMALL, **(changes or {})})
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((sweep_dir / SWEEP_MANIFEST).read_text(encoding="utf-8"))


def events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scenario(tmp_path_factory.mktemp("scenario") / "sweep.yaml")


@pytest.fixture(scope="module")
def reference(scenario: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted sweep with one local worker."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    result = run_sweep(scenario, grid=GRID, seeds=SEEDS, out_dir=out, workers=1)
    assert result.ok, result.summary()
    return out


# -- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [("0-3", [0, 1, 2, 3]), ("1,3,5", [1, 3, 5]), ("0-2,7, 9-10", [0, 1, 2, 7, 9, 10]),
     ("4", [4]), ("2,1-3", [2, 1, 3])],
)  # fmt: skip
def test_parse_seeds(text, expected):
    assert parse_int_list(text) == expected


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "3-1", "1,,2", "0-x", "0-100000"])
def test_parse_seeds_rejects(text):
    from simworld.errors import ConfigError

    with pytest.raises(ConfigError, match="--seeds"):
        parse_int_list(text)


def test_parse_grid_yaml_scalars():
    grid = parse_grid(
        [
            "network.p=0.1,0.5",
            "llm.cache=off,record",
            "x.flag=true,false",
            "population.size=4,6",
            "llm.model=fake/default?latency_ms=5,fake/other",
            "network={generator: complete},{generator: erdos_renyi, p: 0.3}",
        ]
    )
    assert grid == {
        "network.p": [0.1, 0.5],
        "llm.cache": ["off", "record"],
        "x.flag": [True, False],
        "population.size": [4, 6],
        "llm.model": ["fake/default?latency_ms=5", "fake/other"],
        "network": [{"generator": "complete"}, {"generator": "erdos_renyi", "p": 0.3}],
    }


@pytest.mark.parametrize("item", ["novalue", "=1", "a.b=", "a.b=1,,2", "a.b=1,1", "seed=1,2"])
def test_parse_grid_rejects(item):
    from simworld.errors import ConfigError

    with pytest.raises(ConfigError, match="--grid"):
        parse_grid([item])


def test_plan_names_and_order(scenario):
    plan = plan_sweep(scenario, grid=GRID, seeds=SEEDS)
    assert [(r.params["protocol.mode"], r.seed) for r in plan.runs] == [
        (m, s) for m in GRID["protocol.mode"] for s in range(3)
    ]
    assert [r.name[:5] for r in plan.runs] == [f"{i:04d}-" for i in range(RUNS)]
    again = plan_sweep(scenario, grid=GRID, seeds=SEEDS)
    assert [r.name for r in again.runs] == [r.name for r in plan.runs]
    assert again.default_dir() == plan.default_dir()
    assert len({r.name for r in plan.runs}) == RUNS


# -- dry run and bad input -------------------------------------------------------------------
def test_dry_run_makes_no_calls_and_writes_nothing(scenario, tmp_path, capsys, monkeypatch):
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dry run must not run anything")

    monkeypatch.setattr("simworld.sweeps.driver.make_executor", forbidden)
    monkeypatch.setattr("simworld.sweeps.executors.execute_task", forbidden)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep"
    rc = main(["sweep", str(scenario), "--grid", "protocol.mode=broadcast,pairs",
               "--seeds", "0-9", "--out", str(out), "--dry-run"])  # fmt: skip
    assert rc == 0
    assert list(tmp_path.iterdir()) == []
    printed = capsys.readouterr().out
    plan = plan_sweep(scenario, grid=GRID, seeds="0-9")
    # broadcast: 2 steps x 5 posts + 3 probes x 5 agents x 2 topics + 10 stances = 50;
    # pairs: 2 x 4 + 30 + 8 = 46; 10 seeds each: 960
    assert [estimate_run(r.scenario).calls for r in plan.runs[::10]] == [50, 46]
    assert "20 runs, ~960 model calls" in printed
    assert "2 grid points x 10 seeds" in printed


@pytest.mark.parametrize("mode", ["broadcast", "group"])
def test_estimate_counts_every_call_of_a_run(make_scenario, tmp_path, mode):
    """Judge, BFI and importance-rating calls are in the estimate (reflection off)."""
    path = make_scenario(
        {
            "protocol.mode": mode,
            "protocol.group_size": 4,
            "protocol.rounds": 2,
            "trackers": {"judge": True, "bfi": {"steps": [0, 3]}},
            "memory": {
                "store": "chroma",
                "importance": {"mode": "llm"},
                "reflection": {"enabled": False},
            },
        }
    )
    result = run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    assert result.status == "completed" and result.accounting.failures == 0
    assert estimate_run(load_scenario(path)).calls == result.accounting.calls


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--grid", "protocol.bogus=1,2"], "protocol.bogus: unknown field"),
        (["--grid", "population.size=4,many"], "population.size"),
        (["--grid", "network.k=2,9"], "network.k"),
        (["--seeds", "1-x"], "--seeds"),
        (["--seeds", "5-1"], "--seeds"),
        (["--grid", "seed=1,2"], "--seeds"),
        (["--only", "99"], "--only"),
        (["--workers", "0"], "--workers"),
        (["--ray-address", "auto"], "--executor ray"),
        (["--grid", "llm.max_retries=0,4"], "--grid: llm.max_retries: the runs of a sweep"),
        (["--executor", "ray", "--ray-address", "127.0.0.1:9"], "cannot reach 127.0.0.1:9"),
        (["--executor", "ray", "--ray-address", "ray://127.0.0.1:9"], "cannot reach 127.0.0.1:9"),
        (["--grid", "llm.model=fake/default,nosuchprovider/x"], "llm.model: 'nosuchprovider/x'"),
        (["--grid", "llm.model=fake/default,local/missing.gguf"], "no GGUF file"),
        (["--grid", "protocol.mode=broadcast,nosuchmode"], "unknown protocol 'nosuchmode'"),
        (["--grid", "protocol.mode=broadcast,no_such_file.py:P"], "protocol.mode"),
        (["--grid", "population.agent_class=no_such_module:A"], "population.agent_class"),
        (["--grid", "trackers.extra=[],[no_such_module:T]"], "trackers.extra[0]"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(scenario, tmp_path, capsys, args, needle):
    out = tmp_path / "sweep"
    rc = main(["sweep", str(scenario), "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert not out.exists()


def test_an_executor_that_cannot_start_leaves_no_run_marked_running(
    scenario, tmp_path, monkeypatch
):
    """Ray that cannot start (a cluster gone) is one line; the sweep's runs stay pending."""
    import simworld.sweeps.driver as driver

    def no_ray(*args: Any, **kwargs: Any) -> None:
        raise ConfigError("--ray-address", "auto", "cannot start Ray: no cluster")

    monkeypatch.setattr(driver, "make_executor", no_ray)
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError, match="cannot start Ray"):
        run_sweep(scenario, grid=GRID, seeds=SEEDS, out_dir=out, executor="ray")
    assert {run["status"] for run in read_sweep(out)["runs"]} == {"pending"}


def test_a_ray_address_is_tried_before_anything_is_written():
    """``ray.init`` retries a host:port that does not answer for many minutes."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert ray_unreachable(f"127.0.0.1:{port}") is None
        assert ray_unreachable(f"ray://127.0.0.1:{port}") is None
    assert (
        ray_unreachable(f"127.0.0.1:{port}")
        == f"cannot reach 127.0.0.1:{port} (Connection refused)"
    )
    assert ray_unreachable("auto") is None and ray_unreachable("local") is None


# -- executors agree -------------------------------------------------------------------------
@pytest.mark.slow
def test_reference_frame_is_tidy(reference):
    frame = pd.read_parquet(reference / COMBINED_FRAME)
    assert len(frame) == RUNS * AGENTS * TOPICS * PROBES
    assert list(frame.columns[:3]) == ["run", "seed", "protocol.mode"]
    assert {"step", "agent", "topic", "value", "answer"} <= set(frame.columns)
    assert frame.run.is_monotonic_increasing
    by_run = frame.groupby("run")[["seed", "protocol.mode"]].first()
    assert by_run.seed.tolist() == [0, 1, 2] * 2
    assert by_run["protocol.mode"].tolist() == ["broadcast"] * 3 + ["pairs"] * 3
    manifest = read_sweep(reference)
    assert manifest["counts"] == {"completed": RUNS}
    assert manifest["spec"]["grid"] == GRID
    for run in manifest["runs"]:
        assert (reference / run["run_dir"] / "manifest.json").is_file()
        assert run["totals"]["calls"] > 0
    # agents and edges of every run, combined beside the opinions, join on (run, agent)
    agents = pd.read_parquet(reference / "agents.parquet")
    edges = pd.read_parquet(reference / "edges.parquet")
    assert len(agents) == RUNS * AGENTS and len(edges) > 0
    assert list(agents.columns[:3]) == list(edges.columns[:3]) == ["run", "seed", "protocol.mode"]
    joined = frame.merge(agents, on=["run", "agent"], how="left", validate="many_to_one")
    assert joined["degree"].notna().all()


def test_totals_sum_the_runs_prefix_estimates(reference):
    manifest = read_sweep(reference)
    keys = ("prompt_tokens_est", "prefix_tokens_est", "cacheable_tokens_est", "calls")
    runs = [
        json.loads((reference / run["run_dir"] / "manifest.json").read_text(encoding="utf-8"))
        for run in manifest["runs"]
    ]
    for key in keys:
        assert manifest["totals"][key] == sum(run["totals"][key] for run in runs) > 0, key
    totals = manifest["totals"]
    assert (
        manifest["cacheable_share"] == totals["cacheable_tokens_est"] / totals["prompt_tokens_est"]
    )
    assert manifest["prefix_share"] == totals["prefix_tokens_est"] / totals["prompt_tokens_est"]
    summary = SweepResult(reference, manifest["runs"], manifest["counts"], totals, 0, 0, 0.0)
    lines = summary.summary().splitlines()
    assert f"estimate {totals['cacheable_tokens_est']} of {totals['prompt_tokens_est']})" in next(
        line for line in lines if line.startswith("cacheable")
    )
    assert any(line.startswith("prefix ") for line in lines)


@pytest.mark.slow
def test_two_workers_match_one(scenario, reference, tmp_path):
    out = tmp_path / "sweep"
    result = run_sweep(scenario, grid=GRID, seeds=SEEDS, out_dir=out, workers=2)
    assert result.ok
    assert (out / COMBINED_FRAME).read_bytes() == (reference / COMBINED_FRAME).read_bytes()


@pytest.mark.slow
def test_ray_matches_local(scenario, reference, tmp_path):
    import ray  # a test dependency (pyproject's test extra)

    out = tmp_path / "sweep"
    result = run_sweep(scenario, grid=GRID, seeds=SEEDS, out_dir=out, executor="ray", workers=2)
    assert not ray.is_initialized(), "the local Ray instance must be shut down"
    assert result.ok, result.summary()
    assert (out / COMBINED_FRAME).read_bytes() == (reference / COMBINED_FRAME).read_bytes()
    local = pd.read_parquet(reference / COMBINED_FRAME)
    assert pd.read_parquet(out / COMBINED_FRAME).equals(local)


# -- failures --------------------------------------------------------------------------------
@pytest.mark.slow
def test_failing_run_is_reported_and_retried(tmp_path, capsys):
    """Replay with only seed 0 recorded: seed 1 fails, the sweep goes on; later it is retried."""
    from simworld.runs.run import run_scenario

    cache = tmp_path / "cache.sqlite"
    path = write_scenario(tmp_path / "replay.yaml", {"llm.cache": "replay"})
    record = {"llm.cache": "record", "seed": 0}
    first_run = run_scenario(path, overrides=record, out_dir=tmp_path / "r0", cache_path=cache)
    assert first_run.status == "completed"
    out = tmp_path / "sweep"
    args = ["sweep", str(path), "--seeds", "0-2", "--out", str(out), "--cache", str(cache)]
    rc = main([*args, "--workers", "1"])
    captured = capsys.readouterr()
    assert rc == 1
    manifest = read_sweep(out)
    assert [r["status"] for r in manifest["runs"]] == ["completed", "failed", "failed"]
    assert "no recorded answer" in manifest["runs"][1]["error"]
    assert "FAILED     #1" in captured.out and "no recorded answer" in captured.out
    assert "--only 1,2" in captured.out
    assert "failed=2" in captured.err  # the progress bar counts failures
    assert set(pd.read_parquet(out / COMBINED_FRAME).run) == {0}
    first = (out / manifest["runs"][0]["run_dir"] / "manifest.json").stat().st_mtime_ns

    record["seed"] = 1
    second_run = run_scenario(path, overrides=record, out_dir=tmp_path / "r1", cache_path=cache)
    assert second_run.status == "completed"
    assert main([*args, "--only", "1", "--quiet"]) == 0
    manifest = read_sweep(out)
    assert [r["status"] for r in manifest["runs"]] == ["completed", "completed", "failed"]
    assert [r["attempts"] for r in manifest["runs"]] == [1, 2, 1]
    assert manifest["runs"][1]["action"] == "reran"
    assert (out / manifest["runs"][0]["run_dir"] / "manifest.json").stat().st_mtime_ns == first
    assert set(pd.read_parquet(out / COMBINED_FRAME).run) == {0, 1}


# -- interruption and resume -----------------------------------------------------------------
def _statuses(sweep_dir: Path) -> dict[str, tuple[str, bool]]:
    """Run name → (manifest status, whether a step finished) for run dirs with a manifest."""
    out = {}
    for run in sorted((sweep_dir / "runs").glob("*")):
        try:
            status = json.loads((run / "manifest.json").read_text())["status"]
            stepped = '"type": "step_end"' in (run / "transcript.jsonl").read_text()
        except (OSError, json.JSONDecodeError, KeyError):
            continue
        out[run.name] = (status, stepped)
    return out


def _sweep_command(scenario: Path, out: Path) -> list[str]:
    """The ``simworld sweep`` command of :data:`GRID` and :data:`SEEDS` into ``out``, with 2
    workers and no bar, as a new process runs it."""
    return [sys.executable, "-m", "simworld.cli", "sweep", str(scenario),
            "--grid", "protocol.mode=broadcast,pairs", "--seeds", SEEDS,
            "--out", str(out), "--workers", "2", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_killed_sweep_resumes_each_run_exactly_once(scenario, reference, tmp_path):
    out = tmp_path / "sweep"
    cmd = _sweep_command(scenario, out)
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + KILL_WAIT_S
    try:
        while True:
            seen = _statuses(out) if out.exists() else {}
            done = [n for n, (s, _) in seen.items() if s == "completed"]
            partial = [n for n, (s, stepped) in seen.items() if s == "running" and stepped]
            if done and partial:
                break
            assert proc.poll() is None, "the sweep finished before it could be interrupted"
            assert time.monotonic() < deadline, "no partial run to interrupt"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its workers
        proc.wait()
    assert len(done) < RUNS

    result = run_sweep(scenario, grid=GRID, seeds=SEEDS, out_dir=out, workers=2)
    assert result.ok, result.summary()
    assert result.skipped == len(done)
    manifest = read_sweep(out)
    actions = {r["name"]: r["action"] for r in manifest["runs"]}
    for name in partial:
        assert actions[name] in {"resumed", "reran"}
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(actions)
    ref = read_sweep(reference)
    for run, ref_run in zip(manifest["runs"], ref["runs"], strict=True):
        run_dir = out / run["run_dir"]
        evs = events(run_dir)
        assert sum(e["type"] == "run_start" for e in evs) == 1
        assert [e["step"] for e in evs if e["type"] == "step_end"] == list(range(STEPS + 1))
        for name in ("transcript.jsonl", "opinions.parquet"):
            expected = (reference / ref_run["run_dir"] / name).read_bytes()
            assert (run_dir / name).read_bytes() == expected, (run["name"], name)
    assert (out / COMBINED_FRAME).read_bytes() == (reference / COMBINED_FRAME).read_bytes()
    again = run_sweep(scenario, grid=GRID, seeds=SEEDS, out_dir=out)
    assert again.done_now == 0 and again.skipped == RUNS


@pytest.mark.slow
def test_a_worker_that_dies_costs_its_run_a_restart_not_the_sweep(scenario, reference, tmp_path):
    """A kill -9 of the pool's workers mid-run (the out-of-memory killer): the pool is made
    again, the runs they held go on (a partial one resumed), and the sweep ends as an
    undisturbed one. Every worker is killed, so the one holding the running run is among
    them (on a busy host the other may still be starting, with no run to lose)."""
    import threading

    out = tmp_path / "sweep"
    killed: list[int] = []

    def kill_a_worker() -> None:
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:
            seen = _statuses(out) if out.exists() else {}
            workers = multiprocessing.active_children()
            if workers and any(s == "running" and stepped for s, stepped in seen.values()):
                for worker in workers:
                    os.kill(worker.pid, signal.SIGKILL)
                    killed.append(worker.pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    result = run_sweep(scenario, grid=GRID, seeds=SEEDS, out_dir=out, workers=2)
    killer.join()
    assert killed, "no worker was killed"
    assert result.ok, result.summary()
    assert any(r["action"] in {"resumed", "reran"} for r in read_sweep(out)["runs"])
    assert (out / COMBINED_FRAME).read_bytes() == (reference / COMBINED_FRAME).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sent", "group", "code", "said"),
    [
        (signal.SIGTERM, False, 143, "terminated (SIGTERM)"),
        (signal.SIGINT, True, 130, "interrupted"),
        (signal.SIGHUP, True, 129, "terminated (SIGHUP)"),
    ],
    ids=["sigterm", "ctrl_c", "sighup"],
)
def test_a_stopped_sweep_says_so_in_one_line_marks_its_runs_and_a_rerun_finishes_it(
    scenario, tmp_path, stop_signals_deliverable, sent, group, code, said
):
    """SIGTERM (a job scheduler's stop) to the sweep command, or a terminal's Ctrl-C or
    SIGHUP (to its whole process group, workers too): one line naming it, no traceback; the
    runs in flight are marked interrupted, and the same command run again completes the
    sweep."""
    out = tmp_path / "sweep"
    cmd = _sweep_command(scenario, out)
    with subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        deadline = time.monotonic() + KILL_WAIT_S
        while not (out.exists() and _statuses(out)):
            assert proc.poll() is None, "the sweep finished before it could be stopped"
            assert time.monotonic() < deadline, "no run started"
            time.sleep(0.02)
        if group:
            os.killpg(proc.pid, sent)
        else:
            proc.send_signal(sent)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == f"simworld: sweep {said}; re-run the same command to resume"
    statuses = [status for status, _ in _statuses(out).values()]
    assert "interrupted" in statuses and set(statuses) <= {"interrupted", "completed"}, statuses
    assert main(cmd[3:]) == 0
    again = run_sweep(scenario, grid=GRID, seeds=SEEDS, out_dir=out)
    assert again.done_now == 0 and again.skipped == RUNS


@pytest.mark.slow
def test_a_stopped_sweep_starts_no_further_run(tmp_path):
    """Runs far longer than the wait for a stop: the runs in flight when SIGTERM comes are
    marked interrupted, and no worker starts one of the runs still queued (it would run
    on, or be killed and left ``running``)."""
    slow = {"protocol.steps": 6, "llm.model": "fake/default?latency_ms=1000"}
    scenario = write_scenario(tmp_path / "slow.yaml", slow)
    out = tmp_path / "sweep"
    with subprocess.Popen(
        _sweep_command(scenario, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    ) as proc:  # fmt: skip
        deadline = time.monotonic() + KILL_WAIT_S
        while not (out.exists() and _statuses(out)):
            assert proc.poll() is None and time.monotonic() < deadline, "no run started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    runs = sorted((out / "runs").iterdir())
    assert 1 <= len(runs) <= 2, [r.name for r in runs]  # two workers
    assert {status for status, _ in _statuses(out).values()} == {"interrupted"}, _statuses(out)


# -- the shared cache ------------------------------------------------------------------------
def test_concurrent_cache_writers_lose_nothing(tmp_path):
    """Several spawned processes open one fresh cache file at once and write into it."""
    path = str(tmp_path / "cache.sqlite")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(CACHE_WRITERS)
    procs = [ctx.Process(target=write_keys, args=(path, w, start)) for w in range(CACHE_WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    cache = ResponseCache(path)
    assert len(cache) == CACHE_WRITERS * OWN_KEYS + SHARED_KEYS
    for w in range(CACHE_WRITERS):
        for i in range(OWN_KEYS):
            assert cache.get(f"own-{w}-{i}") == {"worker": w, "i": i}
    for i in range(SHARED_KEYS):
        value = cache.get(f"shared-{i}")
        assert value is not None and value["i"] == i and value["worker"] in range(CACHE_WRITERS)
    cache.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize(
    ("existing", "needle"),
    [
        (
            {"manifest.json": "{}", "opinions.parquet": "x"},
            "is a run directory (it holds manifest.json)",
        ),
        ({"notes.txt": "mine"}, "holds other files (notes.txt, ...); choose a new or empty --out"),
        ({"sweep.json": "[]"}, "sweep.json: damaged: expected a JSON object"),
        (None, "is a file; a sweep directory is a folder"),
    ],
    ids=["run-directory", "other-files", "sweep-json-a-list", "a-file"],
)
def test_a_sweep_never_writes_into_what_is_not_its_directory(
    scenario, tmp_path, capsys, existing, needle
):
    out = tmp_path / "target"
    if existing is None:
        out.write_text("a file")
    else:
        out.mkdir()
        for name, text in existing.items():
            (out / name).write_text(text)
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir()) if out.is_dir() else None
    rc = main(["sweep", str(scenario), "--out", str(out), "--quiet", "--seeds", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    after = sorted((p.name, p.read_bytes()) for p in out.iterdir()) if out.is_dir() else None
    assert after == before


@pytest.mark.slow
def test_a_sweep_given_its_grid_keys_in_another_order_is_refused_and_left_alone(tmp_path, capsys):
    """The keys' order numbers the runs: rerun swapped, it would file finished runs anew."""
    scenario = write_scenario(tmp_path / "s.yaml", {"llm.model": "fake/default"})
    out = tmp_path / "sweep"
    grids = ["--grid", "protocol.mode=broadcast,pairs", "--grid", "network.p=0.1,0.5"]
    command = ["sweep", str(scenario), "--seeds", "0", "--out", str(out), "--quiet"]
    assert main([*command, *grids]) == 0
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    capsys.readouterr()
    assert main([*command, *grids[2:], *grids[:2]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "another order (protocol.mode, network.p)" in err, err
    after = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    assert after == before
    assert main([*command, *grids]) == 0  # in the recorded order it is the same sweep, done


@pytest.mark.slow
def test_the_sweep_bar_moves_between_results(scenario, tmp_path, capsys, monkeypatch):
    """Before the first run ends, the bar is redrawn with the clock and the runs in flight."""
    import simworld.sweeps.driver as driver

    monkeypatch.setattr(driver, "TICK_S", 0.2)
    out = tmp_path / "sweep"
    assert main(["sweep", str(scenario), "--seeds", "0", "--workers", "1", "--out", str(out)]) == 0
    frames = capsys.readouterr().err.replace("\r", "\n").splitlines()
    before_first = [f for f in frames if "0/1" in f]
    assert any("running=1" in f for f in before_first), before_first
    assert len({f.split("[")[1].split("<")[0] for f in before_first if "[" in f}) >= 2  # clock
