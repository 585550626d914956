"""Sweep executors: one run per task, in a local spawn process pool or as Ray tasks."""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from simworld.errors import ConfigError
from simworld.support.process import SAFE_PATH_ENV as SAFE_PATH_ENV
from simworld.support.process import (
    Terminated,
    ctrl_c_held,
    leave_ctrl_c_to_the_parent,
    raise_terminated,
    safe_path,
)
from simworld.support.rundir import FINISHED as FINISHED_STATUSES
from simworld.support.rundir import MANIFEST as MANIFEST_FILE
from simworld.support.rundir import RunStatus

RAY_TASK_MAX_RETRIES = 1
RAY_LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2
RAY_POLL_TIMEOUT_S = 1.0
RAY_CONNECT_TIMEOUT_S = 10.0
"""How long :func:`ray_unreachable` waits for the cluster's port to answer."""
MAX_ERROR_CHARS = 500
PARENT_POLL_S = 0.5
EXIT_PARENT_GONE = 70
STOP_GRACE_S = 10.0
"""How long a stopped local sweep waits for the runs in its workers to mark themselves
interrupted before it kills the workers."""
MAX_WORKER_DEATHS = 2
"""A local sweep task whose worker process died this many times is reported failed (once,
it is run again in a new pool: a worker killed by the out-of-memory killer, say)."""


@dataclass(frozen=True)
class RunTask:
    """Everything a worker needs to do one run of a sweep (picklable, paths absolute).

    Attributes:
        index: The run's index in the sweep.
        scenario_path: The scenario YAML file.
        overrides: Dotted scenario keys to set (the grid point and the seed).
        run_dir: The run directory.
        cache_path: The shared record/replay cache.
        lock_path: A file locked while the run is being worked on.
        force: Run even when the run's estimated size does not fit the machine
            (``simworld sweep --force``; see :mod:`simworld.runs.estimate`).
    """

    index: int
    scenario_path: str
    overrides: dict[str, Any]
    run_dir: str
    cache_path: str
    lock_path: str
    force: bool = False


@dataclass
class TaskResult:
    """What a worker reports about one run.

    Attributes:
        index: The run's index in the sweep.
        status: ``completed``, ``budget_exhausted``, ``failed`` or ``crashed`` (the model's
            process died; the run resumes when the sweep is run again).
        error: Why the run failed, if it did.
        totals: The run's accounting (calls, tokens, cost) as a dict.
        wall_time_s: Seconds the worker spent on it.
        action: ``ran``, ``resumed``, ``reran`` (a partial or failed run deleted and run
            again) or ``skipped`` (already finished).
    """

    index: int
    status: str
    error: str | None = None
    totals: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    action: str = "ran"


