"""Garbage-collector tuning of simworld's own processes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from simworld.support.process import GC_GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """Undo :func:`tune_gc` after the test (pytest's process is not simworld's)."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _in_generations(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_tune_gc_freezes_what_is_alive_and_collects_the_young_less_often(restore_gc):
    survivor: list[object] = [object()]
    frozen = gc.get_freeze_count()
    assert _in_generations(survivor)
    tune_gc()
    assert gc.get_freeze_count() > frozen
    assert not _in_generations(survivor), "an object alive before is frozen"
    assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
    later: list[object] = [object()]
    assert _in_generations(later), "an object created after is collected as usual"
