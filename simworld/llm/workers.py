"""Worker processes that run litellm calls away from the simulation's event loop.

litellm spends milliseconds of CPU on every call (parameter mapping, provider lookups,
response metadata, cost and logging bookkeeping), all of it on the one event loop that also runs
the simulation. A large run therefore hands its calls to worker processes, each running
:class:`~simworld.llm.litellm_backend.LiteLLMModel` (so every call still goes through
``litellm.acompletion``) on its own event loop (:mod:`simworld.llm.worker`). The parent keeps
everything that makes a run reproducible: retries, seeds, the cache, accounting and cost
(recomputed from the returned token counts).

Results do not depend on where a call ran: a call's answer is a function of its request and
seed only, and an error crosses back with the same kind, retry class and message it would
have had in-process.

``SIMWORLD_LLM_WORKERS`` chooses: ``auto`` (the default) starts ``min(cores, 4)`` workers
before the first step of a run whose steps make ``PLAN_MIN_CALLS_PER_STEP`` calls or more
(the plan, :meth:`~simworld.llm.types.LanguageModel.plan`; the run waits for them, so every
step takes the fast path), or mid-run once one backend has made ``AUTO_START_CALLS`` calls at
``AUTO_MIN_CALLS_PER_S`` or faster (a fast run that did not plan, then used as soon as they are
ready); small runs, tests and latency-bound runs stay in-process. ``0`` never; ``N`` starts
``N`` workers when the run plans (else at the first call) and waits for them. ``local/``
models always run in-process. Workers are
shared by every backend of the process, inherit its environment when they start, and exit
with it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simworld.errors import ConfigError
from simworld.llm.types import Completion, LLMRequest, RemoteModelError
from simworld.llm.worker_protocol import (
    CALL,
    CANCEL,
    HEADER,
    READY,
    READY_TIMEOUT_S,
    WORKER_MODULE,
    frame,
)
from simworld.support.process import ctrl_c_held

WORKERS_ENV = "SIMWORLD_LLM_WORKERS"
AUTO = "auto"
MAX_AUTO_WORKERS = 4
# One per core: a worker starts its calls in arrival order (support.turns.Turns), so more
# workers than cores only add processes competing for them. Measured side by side on two
# cores, 2 workers beat 4 in every pair (and each holds its own litellm: docs/benchmarks.md).
AUTO_WORKERS_PER_CORE = 1
# ``auto`` starts the workers once one backend has made AUTO_START_CALLS calls at
# AUTO_MIN_CALLS_PER_S or more: by then litellm (about 1 ms of CPU per call) keeps a fifth
# of the event loop busy, and the run is long enough to repay a worker's start-up (a few
# seconds of CPU importing litellm, on another core). Latency-bound runs never start them.
AUTO_START_CALLS = 500
AUTO_MIN_CALLS_PER_S = 200.0
# ``auto`` starts the workers before the first step of a run whose steps make this many calls
# or more. benchmarks/bench_plan.py measures both paths at each size (docs/benchmarks.md, "The
# path chosen from the plan"): per step the workers were faster at every size, and their wait
# before step 1 (a few seconds) is repaid sooner the more CPU litellm needs per second: more
# calls per step, faster answers, a slower or busier host.
PLAN_MIN_CALLS_PER_STEP = 200
EXIT_TIMEOUT_S = 5.0
RECV_BYTES = 1 << 16
WORKER_LOST = "llm worker process exited"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerPolicy:
    """When a backend hands its calls to LLM worker processes.

    Attributes:
        workers: Worker processes (0: always in-process).
        after_calls: In-process calls before the workers may start.
        min_calls_per_s: And the call rate (calls over the time since the first) they need.
        wait: Whether calls wait for the workers to come up (else they stay in-process
            until a worker is ready).
        plan_calls: Calls per step from which a run that plans
            (:meth:`~simworld.llm.types.LanguageModel.plan`) starts the workers before its
            first step and waits for them.
    """

    workers: int
    after_calls: int = 0
    min_calls_per_s: float = 0.0
    wait: bool = True
    plan_calls: int = 0

    def planned(self, calls_per_step: int) -> bool:
        """Whether a run whose steps make ``calls_per_step`` calls should start the workers
        before its first step."""
        return self.workers > 0 and calls_per_step >= self.plan_calls

    def due(self, calls: int, elapsed_s: float) -> bool:
        """Whether a backend that made ``calls`` calls in ``elapsed_s`` seconds should start
        using the workers."""
        if self.workers == 0 or calls <= self.after_calls:
            return False
        return calls >= self.min_calls_per_s * elapsed_s

    @classmethod
    def resolve(cls, value: int | None = None) -> WorkerPolicy:
        """The policy for an explicit worker count, else for ``SIMWORLD_LLM_WORKERS``.

        Raises:
            ConfigError: ``SIMWORLD_LLM_WORKERS`` is neither ``auto`` nor a count.
        """
        if value is not None:
            return cls(max(value, 0))
        raw = os.environ.get(WORKERS_ENV, AUTO).strip().lower()
        if raw != AUTO:
            if not raw.isdigit():
                raise ConfigError(WORKERS_ENV, raw, "expected 'auto' or a number")
            return cls(int(raw))
        if sys.platform == "win32":  # the parent's selector-based socket handling needs POSIX
            return cls(0)
        workers = min((os.cpu_count() or 1) * AUTO_WORKERS_PER_CORE, MAX_AUTO_WORKERS)
        return cls(
            workers,
            AUTO_START_CALLS,
            AUTO_MIN_CALLS_PER_S,
            wait=False,
            plan_calls=PLAN_MIN_CALLS_PER_STEP,
        )


class _Worker:
    """The parent's end of one worker process: a non-blocking socket read and written from
    the event loop that uses it (re-attached when a new loop takes over)."""

    def __init__(self, index: int) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (package_root, env.get("PYTHONPATH"))))
        self.index = index
        with ctrl_c_held():  # a Ctrl-C while the worker imports is not the worker's
            self.process = subprocess.Popen(
                # -P: the current directory is not put on sys.path (its random.py is not ours)
                [sys.executable, "-P", "-m", WORKER_MODULE, str(child.fileno())],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        child.close()
        parent.setblocking(False)
        self.sock = parent
        self.ready = False
        self.alive = True
        self.pending: dict[int, asyncio.Future[Completion]] = {}
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready_waiters: list[asyncio.Future[None]] = []

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve this socket from ``loop`` (the loop of the calling coroutine)."""
        if self._loop is loop or not self.alive:
            return
        old, self._loop = self._loop, loop
        if old is not None and not old.is_closed():
            old.remove_reader(self.sock.fileno())
            old.remove_writer(self.sock.fileno())
        loop.add_reader(self.sock.fileno(), self._on_readable)
        if self._outbox:
            loop.add_writer(self.sock.fileno(), self._flush)

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue a message; written now when the socket takes it, else when it is writable."""
        if not self.alive:
            return
        pending = bool(self._outbox)
        self._outbox += frame(message)
        if not pending:
            self._flush()
            if self._outbox and self._loop is not None:
                self._loop.add_writer(self.sock.fileno(), self._flush)

    def wait_ready(self) -> asyncio.Future[None]:
        """A future of the running loop, done when the worker is ready or gone."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.ready or not self.alive:
            waiter.set_result(None)
        else:
            self._ready_waiters.append(waiter)
        return waiter

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self._outbox)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        del self._outbox[:sent]
        if not self._outbox and self._loop is not None:
            self._loop.remove_writer(self.sock.fileno())

    def _on_readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(RECV_BYTES)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self._inbox += data
        while len(self._inbox) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._inbox)
            end = HEADER.size + size
            if len(self._inbox) < end:
                break
            message = pickle.loads(self._inbox[HEADER.size : end])
            del self._inbox[:end]
            self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        if message[0] == READY:
            self.ready = True
            self._wake_ready_waiters()
            return
        _, call_id, completion, error = message
        future = self.pending.pop(call_id, None)
        if future is None:  # cancelled meanwhile
            return
        if error is None:
            _settle(future, future.set_result, completion)
        else:
            _settle(future, future.set_exception, error)

    def _wake_ready_waiters(self) -> None:
        for waiter in self._ready_waiters:
            _settle(waiter, waiter.set_result, None)
        self._ready_waiters.clear()

    def _lost(self) -> None:
        """The worker exited: fail its calls as transient (the gateway retries them)."""
        if not self.alive:
            return
        self.alive = False
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.fileno())
            self._loop.remove_writer(self.sock.fileno())
        self.sock.close()
        for future in self.pending.values():
            lost = RemoteModelError(WORKER_LOST, kind="connection", transient=True)
            _settle(future, future.set_exception, lost)
        self.pending.clear()
        self._wake_ready_waiters()
        log.warning("simworld LLM worker %d exited (code %s)", self.index, self.process.poll())

    def close(self) -> None:
        """Close the socket (the worker exits on end of file) and reap the process."""
        self.alive = False
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self.sock.fileno())
                self._loop.remove_writer(self.sock.fileno())
        self.sock.close()
        try:
            self.process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _settle(future: asyncio.Future[Any], setter: Callable[[Any], None], value: Any) -> None:
    """Resolve ``future`` from its own loop; futures of a closed loop are dropped."""
    if future.done():
        return
    loop = future.get_loop()
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        setter(value)
    else:
        loop.call_soon_threadsafe(lambda: None if future.done() else setter(value))


