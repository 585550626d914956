"""The ``simworld`` console script."""

from __future__ import annotations

import sys

import pytest

import simworld.support.process
from simworld.cli import console


@pytest.mark.parametrize(("argv", "tuned"), [(["run", "missing.yaml"], True), (["schema"], False)])
def test_console_tunes_the_collector_only_before_a_simulation(argv, tuned, monkeypatch, capsys):
    calls: list[None] = []
    monkeypatch.setattr(simworld.support.process, "tune_gc", lambda: calls.append(None))
    monkeypatch.setattr(sys, "argv", ["simworld", *argv])
    code = console()
    assert bool(calls) is tuned
    assert code == (2 if tuned else 0)  # a missing scenario file is bad input
    if tuned:
        assert "missing.yaml" in capsys.readouterr().err
