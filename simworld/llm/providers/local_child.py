"""The embedded model in a child process, so a native crash is an error and not a vanished run.

llama.cpp is native code: a segfault, an abort or the kernel's out-of-memory killer ends
the whole process, with no Python exception and no word from simworld. By default the
``local/`` provider therefore loads its engine (batched, or serial for ``batch=1``, see
:func:`~simworld.llm.providers.local_batch.load_engine`) in a child process (started
with ``spawn``: litellm and llama.cpp do not survive a fork). Calls go over a pipe, each
with an id, as many at once as the caller sends; a reader thread in the parent hands each
answer to the future of its call. Cancelling a call's future (as a timed-out call does) sends
its id to the child, whose engine stops the call before its next prefill chunk or token.
When the child dies, every call in flight, and every later call on that model, raises
:class:`ModelCrashedError`, which names the model and how the child died; the run stops
with status ``crashed`` and ``simworld resume`` continues it. A child that cannot load the
model sends the error instead (:class:`ModelLoadError`): the run fails, as a resume would;
so does a load that fails in the simworld process (``inline``, below).

The child runs exactly the engine code the parent would run, on the same prompts, so the
answers are the same whichever way the model runs. ``SIMWORLD_LOCAL_PROCESS=inline`` loads
the model in the simworld process instead (``child``, the default, isolates it).

``SIMWORLD_LOCAL_CRASH_AFTER=N`` is for tests: the child aborts (``os.abort()``, a real
``SIGABRT``) when asked for its call number ``N + 1``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from typing import Any, ClassVar, Protocol

from simworld.errors import SimworldError
from simworld.llm.providers.local_engine import (
    ContextOverflowError,
    EngineConfig,
    Generation,
    Sampling,
    build_record,
    reinstall_command,
)
from simworld.support.process import (
    TERMINATING,
    ctrl_c_held,
    leave_ctrl_c_to_the_parent,
    safe_path,
)

PROCESS_ENV = "SIMWORLD_LOCAL_PROCESS"
PROCESS_CHOICES = ("child", "inline")
CRASH_AFTER_ENV = "SIMWORLD_LOCAL_CRASH_AFTER"
_READY = "ready"
_CALL = "call"
_CANCEL = "cancel"
_OK = "ok"
_STOPPED = "stopped"
_OVERFLOW = "overflow"
_FAILED = "failed"
_LOAD_FAILED = "load_failed"


class ModelCrashedError(SimworldError):
    """The process running a ``local/`` model died (segfault, abort, out of memory).

    Args:
        model: The model string.
        what: How the process ended, in words.
        exitcode: Its exit code as :mod:`multiprocessing` gives it (minus the signal that
            ended it), if known.
    """

    happened = "crashed"

    def __init__(self, model: str, what: str, exitcode: int | None = None) -> None:
        self.model = model
        self.what = what
        self.exitcode = exitcode
        super().__init__(f"llm.model {model!r}: the embedded model {self.happened}: {what}")

    @property
    def stop_signal(self) -> int | None:
        """The signal of :data:`~simworld.support.process.TERMINATING` that ended the
        process, if one did: a stop someone asked for (a job scheduler stopping the
        command's whole process group, or a closed terminal, reaches the child too), not a
        crash."""
        if self.exitcode is not None and -self.exitcode in TERMINATING:
            return -self.exitcode
        return None


class ModelLoadError(ModelCrashedError):
    """The child could not load a ``local/`` model (a context too large for the memory, a
    llama.cpp build for another CPU): the run fails; resuming it would fail alike.

    Args:
        model: The model string.
        what: The engine's error, as ``Kind: message``.
        exitcode: The child's exit code, if known.
    """

    happened = "could not be loaded"


class Engine(Protocol):
    """What the ``local/`` provider needs of an engine, in-process or in a child."""

    def submit(self, prompt: str, *, preamble: str, sampling: Sampling) -> Future[Generation]:
        """Queue one continuation of ``prompt``; the future holds it."""
        ...

    def generate(self, prompt: str, *, preamble: str, sampling: Sampling) -> Generation:
        """Decode one continuation of ``prompt`` (see :meth:`LlamaEngine.generate`)."""
        ...


def process_mode() -> str:
    """``child`` or ``inline``, from ``SIMWORLD_LOCAL_PROCESS``.

    Raises:
        ValueError: The variable holds something else.
    """
    raw = os.environ.get(PROCESS_ENV, "child").strip().lower() or "child"
    if raw not in PROCESS_CHOICES:
        raise ValueError(f"{PROCESS_ENV}: expected one of {list(PROCESS_CHOICES)}, got {raw!r}")
    return raw


_INLINE_LOAD_ERRORS: dict[EngineConfig, ModelLoadError] = {}
"""The last failed load of each config in this process (``inline`` mode), until one loads."""
_INLINE_BUILDS: dict[EngineConfig, dict[str, Any]] = {}
"""What each config's model was loaded with in this process (``inline`` mode)."""


def engine_for(model: str, config: EngineConfig) -> Engine:
    """The engine that answers ``model``: a child process's, or this process's.

    Raises:
        ModelLoadError: This process could not load the model (``inline`` mode; a child's
            load error is raised by its calls).
    """
    if process_mode() == "inline":
        from simworld.llm.providers.local_batch import load_engine

        try:
            engine = load_engine(config)
        except Exception as exc:
            error = ModelLoadError(model, str(_Failure.of(exc)))
            _INLINE_LOAD_ERRORS[config] = error
            raise error from exc
        _INLINE_LOAD_ERRORS.pop(config, None)
        if config not in _INLINE_BUILDS:
            _INLINE_BUILDS[config] = build_record(config)
        return engine
    return ChildEngine.get(model, config)


def crash_of(config: EngineConfig) -> ModelCrashedError | None:
    """Why ``config``'s model cannot answer: its child died or could not load it, or this
    process could not (``inline`` mode); ``None`` when neither happened."""
    return _INLINE_LOAD_ERRORS.get(config) or ChildEngine.crash_of(config)


def build_of(config: EngineConfig) -> dict[str, Any] | None:
    """The build that answered ``config``'s model in this process
    (:func:`~simworld.llm.providers.local_engine.build_record`, read where the model was
    loaded: its child or, ``inline``, this process); ``None`` before it was loaded."""
    return _INLINE_BUILDS.get(config) or ChildEngine.build_of(config)


def death_cause(exitcode: int | None) -> str:
    """How a child process ended, in words (``exitcode`` as :mod:`multiprocessing` gives it)."""
    if exitcode is None:
        return "the model process stopped answering"
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode)
        except ValueError:
            return f"the model process was killed by signal {-exitcode}"
        described = signal.strsignal(sig) or sig.name
        hint = _HINTS.get(sig, "").format(reinstall_command())
        return f"the model process died of {sig.name} ({described}){hint}"
    return f"the model process exited with code {exitcode}"