class WorkerPool:
    """Worker processes answering :class:`~simworld.llm.types.LLMRequest` s through litellm.

    Use it from one event loop at a time (a new loop takes the workers over).

    Args:
        workers: How many processes to start.

    Attributes:
        size: That number.
        calls: Calls sent to the workers so far.
    """

    def __init__(self, workers: int) -> None:
        self.size = workers
        self.calls = 0
        self._workers: list[_Worker] = []
        self._ids = itertools.count()

    def start(self) -> None:
        """Start the processes (they import litellm in the background); idempotent."""
        if not self._workers:
            self._workers = [_Worker(i) for i in range(self.size)]

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run."""
        return bool(self._workers)

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers still running."""
        return [w.process.pid for w in self._workers if w.alive]

    def ready(self) -> bool:
        """Whether a live worker can take calls (call from the loop that will use it)."""
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            worker.attach(loop)
        return any(w.ready and w.alive for w in self._workers)

    def alive(self) -> bool:
        """Whether any worker is still running (or starting)."""
        return any(w.alive for w in self._workers)

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, *, every: bool = False) -> bool:
        """Start the workers and wait until one is ready, or with ``every`` until each one is
        ready or gone (a run's first step then has them all: started together, the last
        comes up a fraction of a second after the first); ``False`` if none comes up."""
        self.start()
        if self.ready() and not every:  # ready() also attaches the workers to this loop
            return True
        waiters = [w.wait_ready() for w in self._workers]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                if every:
                    await asyncio.gather(*waiters)
                else:
                    for next_done in asyncio.as_completed(waiters):
                        await next_done
                        if self.ready():
                            break
        return self.ready()

    async def complete(
        self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
    ) -> Completion:
        """Answer ``request`` in the least busy ready worker (arguments as
        :meth:`~simworld.llm.types.LanguageModel.complete`).

        Raises:
            RemoteModelError: The model call failed (classified in the worker), or the
                worker exited with the call in flight (transient).
            RuntimeError: No worker is ready (check :meth:`ready` first).
        """
        loop = asyncio.get_running_loop()
        ready = [w for w in self._workers if w.ready and w.alive]
        if not ready:
            raise RuntimeError("no LLM worker is ready")
        worker = min(ready, key=lambda w: len(w.pending))
        worker.attach(loop)
        self.calls += 1
        call_id = next(self._ids)
        future: asyncio.Future[Completion] = loop.create_future()
        worker.pending[call_id] = future
        worker.send((CALL, call_id, request, attempt, timeout_s, transient))
        try:
            return await future
        except asyncio.CancelledError:
            if worker.pending.pop(call_id, None) is not None:
                worker.send((CANCEL, call_id))
            raise

    def close(self) -> None:
        """Stop every worker."""
        for worker in self._workers:
            worker.close()
        self._workers = []

    def kill(self) -> None:
        """Kill every worker without waiting for it to leave."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.process.kill()
        self._workers = []


_POOLS: dict[int, WorkerPool] = {}


def shared_pool(workers: int) -> WorkerPool:
    """The process's pool of ``workers`` workers (created, not started, on first use)."""
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = WorkerPool(workers)
    return pool


@atexit.register
def close_pools() -> None:
    """Stop every shared pool (at exit; also usable by tests).

    A Ctrl-C pressed again while the workers are leaving (the command has already said it
    stopped) kills them instead of printing a traceback from the exit handler.
    """
    try:
        for pool in _POOLS.values():
            pool.close()
    except KeyboardInterrupt:
        for pool in _POOLS.values():
            pool.kill()
    _POOLS.clear()
