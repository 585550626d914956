"""Turns of an event loop handed out in arrival order, one per turn.

A burst of model calls started together interleaves their set-up at every ``await``: each
call reaches its provider (and starts waiting on the network, or on a fake latency) only when
nearly the whole burst has been set up, and the burst's answers come back together. Let into
the loop one per turn, in the order they came, the first call waits for its own set-up and
the last for everyone's, and the answers come back spread out, so the calls behind them in a
bounded pool start spread out too. :class:`~simworld.llm.litellm_backend.LiteLLMModel` starts
the litellm calls it makes in its own process (a simulation's, or an LLM worker's) through
:class:`Turns`.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Turns:
    """Lets waiters go in the order they came, one per turn of the running event loop.

    A waiter cancelled before its turn gives its turn to the next one. The queue belongs to
    the loop it was used on: on another loop (a closed loop's successor) it starts empty.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._scheduled = False

    def __len__(self) -> int:
        """Waiters not yet let go (cancelled ones included until their turn comes)."""
        return len(self._waiting)

    async def wait(self) -> None:
        """Return on this waiter's turn: a turn of the loop after the previous waiter's."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._waiting, self._scheduled = loop, deque(), False
        turn: asyncio.Future[None] = loop.create_future()
        self._waiting.append(turn)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._let_one_go, self._waiting)
        await turn

    def _let_one_go(self, waiting: deque[asyncio.Future[None]]) -> None:
        if waiting is not self._waiting:  # the queue of a loop left for another
            return
        while waiting:
            turn = waiting.popleft()
            if not turn.done():  # a cancelled waiter's turn goes to the next one
                turn.set_result(None)
                break
        self._scheduled = bool(waiting)
        if self._scheduled:
            asyncio.get_running_loop().call_soon(self._let_one_go, waiting)