_HINTS = {
    signal.SIGKILL: " (likely out of memory)",
    signal.SIGILL: " (llama.cpp compiled for another CPU? rebuild it on this machine: {})",
}
"""What a death by each signal most likely means, added to its description."""


@dataclass
class _Failure:
    """An exception raised by the engine in the child, sent back as text."""

    kind: str
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> _Failure:
        """The failure of ``exc``: its type's name and its text."""
        return cls(type(exc).__name__, str(exc))

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class ChildEngine:
    """An engine in a child process; calls in flight are matched to answers by id.

    Args:
        model: The model string (named in errors).
        config: The engine's config.
    """

    _instances: ClassVar[dict[EngineConfig, ChildEngine]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: str, config: EngineConfig) -> None:
        self.model = model
        self.config = config
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._crash: ModelCrashedError | None = None
        self._closing = False
        self._next_id = 0
        self._calls: dict[int, Future[Generation]] = {}
        self.stopped = 0
        """Calls the child has cancelled on the caller's word."""
        self._reader: threading.Thread | None = None
        self.build: dict[str, Any] | None = None
        """What the child loaded the model with (its ready message), once it is ready."""
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_end = ctx.Pipe()
        self._process = ctx.Process(
            target=_serve,
            args=(child_end, config, int(os.environ.get(CRASH_AFTER_ENV, "-1") or -1)),
            name=f"simworld-local-{config.path.stem}",
            daemon=True,
        )
        with safe_path():  # the child's `python -c` would put the cwd first on sys.path
            # spawning starts multiprocessing's resource tracker if it is not running, and
            # unblocks SIGINT after: start it first, so the child starts with SIGINT blocked
            resource_tracker.ensure_running()
            with ctrl_c_held():  # a Ctrl-C while the child imports is the parent's alone
                self._process.start()
        child_end.close()

    @classmethod
    def get(cls, model: str, config: EngineConfig) -> ChildEngine:
        """This process's live child for ``config``, started on first use (and again after
        a crash, for a later run)."""
        with cls._instances_lock:
            engine = cls._instances.get(config)
            if engine is not None and not engine.crashed:
                return engine
            engine = cls._instances[config] = cls(model, config)
            engine._wait_ready()  # the model is loaded, or the child has died trying
            return engine

    @classmethod
    def close_all(cls) -> None:
        """Stop every child (they also stop by themselves when this process exits)."""
        with cls._instances_lock:
            engines = list(cls._instances.values())
            cls._instances.clear()
        for engine in engines:
            engine.close()

    @classmethod
    def crash_of(cls, config: EngineConfig) -> ModelCrashedError | None:
        """The crash of the child last started for ``config``, if it has died."""
        with cls._instances_lock:
            engine = cls._instances.get(config)
        return None if engine is None else engine._crash

    @classmethod
    def build_of(cls, config: EngineConfig) -> dict[str, Any] | None:
        """The build of the child last started for ``config`` (from its ready message)."""
        with cls._instances_lock:
            engine = cls._instances.get(config)
        return None if engine is None else engine.build

    @property
    def crashed(self) -> bool:
        """Whether the child has died."""
        return self._crash is not None

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid

    def submit(self, prompt: str, *, preamble: str, sampling: Sampling) -> Future[Generation]:
        """Send one call to the child; its future holds the answer. Cancelling the future
        stops the call in the child.

        The future fails with :class:`ModelCrashedError` when the child dies (during the
        call or before it), with ``ContextOverflowError`` when the prompt does not fit, and
        with ``RuntimeError`` (the engine's error text kept) when the engine fails.
        """
        future: Future[Generation] = Future()
        with self._lock:
            if self._crash is not None:
                future.set_exception(self._crash)
                return future
            call_id = self._next_id
            self._next_id += 1
            self._calls[call_id] = future
        if self._send((_CALL, call_id, prompt, preamble, sampling)):
            future.add_done_callback(functools.partial(self._cancelled, call_id))
        return future

    def _send(self, message: tuple[Any, ...]) -> bool:
        """Send ``message`` to the child; whether it went (if not, the child has died)."""
        try:
            with self._send_lock:
                self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError) as exc:
            self._fail_all(self._died(), exc)
            return False
        return True

    def _cancelled(self, call_id: int, future: Future[Generation]) -> None:
        """Stop call ``call_id`` in the child once its caller has cancelled it."""
        if not future.cancelled():
            return
        with self._lock:
            live = self._calls.pop(call_id, None) is not None and self._crash is None
        if live:
            self._send((_CANCEL, call_id))

    def generate(self, prompt: str, *, preamble: str, sampling: Sampling) -> Generation:
        """Decode one continuation in the child (see :meth:`LlamaEngine.generate`).

        Raises:
            ContextOverflowError: The prompt does not fit the context window.
            ModelCrashedError: The child died, during this call or before it.
            RuntimeError: The engine failed in the child (the error's text is kept).
        """
        return self.submit(prompt, preamble=preamble, sampling=sampling).result()

    def _wait_ready(self) -> None:
        """Wait for the child's ready message, then start the reader thread."""
        try:
            kind, payload = self._conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            self._died()
            return
        if kind == _LOAD_FAILED:
            self._died(ModelLoadError(self.model, str(payload)))
            return
        self.build = payload
        self._reader = threading.Thread(
            target=self._read, name=f"simworld-local-reader-{self.pid}", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        """Hand every answer to its call's future until the pipe ends."""
        while True:
            try:
                call_id, kind, value = self._conn.recv()
            except (EOFError, ConnectionResetError, OSError) as exc:
                if not self._closing:
                    self._fail_all(self._died(), exc)
                return
            with self._lock:
                future = self._calls.pop(call_id, None)
                self.stopped += kind == _STOPPED
            if future is None or future.done():
                continue
            if kind == _OVERFLOW:
                future.set_exception(ContextOverflowError(value.message))
            elif kind == _FAILED:
                future.set_exception(RuntimeError(str(value)))
            else:
                future.set_result(value)

    def _fail_all(self, crash: ModelCrashedError, cause: BaseException) -> None:
        with self._lock:
            calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                crash.__cause__ = cause
                future.set_exception(crash)

    def _died(self, cause: ModelCrashedError | None = None) -> ModelCrashedError:
        """Record the child's death (waiting briefly for its exit code) and describe it:
        as ``cause`` when given (the child said why it stopped), else by its exit code."""
        with self._lock:
            if self._crash is not None:
                return self._crash
        self._process.join(timeout=5.0)
        exitcode = self._process.exitcode
        crash = cause or ModelCrashedError(self.model, death_cause(exitcode), exitcode)
        with self._lock:
            if self._crash is None:
                self._crash = crash
            crash = self._crash
        self._conn.close()
        return crash

    def close(self) -> None:
        """Stop the child."""
        self._closing = True
        if self._crash is None:
            self._conn.close()  # the child sees end-of-file and returns
        self._process.join(timeout=5.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._fail_all(ModelCrashedError(self.model, "the model process was stopped"), EOFError())


def _serve(conn: Connection, config: EngineConfig, crash_after: int) -> None:
    """The child: load the engine, then answer calls until the parent closes the pipe.

    Calls are handed to the engine as they arrive; each answer goes back with its call's id
    when it is ready (in whatever order they finish). A cancelled call's future is cancelled
    in the engine, which stops working on it, and ``stopped`` goes back. When the pipe
    closes (the parent is done, or was killed) the calls still running or queued are
    cancelled the same way: nobody waits for their answers, so the child exits at once
    instead of spending the cores on them.
    """
    from simworld.llm.providers.local_batch import load_engine

    leave_ctrl_c_to_the_parent()
    try:
        engine = load_engine(config)
        build = build_record(config)
    except Exception as exc:  # the parent stops the run with it (ModelLoadError)
        conn.send((_LOAD_FAILED, _Failure.of(exc)))
        return
    send_lock = threading.Lock()
    conn.send((_READY, build))
    served = 0
    running: dict[int, Future[Generation]] = {}

    def reply(call_id: int, future: Future[Generation]) -> None:
        running.pop(call_id, None)
        if future.cancelled():
            message: tuple[str, Any] = (_STOPPED, None)
        elif (exc := future.exception()) is None:
            message = (_OK, future.result())
        elif isinstance(exc, ContextOverflowError):
            message = (_OVERFLOW, _Failure.of(exc))
        else:  # sent to the parent, which raises it there
            message = (_FAILED, _Failure.of(exc))
        try:
            with send_lock:
                conn.send((call_id, *message))
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the parent has gone; the main loop ends on end-of-file

    while True:
        try:
            kind, call_id, *call = conn.recv()
        except EOFError:
            for future in tuple(running.values()):
                future.cancel()
            return
        if kind == _CANCEL:
            cancelled = running.get(call_id)
            if cancelled is not None:
                cancelled.cancel()
            continue
        if served == crash_after:
            os.abort()
        served += 1
        prompt, preamble, sampling = call
        future = running[call_id] = engine.submit(prompt, preamble=preamble, sampling=sampling)
        future.add_done_callback(functools.partial(reply, call_id))
