"""Garbage-collector tuning of simworld's own processes."""

from __future__ import annotations

import gc
import pickle
import signal
from collections.abc import Iterator

import pytest

from simworld.support.process import (
    GC_GEN0_THRESHOLD,
    Terminated,
    note_stopped_run,
    stopped_line,
    tune_gc,
)


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


def test_the_stopped_line_names_the_run_to_resume_only_when_there_is_one(tmp_path):
    assert stopped_line(KeyboardInterrupt()) == ("simworld: interrupted", 130)
    gone = KeyboardInterrupt()
    note_stopped_run(gone, tmp_path / "removed")  # as a replay's temporary run directory
    assert stopped_line(gone) == ("simworld: interrupted", 130)
    exc = Terminated()
    exc.add_note("another note")
    (tmp_path / "my run").mkdir()
    note_stopped_run(exc, tmp_path / "my run")
    line, code = stopped_line(exc)
    assert code == 143
    assert line == (
        f"simworld: terminated (SIGTERM); {tmp_path}/my run is marked interrupted: "
        f"simworld resume '{tmp_path}/my run'"
    )
    hup = Terminated(signal.SIGHUP)
    assert stopped_line(hup) == ("simworld: terminated (SIGHUP)", 129)
    note_stopped_run(hup, tmp_path / "my run")
    sent = pickle.loads(pickle.dumps(hup))  # as a sweep's worker sends it to the driver
    assert (sent.signum, sent.__notes__) == (signal.SIGHUP, hup.__notes__)
