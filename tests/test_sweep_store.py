"""The sweep directory's bookkeeping: how often the driver rewrites its files."""

from __future__ import annotations

import pytest

from simworld.sweeps import store as sweep_store
from simworld.sweeps.store import FRAME_MIN_INTERVAL_S, MAX_REWRITE_SHARE, Throttle


class Clock:
    """A settable stand-in for ``time.monotonic``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(sweep_store.time, "monotonic", fake)
    return fake


def test_cheap_rewrites_follow_the_minimum_interval(clock: Clock) -> None:
    throttle = Throttle(FRAME_MIN_INTERVAL_S)
    assert throttle.due(), "the first rewrite is always due"
    throttle.done(clock.now - 0.001)
    clock.now += FRAME_MIN_INTERVAL_S - 0.1
    assert not throttle.due()
    clock.now += 0.1
    assert throttle.due()


def test_costly_rewrites_take_a_bounded_share_of_the_time(clock: Clock) -> None:
    """A rewrite that took 1 s waits 1 / MAX_REWRITE_SHARE seconds for the next."""
    throttle = Throttle(0.0)
    assert throttle.due()
    throttle.done(clock.now - 1.0)
    clock.now += 1.0 / MAX_REWRITE_SHARE - 0.5
    assert not throttle.due()
    clock.now += 0.5
    assert throttle.due()
