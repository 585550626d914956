"""Batch sweeps: one scenario over a grid of parameters and seeds, each run in its own folder."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from simworld.errors import ConfigError
from simworld.runs.estimate import check_feasible
from simworld.runs.run import check_keys, prefix_lines
from simworld.support.process import safe_path, stopped_by
from simworld.support.progress import Bar
from simworld.support.rundir import CACHE_FILE
from simworld.sweeps.executors import (
    FINISHED_STATUSES,
    Executor,
    RunTask,
    TaskResult,
    make_executor,
    ray_unreachable,
)
from simworld.sweeps.plan import (
    DEFAULT_OUT_ROOT,
    Estimate,
    PlannedRun,
    SweepPlan,
    estimate_sweep,
    parse_grid,
    parse_int_list,
    plan_sweep,
)
from simworld.sweeps.store import (
    COMBINED_FRAME,
    LOCKS_DIR,
    RUNS_DIR,
    RunEntry,
    SweepLock,
    SweepStore,
    check_same_sweep,
    totals_accounting,
)

EXECUTORS = ("local", "ray")
EXIT_RUNS_FAILED = 1
TICK_S = 1.0
"""How often the sweep's bar is redrawn between results (seconds)."""

__all__ = [
    "Estimate",
    "PlannedRun",
    "SweepPlan",
    "SweepResult",
    "estimate_sweep",
    "parse_grid",
    "parse_int_list",
    "plan_sweep",
    "run_sweep",
]


