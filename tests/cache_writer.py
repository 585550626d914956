"""A light process target for the concurrent cache test (spawned children import only this)."""

from __future__ import annotations

from typing import Any

from simworld.llm.cache import ResponseCache

OWN_KEYS = 200
SHARED_KEYS = 100
SHARED_PAD = 500


def write_keys(path: str, worker: int, start: Any) -> None:
    """Write this worker's own keys and keys every worker shares, all writers at once.

    Args:
        path: The cache file (opened lazily: at the first put, after the barrier).
        worker: This writer's number.
        start: A barrier every writer waits on before writing.
    """
    cache = ResponseCache(path)
    start.wait()
    for i in range(max(OWN_KEYS, SHARED_KEYS)):
        if i < OWN_KEYS:
            cache.put(f"own-{worker}-{i}", "fake/x", {"worker": worker, "i": i})
        if i < SHARED_KEYS:
            cache.put(f"shared-{i}", "fake/x", {"worker": worker, "i": i, "pad": "x" * SHARED_PAD})
    cache.close()
