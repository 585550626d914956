"""Slots of the gateway's concurrency cap: held while a request is out, never more than the cap,
and an attempt's timeout counted from the moment its slot is taken."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import litellm
import pytest
from test_llm_workers import request

import simworld.llm.workers as workers_module
from simworld.config.scenario import LLMConfig
from simworld.llm.gateway import CallOutcome, Gateway
from simworld.llm.litellm_backend import LiteLLMModel, in_place_executor
from simworld.llm.providers.fake import FakeLLM
from simworld.llm.slots import Slot, current_slot
from simworld.llm.types import Completion, LanguageModel, LLMRequest


def test_a_slot_holds_one_unit_of_the_cap_at_most() -> None:
    async def go() -> None:
        cap = asyncio.Semaphore(1)
        taken: list[int] = []
        slot = Slot(cap, on_taken=lambda: taken.append(1))
        await slot.take()
        await slot.take()  # held already: no second unit, no second start of the clock
        assert slot.held and cap.locked() and taken == [1]
        slot.give_back()
        slot.give_back()  # given back once only
        assert not slot.held
        await cap.acquire()
        assert cap.locked()  # the cap is back to one unit, not two

    asyncio.run(go())


def test_a_request_waiting_for_its_slot_is_closed_when_cancelled() -> None:
    async def answer() -> int:
        return 1

    async def go() -> Any:
        slot = Slot(asyncio.Semaphore(0))  # never free
        pending = answer()
        task = asyncio.ensure_future(slot.around(pending))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pending

    pending = asyncio.run(go())
    assert inspect.getcoroutinestate(pending) == inspect.CORO_CLOSED  # not left unawaited


def _calls(
    model: LanguageModel, config: LLMConfig, count: int, *, in_place: bool = True
) -> list[CallOutcome]:
    """``count`` calls through a gateway, all at once, on a new loop (with litellm's set-up in
    place, as a simulation's loop, or with the default thread pool)."""
    gateway = Gateway(model, config=config, cache=None)
    loop = asyncio.new_event_loop()
    if in_place:
        loop.set_default_executor(in_place_executor())

    async def run() -> list[CallOutcome]:
        calls = (gateway.call(request(f"a{i}", model=config.model)) for i in range(count))
        return await asyncio.gather(*calls)

    try:
        return loop.run_until_complete(run())
    finally:  # litellm's logging worker is left waiting on the loop: cancel it, as a run does
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


@pytest.fixture
def out_at_once(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The fake provider's requests out at once: now and the most seen."""
    seen = {"now": 0, "most": 0}
    original = FakeLLM.acompletion

    async def counted(self: FakeLLM, *args: Any, **kwargs: Any) -> Any:
        seen["now"] += 1
        seen["most"] = max(seen["most"], seen["now"])
        try:
            return await original(self, *args, **kwargs)
        finally:
            seen["now"] -= 1

    monkeypatch.setattr(FakeLLM, "acompletion", counted)
    return seen


@pytest.mark.parametrize("in_place", [True, False])
def test_litellm_calls_in_this_process_never_exceed_the_cap(
    out_at_once: dict[str, int], in_place: bool
) -> None:
    """On a simulation's loop a call takes its slot only when litellm has set it up; on any
    other loop before. Either way the cap holds, and is reached."""
    config = LLMConfig(model="fake/default?latency_ms=30", concurrency=4, cache="off")
    outcomes = _calls(LiteLLMModel(workers=0), config, 20, in_place=in_place)
    assert [o.status for o in outcomes] == ["ok"] * 20
    assert out_at_once["most"] == 4


def test_on_a_simulations_loop_a_call_is_set_up_before_it_takes_its_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first call on a loop takes its slot first (the loop has not been seen handing a
    request over yet); every later one while litellm sets it up holds none, and every
    request out holds one."""
    in_set_up: list[bool] = []
    out: list[bool] = []
    set_up, answer = litellm.main.completion, FakeLLM.acompletion

    def held() -> bool:
        slot = current_slot()
        return slot is not None and slot.held

    def spied_set_up(*args: Any, **kwargs: Any) -> Any:
        in_set_up.append(held())
        return set_up(*args, **kwargs)

    async def spied_answer(self: FakeLLM, *args: Any, **kwargs: Any) -> Any:
        out.append(held())
        return await answer(self, *args, **kwargs)

    monkeypatch.setattr(litellm.main, "completion", spied_set_up)
    monkeypatch.setattr(FakeLLM, "acompletion", spied_answer)
    config = LLMConfig(model="fake/default?latency_ms=30", concurrency=2, cache="off")
    assert [o.status for o in _calls(LiteLLMModel(workers=0), config, 6)] == ["ok"] * 6
    assert in_set_up == [True] + [False] * 5
    assert out == [True] * 6


def test_waiting_for_a_slot_never_times_a_call_out(out_at_once: dict[str, int]) -> None:
    """One slot, answers in 0.3 s, a 0.5 s timeout: the third call waits 0.6 s for its slot,
    and is not timed out (nor retried) for it."""
    config = LLMConfig(
        model="fake/default?latency_ms=300", concurrency=1, cache="off", timeout_s=0.5
    )
    outcomes = _calls(LiteLLMModel(workers=0), config, 3)
    assert [(o.status, o.errors, o.attempts) for o in outcomes] == [("ok", [], 1)] * 3
    assert out_at_once["most"] == 1


def test_a_call_to_the_llm_workers_holds_its_slot_while_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held: list[bool] = []

    class Pool:
        async def complete(self, request: LLMRequest, **kwargs: Any) -> Completion:
            slot = current_slot()
            held.append(slot is not None and slot.held)
            await asyncio.sleep(0.01)
            return Completion(text="For me it is Agree.", prompt_tokens=3, completion_tokens=5)

    async def use_workers(*args: Any, **kwargs: Any) -> bool:
        return True

    model = LiteLLMModel(workers=0)
    monkeypatch.setattr(model, "_use_workers", use_workers)
    monkeypatch.setattr(workers_module, "shared_pool", lambda workers: Pool())
    config = LLMConfig(model="fake/default", concurrency=2, cache="off")
    assert [o.status for o in _calls(model, config, 5)] == ["ok"] * 5
    assert held == [True] * 5


def test_the_gateway_takes_the_slot_for_a_backend_that_does_not() -> None:
    held: list[bool] = []

    class Backend(LanguageModel):
        async def complete(
            self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
        ) -> Completion:
            slot = current_slot()
            held.append(slot is not None and slot.held)
            return Completion(text="For me it is Agree.", prompt_tokens=3, completion_tokens=5)

    config = LLMConfig(model="fake/default", concurrency=2, cache="off")
    assert [o.status for o in _calls(Backend(), config, 3)] == ["ok"] * 3
    assert held == [True] * 3