# -- running ---------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What a sweep invocation reports.

    Attributes:
        sweep_dir: The sweep directory.
        runs: Every run's entry as in ``sweep.json``.
        counts: Runs per status.
        totals: Calls, tokens and cost over all runs.
        done_now: Runs executed (or resumed) by this invocation.
        skipped: Runs selected but already finished before this invocation.
        wall_time_s: Seconds this invocation took.
    """

    sweep_dir: Path
    runs: list[dict[str, Any]]
    counts: dict[str, int]
    totals: dict[str, float]
    done_now: int
    skipped: int
    wall_time_s: float
    frame_rows: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def frame_path(self) -> Path:
        """The combined opinions frame."""
        return self.sweep_dir / COMBINED_FRAME

    @property
    def ok(self) -> bool:
        """Whether every run finished."""
        return all(r["status"] in FINISHED_STATUSES for r in self.runs)

    def summary(self) -> str:
        """A short closing summary, failures listed with their errors."""
        t = self.totals
        counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in self.counts.items())
        lines = [
            f"sweep      {self.sweep_dir}",
            f"runs       {len(self.runs)} ({counts}); {self.done_now} done now, "
            f"{self.skipped} finished before",
            f"LLM calls  {int(t['calls'])} ({int(t['model_calls'])} sent to the model, "
            f"{int(t['cache_hits'])} cache hits, {int(t['failures'])} failed)",
            f"tokens     {int(t['prompt_tokens'] + t['completion_tokens'])} "
            f"({int(t['prompt_tokens'])} in, {int(t['completion_tokens'])} out)",
            *prefix_lines(totals_accounting(t)),
            f"cost       ${t['cost_usd']:.4f} recorded, ${t['spent_usd']:.4f} spent",
            f"frame      {self.frame_path} ({self.frame_rows} rows)",
            f"time       {self.wall_time_s:.1f} s",
        ]
        for run in self.failed:
            params = ", ".join(
                f"{k}={v}" for k, v in {**run["params"], "seed": run["seed"]}.items()
            )
            lines.append(f"FAILED     #{run['index']} ({params}): {run['error']}")
        if self.failed:
            only = ",".join(str(r["index"]) for r in self.failed)
            lines.append(f"retry      re-run the same command, or add --only {only}")
        return "\n".join(lines)


def _check_only(only: Sequence[int] | None, runs: int) -> None:
    bad = [i for i in only or () if not 0 <= i < runs]
    if bad:
        raise ConfigError("--only", str(bad[0]), f"no such run (0..{runs - 1})")


def _check_executor(kind: str, ray_address: str | None, workers: int | None) -> None:
    if kind not in EXECUTORS:
        raise ConfigError("--executor", kind, f"expected one of {list(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise ConfigError("--workers", str(workers), "must be at least 1")
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("--executor", "ray", "needs Ray: pip install 'simworld[ray]'")
    if kind != "ray" and ray_address is not None:
        raise ConfigError("--ray-address", ray_address, "needs --executor ray")
    if kind == "ray" and ray_address and (problem := ray_unreachable(ray_address)):
        raise ConfigError("--ray-address", ray_address, problem)


def _check_sizes(runs: Sequence[PlannedRun], source: Path, sweep_dir: Path) -> None:
    """Refuse the sweep if one of its runs cannot fit this machine (the first one named).

    Raises:
        ConfigError: A run's estimated memory or disk need is more than there is.
    """
    for run in runs:
        try:
            check_feasible(run.scenario, source="", out_root=sweep_dir)
        except ConfigError as exc:
            params = ", ".join(f"{k}={v}" for k, v in run.overrides.items())
            raise ConfigError(
                source, exc.field, f"run #{run.index} ({params}): {exc.message}"
            ) from None


def run_sweep(
    scenario_path: str | Path,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    seeds: Sequence[int] | str | None = None,
    out_dir: str | Path | None = None,
    out_root: str | Path = DEFAULT_OUT_ROOT,
    executor: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    cache_path: str | Path | None = None,
    only: Sequence[int] | None = None,
    progress: bool = False,
    on_result: Callable[[TaskResult], None] | None = None,
    force: bool = False,
) -> SweepResult:
    """Run (or resume) a sweep; finished runs are skipped, partial and failed ones redone.

    Args:
        scenario_path: The base scenario YAML file.
        grid: Dotted scenario keys and values to try (cartesian product).
        seeds: Seeds for every grid point (list or ``"0-9,12"``); default the scenario's.
        out_dir: The sweep directory; default :meth:`SweepPlan.default_dir` of ``out_root``.
        out_root: Root of the default sweep directory.
        executor: ``local`` (spawn process pool) or ``ray``.
        workers: Local worker processes (default: CPUs) or Ray runs in flight (default: all).
        ray_address: Ray cluster address; default a local Ray instance.
        cache_path: Shared record/replay cache; default ``<sweep_dir>/llm_cache.sqlite``.
        only: Run only these indices (others are left as they are).
        progress: Progress bar on stderr.
        on_result: Called with each run's result as it arrives (after it is recorded).
        force: Run even runs whose estimated size does not fit this machine; without it
            such a sweep is refused before anything is written
            (:func:`simworld.runs.estimate.check_feasible`, run by run).

    Returns:
        The sweep's state when this invocation ends.

    Raises:
        ConfigError: Bad input (nothing is written; a key a run's model needs not set in
            this environment among it, unless the runs go to a Ray cluster), a run too
            large for this machine, or a directory holding another sweep.
    """
    started = time.perf_counter()
    _check_executor(executor, ray_address, workers)
    plan = plan_sweep(scenario_path, grid=grid, seeds=seeds)
    sweep_dir = Path(out_dir) if out_dir is not None else plan.default_dir(out_root)
    sweep_dir = sweep_dir.resolve()
    check_same_sweep(sweep_dir, plan.spec())
    _check_only(only, len(plan.runs))
    if ray_address is None:  # runs see this environment (a cluster's may hold other keys)
        for run in plan.runs:  # a key not set would fail every run at its first call
            check_keys(run.scenario, plan.scenario_path)
    if not force:
        chosen_runs = [r for r in plan.runs if only is None or r.index in only]
        _check_sizes(chosen_runs, plan.scenario_path, sweep_dir)
    cache = Path(cache_path).resolve() if cache_path is not None else sweep_dir / CACHE_FILE
    settings = {"executor": executor, "workers": workers, "cache": str(cache)}
    entries = [RunEntry(r.index, r.name, r.params, r.seed) for r in plan.runs]
    with SweepLock(sweep_dir):
        (sweep_dir / RUNS_DIR).mkdir(exist_ok=True)
        store = SweepStore(sweep_dir, spec=plan.spec(), entries=entries, settings=settings)
        store.load()
        chosen = set(range(len(entries)) if only is None else only)
        selected = [e for e in entries if e.index in chosen]
        todo = [e for e in selected if e.status not in FINISHED_STATUSES]
        tasks = [
            RunTask(
                index=e.index,
                scenario_path=str(plan.scenario_path),
                overrides=plan.runs[e.index].overrides,
                run_dir=str(store.run_path(e)),
                cache_path=str(cache),
                lock_path=str(sweep_dir / LOCKS_DIR / f"{e.name}.lock"),
                force=force,
            )
            for e in todo
        ]
        # every interpreter the sweep starts (the workers, and multiprocessing's resource
        # tracker that a process pool starts) leaves the current directory off its sys.path
        with safe_path():
            _drive(store, tasks, executor, workers, ray_address, progress, on_result, len(selected))
        frame_rows = store.frame().num_rows
        runs = [e.to_json() for e in entries]
    return SweepResult(
        sweep_dir,
        runs,
        store.counts(),
        store.totals(),
        done_now=len(tasks),
        skipped=len(selected) - len(tasks),
        wall_time_s=time.perf_counter() - started,
        frame_rows=frame_rows,
        failed=[r for r in runs if r["status"] == "failed"],
    )


def _drive(
    store: SweepStore,
    tasks: list[RunTask],
    kind: str,
    workers: int | None,
    ray_address: str | None,
    progress: bool,
    on_result: Callable[[TaskResult], None] | None,
    selected: int,
) -> None:
    """Hand tasks to the executor; record each result; keep the files current."""
    store.write_manifest()
    # made before any run is marked running: an executor that cannot start (Ray) leaves the
    # sweep's runs pending
    runner = (
        make_executor(kind, workers=workers, tasks=len(tasks), ray_address=ray_address)
        if tasks
        else None
    )
    store.dispatched([t.index for t in tasks])
    bar = Bar(
        total=selected,
        initial=selected - len(tasks),
        desc="sweep",
        unit="run",
        smoothing=0,
        file=sys.stderr,
        disable=not progress,
    )
    lock, stop = threading.Lock(), threading.Event()

    def tick() -> None:  # between results too: the clock and the runs in flight move
        while not stop.wait(TICK_S):
            with lock:
                _postfix(bar, store, runner)
                bar.refresh()

    ticker = threading.Thread(target=tick, name="simworld-sweep-bar", daemon=True)
    try:
        store.write_manifest()
        _postfix(bar, store, runner)
        if progress and runner is not None:
            ticker.start()
        for result in runner.run(tasks) if runner is not None else ():
            with lock:
                store.record(result)
                store.write_manifest(force=False)
                store.write_frame()
                _postfix(bar, store, runner)
                bar.update(1)
            if on_result is not None:
                on_result(result)
    finally:
        stop.set()
        if ticker.is_alive():
            ticker.join()
        if runner is not None:
            runner.close()
        bar.close()
        store.stop_running()
        store.write_frame(force=True)
        store.write_manifest()


def _postfix(bar: tqdm, store: SweepStore, runner: Executor | None) -> None:
    """Show runs in progress and failed, and tokens and cost so far."""
    totals = store.totals()
    bar.set_postfix(
        running=0 if runner is None else runner.running(),
        failed=store.counts().get("failed", 0),
        tokens=int(totals["prompt_tokens"] + totals["completion_tokens"]),
        cost=f"${totals['cost_usd']:.4f}",
        refresh=False,
    )


# -- command line ----------------------------------------------------------------------------
def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Define the options of ``simworld sweep``."""
    parser.add_argument("scenario", help="base scenario YAML file")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="dotted scenario key and values to sweep (YAML scalars; repeatable)",
    )
    parser.add_argument("--seeds", help="seeds for every grid point: 0-9, 1,3,5 or a mix")
    parser.add_argument(
        "--executor", choices=EXECUTORS, default="local", help="local process pool or Ray"
    )
    parser.add_argument("--workers", type=int, help="local processes / Ray runs in flight")
    parser.add_argument("--ray-address", help="Ray cluster address (default: local Ray)")
    parser.add_argument("--out", help="sweep directory (default: outputs/<scenario>/sweep-<hash>)")
    parser.add_argument("--out-root", default=str(DEFAULT_OUT_ROOT), help="root of the default")
    parser.add_argument("--cache", help="shared record/replay cache (default: in the sweep dir)")
    parser.add_argument("--only", help="run only these run indices (e.g. 3 or 1,4-6)")
    parser.add_argument("--dry-run", action="store_true", help="print runs and an estimate only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--force", action="store_true", help="run even runs whose estimated size does not fit here"
    )


