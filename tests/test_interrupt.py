"""Ctrl-C during a step interrupts the run, even when it lands inside a provider's code that
catches ``BaseException`` (as litellm's call path does)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from simworld.engine.model import SocialSimulation
from simworld.llm.litellm_backend import LiteLLMModel
from simworld.llm.types import Completion, LanguageModel, LLMRequest


class SwallowsCtrlC(LanguageModel):
    """The fake provider through litellm; during its first call the process gets SIGINT,
    inside code that catches every exception and carries on, as litellm's does."""

    def __init__(self) -> None:
        self.inner = LiteLLMModel(workers=0)
        self.swallowed = 0
        self.signalled = False

    async def complete(
        self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
    ) -> Completion:
        if not self.signalled:
            self.signalled = True
            try:
                os.kill(os.getpid(), signal.SIGINT)
                sum(range(10_000))  # Python runs signal handlers between bytecodes: here
            except BaseException:  # what a provider's catch-all does
                self.swallowed += 1
        return await self.inner.complete(
            request, attempt=attempt, timeout_s=timeout_s, transient=transient
        )


def test_ctrl_c_inside_a_provider_call_still_interrupts_the_step(
    make_scenario: Callable[..., Path], stop_signals_deliverable: None
) -> None:
    backend = SwallowsCtrlC()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with (
        SocialSimulation.from_scenario(make_scenario({}), backend=backend) as model,
        pytest.raises(KeyboardInterrupt),
    ):
        model.step()
    assert backend.signalled
    assert backend.swallowed == 0  # the loop took the signal, not the provider's code
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_a_stop_just_before_the_loop_runs_leaves_no_coroutine_unawaited(
    make_scenario: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM (or Ctrl-C) raised by its process-wide handler just before the model's loop
    takes a step's coroutines: the stop propagates, and none of them is later reported as
    "never awaited" (a warning that would follow the command's one line on stderr)."""
    import gc
    import warnings

    from simworld.support.process import Terminated

    async def call() -> int:
        return 1

    def stopped(coro: object) -> None:
        raise Terminated

    model = SocialSimulation.from_scenario(make_scenario({}))
    try:
        monkeypatch.setattr(model._loop, "run_until_complete", stopped)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with pytest.raises(Terminated):
                model.gather([call(), call()])
            gc.collect()
        monkeypatch.undo()
        assert model.gather([call()]) == [1]  # the model still runs
    finally:
        monkeypatch.undo()
        model.close()
    assert [str(w.message) for w in seen if "never awaited" in str(w.message)] == []
