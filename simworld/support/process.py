"""The processes simworld owns: garbage-collector tuning (the CLI and the LLM workers), a
SIGTERM or SIGHUP that stops a run as Ctrl-C does (the CLI), and a safe ``sys.path`` for the
interpreters it starts."""

from __future__ import annotations

import gc
import os
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

SAFE_PATH_ENV = "PYTHONSAFEPATH"

# Allocations (less deallocations) between two collections of the youngest generation;
# Python's default is 700. litellm allocates hundreds of short-lived objects per call, most
# freed by reference counting, so at the default the collector runs every few calls.
GC_GEN0_THRESHOLD = 7000


def tune_gc() -> None:
    """Freeze every object alive now and collect the youngest generation less often.

    Call it once, after the imports and before the work, in a process simworld owns (it is
    process-wide, so the library never calls it on a user's behalf). Sweep workers skip it:
    its one full collection slowed their start more than it sped up short runs, and a large
    run's calls go to LLM workers, which tune themselves. litellm's import leaves hundreds of
    thousands of objects that live as long as the process, and every full collection walked
    all of them. Frozen, they are never scanned again, and with the raised threshold the
    collector's share of litellm's CPU per call falls to almost nothing (the counts and
    pauses: ``benchmarks/bench_engine.py``, docs/benchmarks.md). Objects created later are
    collected as usual.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


TERMINATING = (signal.SIGTERM, signal.SIGHUP)
"""The signals that stop a run as a Ctrl-C does, marked interrupted: SIGTERM (what a job
scheduler or ``timeout`` sends to stop a command) and SIGHUP (the terminal closed, an SSH
connection dropped; ``nohup`` makes the command ignore it, and then it does)."""


class Terminated(KeyboardInterrupt):
    """A signal of :data:`TERMINATING`, raised by the ``simworld`` command's handler
    (:func:`raise_terminated`) as an interrupt: a run stops as after a Ctrl-C, marked
    interrupted, and ``simworld resume`` continues it.

    Args:
        signum: The signal (SIGTERM unless told).
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__()
        self.signum = signal.Signals(signum)

    def __reduce__(self) -> tuple[type[Terminated], tuple[int], dict[str, Any]]:
        # a sweep's worker sends it to the driver: its signal, and its notes
        return Terminated, (int(self.signum),), self.__dict__

    @property
    def how(self) -> str:
        """How the stop is reported, on stderr and as a stopped run's error:
        ``terminated (SIGTERM)``."""
        return f"terminated ({self.signum.name})"


EXIT_INTERRUPTED = 130
"""The ``simworld`` command's exit code after a Ctrl-C (128 + SIGINT, as shells report it);
after a signal of :data:`TERMINATING`, 128 + that signal."""


def stopped_by(exc: KeyboardInterrupt) -> tuple[str, int]:
    """How the ``simworld`` command reports being stopped by ``exc``: the word for it and
    the exit code (``interrupted``, 130; for :class:`Terminated`, ``terminated (SIGTERM)``,
    143, or ``terminated (SIGHUP)``, 129)."""
    if isinstance(exc, Terminated):
        return exc.how, 128 + exc.signum
    return "interrupted", EXIT_INTERRUPTED


STOPPED_RUN_NOTE = "simworld run directory: "
"""How a stopped run names its directory on the interrupt that stopped it (a note)."""


def note_stopped_run(exc: BaseException, run_dir: Path) -> None:
    """Name, on the interrupt ``exc``, the run directory it stopped (marked interrupted)."""
    exc.add_note(f"{STOPPED_RUN_NOTE}{run_dir}")


