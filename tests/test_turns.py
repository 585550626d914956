"""Calls let into the event loop in arrival order, one per turn (simworld.support.turns)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_llm_workers import request

from simworld.llm.litellm_backend import Completion, LiteLLMModel, LLMRequest
from simworld.support.turns import Turns


def test_turns_let_waiters_go_in_order_one_per_loop_turn() -> None:
    async def turns() -> list[list[int]]:
        gate = Turns()
        gone: list[int] = []

        async def waiter(i: int) -> None:
            await gate.wait()
            gone.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(4)]
        await asyncio.sleep(0)  # every waiter has queued
        tasks[2].cancel()  # cancelled before its turn: never goes, and gives its turn away
        seen = []
        for _ in range(6):
            seen.append(list(gone))
            await asyncio.sleep(0)
        late = asyncio.create_task(waiter(9))  # after the queue ran dry
        for _ in range(3):
            await asyncio.sleep(0)
        seen.append(list(gone))
        assert late.done() and len(gate) == 0
        return seen

    seen = asyncio.run(turns())
    # queued in one turn, let go from the next, one per turn
    assert seen[:6] == [[], [], [0], [0, 1], [0, 1, 3], [0, 1, 3]]
    assert seen[-1] == [0, 1, 3, 9]


def test_turns_start_afresh_on_another_loop() -> None:
    """A loop left with a waiter queued (its turn never came) does not hold up the next."""
    gate = Turns()
    old = asyncio.new_event_loop()

    async def queue() -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(gate.wait()) for _ in range(3)]
        await asyncio.sleep(0)  # queued; the loop stops before the next turns come
        return tasks

    stranded = old.run_until_complete(queue())
    assert len(gate) == 2
    asyncio.run(asyncio.wait_for(gate.wait(), timeout=2))  # would time out on the old queue
    for task in stranded:
        task.cancel()
    old.run_until_complete(asyncio.gather(*stranded, return_exceptions=True))
    old.close()


def test_in_process_litellm_calls_start_one_per_loop_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst of calls made in this process starts in arrival order, each a turn after the
    one before: the first gets as far as its first wait before the second starts."""
    log: list[str] = []

    async def acompletion(self: LiteLLMModel, request: LLMRequest, **_: Any) -> Completion:
        log.append(f"start {request.identity.agent}")
        await asyncio.sleep(0)
        log.append(f"waited {request.identity.agent}")
        return Completion(text=request.identity.agent, prompt_tokens=1, completion_tokens=1)

    monkeypatch.setattr(LiteLLMModel, "_acompletion", acompletion)
    model = LiteLLMModel(workers=0)

    async def burst() -> list[str]:
        calls = (model.complete(request(a), attempt=0, timeout_s=5) for a in "abc")
        return [done.text for done in await asyncio.gather(*calls)]

    assert asyncio.run(burst()) == ["a", "b", "c"]
    assert log == ["start a", "waited a", "start b", "waited b", "start c", "waited c"]
    assert asyncio.run(burst()) == ["a", "b", "c"]  # a new loop: the queue starts afresh
