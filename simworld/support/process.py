"""The processes simworld owns: garbage-collector tuning (the CLI and the LLM workers) and
a safe ``sys.path`` for the interpreters it starts."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

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