def stopped_line(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The ``simworld`` command's one line after ``exc`` stopped it, and its exit code: how
    it was stopped, and the run directory it left to resume, if it was writing one that is
    still there (a replay's temporary one is not)."""
    how, code = stopped_by(exc)
    notes = getattr(exc, "__notes__", [])
    runs = [n.removeprefix(STOPPED_RUN_NOTE) for n in notes if n.startswith(STOPPED_RUN_NOTE)]
    if not runs or not Path(runs[-1]).is_dir():
        return f"simworld: {how}", code
    where = shlex.quote(runs[-1])
    return f"simworld: {how}; {runs[-1]} is marked interrupted: simworld resume {where}", code


def ctrl_c_handled() -> None:
    """Tell CPython that a ``KeyboardInterrupt`` the command caught was handled.

    CPython records that a ``KeyboardInterrupt`` escaped any evaluation of its C API's
    ``PyRun_*`` functions, which some native modules call while they are imported, and
    keeps that record even when Python code catches the exception further up. Run as
    ``python -m simworld.cli``, the interpreter then ends itself with SIGINT after the
    command returned its exit code (a Ctrl-C landing in such an import: about one in 15
    during the engine's imports on a busy host). Every such evaluation starts by clearing
    the record, so an empty one clears it. (The ``simworld`` script exits through
    ``sys.exit`` at once, without consulting the record.)
    """
    import ctypes

    ctypes.pythonapi.PyRun_SimpleString(b"")


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """The ``simworld`` command's handler of the signals of :data:`TERMINATING`
    (``signal.signal``): raise :class:`Terminated`. While a simulation's event loop runs,
    the loop raises it instead (:meth:`~simworld.engine.model.SocialSimulation.gather`),
    outside any model call."""
    raise Terminated(signum)


def handle_terminating() -> None:
    """Make the signals of :data:`TERMINATING` stop this process as a Ctrl-C does
    (:func:`raise_terminated`), except one it was started ignoring (``nohup``'s SIGHUP)."""
    for sig in TERMINATING:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, raise_terminated)


STOP_HANDLERS: dict[signal.Signals, Any] = {
    signal.SIGINT: signal.default_int_handler,
    **dict.fromkeys(TERMINATING, raise_terminated),
}
"""The handlers with which a process stops on Ctrl-C (Python's default), SIGTERM and SIGHUP
(the ``simworld`` command's): simworld takes a signal over for a while (routes it through an
event loop, holds it) only where its handler is this one; a program's own stays its own."""


def stop_for(signum: int) -> KeyboardInterrupt:
    """The interrupt a stop signal raises: :class:`Terminated` for a signal of
    :data:`TERMINATING`, else ``KeyboardInterrupt``."""
    return Terminated(signum) if signum in TERMINATING else KeyboardInterrupt()


@contextmanager
def stops_held() -> Iterator[list[KeyboardInterrupt]]:
    """Hold a Ctrl-C, a SIGTERM or a SIGHUP (as the ``simworld`` command raises them) while a run
    closes and writes its last manifest, so a stop that lands then cannot leave the run
    marked ``running``; the stop held is yielded, for the caller to raise once done.

    A sweep meets this: the driver stops a worker's run with one SIGTERM, and the pool may
    send a second as the run closes. Only the first stop is held: a second one raises at
    once (a close that hangs can still be stopped). In the main thread only (elsewhere
    signals cannot be handled), and only for signals handled by :data:`STOP_HANDLERS`.
    """
    held: list[KeyboardInterrupt] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        stop = stop_for(signum)
        if held:
            raise stop
        held.append(stop)

    previous = {sig: signal.getsignal(sig) for sig in STOP_HANDLERS}
    for sig, handler in STOP_HANDLERS.items():
        if previous[sig] is handler:
            signal.signal(sig, hold)
    try:
        yield held
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


def leave_ctrl_c_to_the_parent() -> None:
    """In a helper process simworld starts (an LLM worker, the embedded model's child, a
    sweep's worker): ignore SIGINT and SIGHUP, then let SIGINT through again
    (:func:`ctrl_c_held` kept it pending while the helper started).

    A terminal's Ctrl-C, and its SIGHUP when it closes, go to every process of its group,
    not only to the ``simworld`` command. The command stops cleanly, then closes its
    helpers' pipes, on which they end by themselves; interrupted on their own, they would
    print a traceback into the user's terminal, or die before the command could mark the
    run. (SIGTERM keeps its default: ``multiprocessing`` ends the embedded model's child
    with it when the command exits.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # one pending is discarded


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Start helper processes with SIGINT and SIGHUP blocked: a Ctrl-C (or a closed
    terminal's SIGHUP) while one is still importing (seconds, before
    :func:`leave_ctrl_c_to_the_parent` runs in it) stays pending there instead of raising
    ``KeyboardInterrupt`` mid-import (or ending it), and is discarded once the helper
    ignores it. SIGHUP stays blocked in them: so also in multiprocessing's resource tracker,
    which a sweep's pool starts here and which ignores only SIGINT and SIGTERM (killed by a
    SIGHUP, it is started again and prints a traceback for every lock it never saw made).

    A child inherits the signal mask of the thread that starts it, across ``exec``. The mask
    is this thread's alone, and only while the block runs: a Ctrl-C meanwhile still reaches
    the ``simworld`` command (in another thread, or just after the block).
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def safe_path() -> Iterator[None]:
    """Start child interpreters with ``PYTHONSAFEPATH=1``: they do not put the current
    directory on ``sys.path``, so a ``random.py`` or ``secrets.py`` there is never imported
    in place of the standard library's (``multiprocessing``'s ``spawn`` runs the child as
    ``python -c``, whose path starts with the current directory).

    It sets the variable in this process's environment while the block runs (children
    started then inherit it) and restores it after.
    """
    previous = os.environ.get(SAFE_PATH_ENV)
    os.environ[SAFE_PATH_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(SAFE_PATH_ENV, None)
        else:
            os.environ[SAFE_PATH_ENV] = previous