def sweep_command(args: argparse.Namespace) -> int:
    """Run ``simworld sweep``; returns the exit code (ConfigError propagates to the CLI)."""
    grid = parse_grid(args.grid)
    only = parse_int_list(args.only, option="--only") if args.only else None
    if args.dry_run:
        plan = plan_sweep(args.scenario, grid=grid, seeds=args.seeds)
        _check_executor(args.executor, args.ray_address, args.workers)
        _check_only(only, len(plan.runs))
        chosen = [r for r in plan.runs if only is None or r.index in only]
        sweep_dir = Path(args.out) if args.out else plan.default_dir(args.out_root)
        print(f"sweep      {sweep_dir} (dry run: nothing run, nothing written)")
        points = len(plan.runs) // len(plan.seeds)
        print(f"grid       {points} grid points x {len(plan.seeds)} seeds")
        print(f"estimate   {estimate_sweep(chosen).summary()}")
        return 0
    try:
        result = run_sweep(
            args.scenario,
            grid=grid,
            seeds=args.seeds,
            out_dir=args.out,
            out_root=args.out_root,
            executor=args.executor,
            workers=args.workers,
            ray_address=args.ray_address,
            cache_path=args.cache,
            only=only,
            progress=not args.quiet,
            force=args.force,
        )
    except KeyboardInterrupt as exc:
        how, code = stopped_by(exc)
        print(f"simworld: sweep {how}; re-run the same command to resume", file=sys.stderr)
        return code
    print(result.summary())
    failed = [r for r in result.failed if only is None or r["index"] in only]
    return EXIT_RUNS_FAILED if failed else 0