def read_run_status(run_dir: Path) -> tuple[str | None, dict[str, Any]]:
    """The status in a run directory's manifest and the manifest (``None``, {} when absent)."""
    try:
        manifest = json.loads((run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None, {}
    return manifest.get("status"), manifest


def _short_error(exc: BaseException) -> str:
    from simworld.support.redact import Redactor

    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return Redactor().text(text)[:MAX_ERROR_CHARS]


def _resume_partial(task: RunTask) -> Any | None:
    """Continue a partial run in place with ``simworld.runs.run.resume_run``; ``None`` if it
    can't."""
    from simworld.runs import run as run_module

    resume_run = getattr(run_module, "resume_run", None)
    if resume_run is None:
        return None
    try:
        return resume_run(task.run_dir, cache_path=task.cache_path)
    except Exception:  # unrecorded, not reproducing, a broken manifest: start it again
        return None


def execute_task(task: RunTask) -> TaskResult:
    """Do one run of a sweep, whatever state an earlier attempt left its directory in.

    A finished run is reported and left alone; a partial run (killed or interrupted) is
    resumed in place when possible, else deleted and run again; a failed run is run again.
    A lock on ``task.lock_path`` makes this safe against a second worker (a retried Ray task,
    a leftover worker of a killed sweep) working on the same run at the same time.

    Args:
        task: The run.

    Returns:
        The run's outcome; errors are reported, never raised.
    """
    started = time.perf_counter()
    run_dir = Path(task.run_dir)
    Path(task.lock_path).parent.mkdir(parents=True, exist_ok=True)
    with open(task.lock_path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _execute_locked(task, run_dir, started)
        except Exception as exc:
            wall = time.perf_counter() - started
            return TaskResult(task.index, "failed", _short_error(exc), {}, wall)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _execute_locked(task: RunTask, run_dir: Path, started: float) -> TaskResult:
    from simworld.runs.run import run_scenario

    status, manifest = read_run_status(run_dir)
    if status in FINISHED_STATUSES:
        return TaskResult(
            task.index, status, None, manifest.get("totals") or {}, 0.0, action="skipped"
        )
    result, action = None, "ran"
    if run_dir.exists():
        if status in (RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.CRASHED):
            result, action = _resume_partial(task), "resumed"
        if result is None:
            shutil.rmtree(run_dir)
            action = "reran"
    if result is None:
        result = run_scenario(
            task.scenario_path,
            overrides=task.overrides,
            out_dir=task.run_dir,
            cache_path=task.cache_path,
            force=task.force,
        )
    wall = time.perf_counter() - started
    totals = asdict(result.accounting)
    return TaskResult(task.index, result.status, result.error, totals, wall, action)


class Executor(Protocol):
    """Runs sweep tasks and yields their results as they finish (in any order)."""

    workers: int | None

    def run(self, tasks: Sequence[RunTask]) -> Iterator[TaskResult]:
        """Run ``tasks``; yield each result as soon as it is in."""
        ...

    def running(self) -> int:
        """How many tasks are being worked on now (best effort)."""
        ...

    def close(self) -> None:
        """Stop workers and release resources (idempotent)."""
        ...


def _worker_init() -> None:
    """Warm a worker: import the engine (litellm, mesa) before the first task arrives; and
    watch the parent, so the worker ends when the sweep driver dies (:func:`watch_parent`).

    A terminal's Ctrl-C is the driver's alone: it stops its workers with SIGTERM
    (:meth:`LocalExecutor.close`), which ends a run as the ``simworld`` command's SIGTERM
    does (:func:`_pool_task`) and an idle worker at once. So is a closed terminal's SIGHUP.
    """
    leave_ctrl_c_to_the_parent()
    signal.signal(signal.SIGTERM, _leave_idle)
    watch_parent()
    import simworld.runs.run  # noqa: F401

    atexit.register(_fast_exit)  # registered last, so it runs first


def watch_parent(interval_s: float = PARENT_POLL_S) -> threading.Thread:
    """End this process at once when its parent process is gone.

    A daemon thread polls the parent's id; when the parent dies (``kill -9`` of the sweep
    driver) the process is re-parented and the thread ends it with ``os._exit``: a run in
    progress stops as if killed, and the next sweep resumes it.

    Args:
        interval_s: Seconds between two looks.

    Returns:
        The watching thread (started).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(EXIT_PARENT_GONE)

    thread = threading.Thread(target=watch, name="simworld-watch-parent", daemon=True)
    thread.start()
    return thread


def _leave_idle(signum: int, frame: FrameType | None) -> None:
    """A pool worker's SIGTERM between runs: nothing to mark, leave at once."""
    _fast_exit()


_STOPPED = threading.Event()
"""Set in a pool worker whose run a SIGTERM stopped: it takes no further run."""


def _pool_task(task: RunTask) -> TaskResult:
    """:func:`execute_task` in a local pool's worker: a SIGTERM meanwhile stops the run
    marked interrupted (:class:`~simworld.support.process.Terminated`), to be resumed.

    The pool queues tasks for its workers ahead of time, so a worker stopped mid-run would
    take the next one before the driver's shutdown ends it, and start that run; it leaves
    instead, and the run stays pending for the next sweep.
    """
    if _STOPPED.is_set():
        _fast_exit()
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return execute_task(task)
    except Terminated:
        _STOPPED.set()
        raise
    finally:
        signal.signal(signal.SIGTERM, _leave_idle)


def _fast_exit() -> None:
    """End a pool worker without tearing down its interpreter.

    A spawned worker's teardown (litellm's and mesa's module graphs) takes seconds, and the
    pool waits for it; every run's files are already durable, so the worker flushes its
    output and leaves at once.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class LocalExecutor:
    """A pool of ``spawn``-started processes on this machine (litellm breaks in forks).

    Each worker builds its own gateway per run; the SQLite cache is shared (WAL, busy
    timeout, ``INSERT OR IGNORE``).

    Args:
        workers: Number of worker processes.
    """

    def __init__(self, *, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers: int | None = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: set[Future[TaskResult]] = set()

    def running(self) -> int:
        """Tasks in the pool's hands, capped by the number of workers."""
        return min(self.workers or 0, len(self._pending))

    def run(self, tasks: Sequence[RunTask]) -> Iterator[TaskResult]:
        """Submit all tasks to the pool; yield results in completion order.

        A worker that dies (``kill -9``, the out-of-memory killer) breaks the pool, and with
        it every task in its hands. The pool is then made again and those tasks submitted
        again (a partial run resumes, :func:`execute_task`); a task whose worker died
        :data:`MAX_WORKER_DEATHS` times is reported failed.
        """
        deaths: dict[int, int] = {}
        queue = list(tasks)
        while queue:
            by_future = self._submit(queue)
            queue = []
            while self._pending:
                done, self._pending = wait(self._pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: by_future[f].index):
                    task = by_future[fut]
                    try:
                        result = fut.result()
                    except BrokenProcessPool as exc:
                        deaths[task.index] = deaths.get(task.index, 0) + 1
                        if deaths[task.index] < MAX_WORKER_DEATHS:
                            queue.append(task)
                            continue
                        why = f"its worker died {deaths[task.index]} times: {exc}"
                        result = TaskResult(task.index, "failed", why)
                    yield result
            self.close()

    def _submit(self, tasks: Sequence[RunTask]) -> dict[Future[TaskResult], RunTask]:
        """Make a pool for ``tasks`` and hand them all to it."""
        context = multiprocessing.get_context("spawn")
        # the pool starts multiprocessing's resource tracker when it is made (its queues'
        # locks) and its workers as tasks are submitted: every one a `python -c` child
        with safe_path(), ctrl_c_held():  # the workers start as tasks are submitted
            self._pool = ProcessPoolExecutor(
                max_workers=min(self.workers or 1, len(tasks)),
                mp_context=context,
                initializer=_worker_init,
            )
            by_future = {self._pool.submit(_pool_task, t): t for t in tasks}
        self._pending = set(by_future)
        return by_future

    def close(self) -> None:
        """Cancel queued tasks and stop the workers: each run in progress is marked
        interrupted (a worker still there after :data:`STOP_GRACE_S` is killed); the next
        sweep resumes them."""
        pool, self._pool = self._pool, None
        unfinished, self._pending = self._pending, set()
        if pool is None:
            return
        if not unfinished:
            pool.shutdown(wait=True)
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in processes:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        pool.shutdown(wait=True)  # let the pool's manager thread see the workers gone


class RayExecutor:
    """Sweep runs as Ray tasks, on a cluster (``address``) or a local Ray instance.

    On a cluster every node needs simworld installed and the sweep directory, the scenario
    and its files on a shared filesystem; the SQLite cache needs one host (WAL) or a
    node-local path per node.

    Args:
        address: The Ray cluster address (``ray://host:10001``, ``auto``); ``None`` starts a
            local instance, shut down again by :meth:`close`.
        workers: At most this many runs in flight (and the CPUs of a local instance);
            ``None``: all runs submitted at once, a local instance uses every CPU.
    """

    def __init__(self, *, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "--executor", "ray", "needs Ray: pip install 'simworld[ray]'"
            ) from exc
        self._ray = ray
        self.workers = workers
        self._owns = False
        self._in_flight = 0
        self._refs: dict[Any, RunTask] = {}
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": "WARNING",
            }
            if address is None:
                options["num_cpus"] = workers or os.cpu_count() or 1
                options["object_store_memory"] = RAY_LOCAL_OBJECT_STORE_BYTES
            try:
                ray.init(address=address, **options)
            except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
                where = "--ray-address" if address else "--executor"
                raise ConfigError(where, address or "ray", f"cannot start Ray: {exc}") from exc
            self._owns = True
        self._remote = ray.remote(execute_task).options(
            num_cpus=1, max_retries=RAY_TASK_MAX_RETRIES
        )

    def running(self) -> int:
        """Tasks submitted and not yet finished (capped by ``workers`` when given)."""
        return self._in_flight if self.workers is None else min(self.workers, self._in_flight)

    def run(self, tasks: Sequence[RunTask]) -> Iterator[TaskResult]:
        """Submit tasks (at most ``workers`` in flight); yield results in completion order."""
        ray = self._ray
        queue = list(tasks)
        limit = self.workers or len(queue)
        refs = self._refs
        while queue or refs:
            while queue and len(refs) < limit:
                task = queue.pop(0)
                refs[self._remote.remote(task)] = task
            self._in_flight = len(refs)
            done, _ = ray.wait(list(refs), num_returns=1, timeout=RAY_POLL_TIMEOUT_S)
            for ref in sorted(done, key=lambda r: refs[r].index):
                task = refs.pop(ref)
                self._in_flight = len(refs)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # a worker crash or a Ray system error
                    result = TaskResult(task.index, "failed", _short_error(exc))
                yield result
        self._in_flight = 0

    def close(self) -> None:
        """Cancel runs still in flight; shut down the Ray instance if this executor started it."""
        if self._ray.is_initialized():
            for ref in list(self._refs):
                self._ray.cancel(ref, force=True)
        self._refs.clear()
        self._in_flight = 0
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False


def ray_unreachable(address: str) -> str | None:
    """Why the Ray cluster at ``address`` (``host:port`` or ``ray://host:port``) cannot be
    reached, tried with one TCP connection, or ``None`` (also for ``auto`` and anything not
    in those forms, which ``ray.init`` judges itself). ``ray.init`` retries a ``host:port``
    that does not answer for many minutes; this says so in seconds."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), RAY_CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"cannot reach {host}:{port} ({exc.strerror or exc or 'timed out'})"


def make_executor(
    kind: str, *, workers: int | None, tasks: int, ray_address: str | None = None
) -> Executor:
    """Build the executor named ``kind`` (``local`` or ``ray``).

    Args:
        kind: ``local`` or ``ray``.
        workers: Worker processes (local; default: CPUs, at most ``tasks``) or runs in flight
            (Ray; default: no limit).
        tasks: How many runs there are.
        ray_address: Ray cluster address (Ray only).

    Raises:
        ConfigError: Unknown kind, Ray missing, or a bad worker count.
    """
    if workers is not None and workers < 1:
        raise ConfigError("--workers", str(workers), "must be at least 1")
    if kind == "local":
        if ray_address is not None:
            raise ConfigError("--ray-address", ray_address, "needs --executor ray")
        count = workers or min(os.cpu_count() or 1, max(tasks, 1))
        return LocalExecutor(workers=count)
    if kind == "ray":
        return RayExecutor(address=ray_address, workers=workers)
    raise ConfigError("--executor", kind, "expected 'local' or 'ray'")
