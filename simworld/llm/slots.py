"""A call's place under the gateway's concurrency cap, held while its request is out.

``llm.concurrency`` caps how many requests are with a provider at once. The gateway gives
every attempt of a call a :class:`Slot` of that cap. A backend whose calls spend CPU in this
process before their request leaves and after the answer comes back
(:class:`~simworld.llm.litellm_backend.LiteLLMModel`: litellm's set-up of a call, and its
bookkeeping on the response) says so with
:attr:`~simworld.llm.types.LanguageModel.takes_slots` and takes the slot only when the
request leaves (:meth:`Slot.around`, from the call's context, :func:`current_slot`); for
every other backend the gateway takes it before calling. A call then sets itself up while
the calls ahead of it are out, instead of after one of them came back: at the end of a wave,
the calls waiting for a slot no longer wait for each other's set-up too.

The gateway starts an attempt's timeout when its slot is taken (the slot's ``on_taken``):
waiting for a slot never times a call out, whoever takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_CURRENT: contextvars.ContextVar[Slot | None] = contextvars.ContextVar(
    "simworld_slot", default=None
)


class Slot:
    """One attempt's place under a concurrency cap: taken at most once at a time, given back
    at most once per take.

    Args:
        cap: The gateway's semaphore (one unit per request out).
        on_taken: Called each time the slot is taken (the gateway starts the attempt's
            timeout then).
    """

    def __init__(
        self, cap: asyncio.Semaphore, *, on_taken: Callable[[], None] | None = None
    ) -> None:
        self._cap = cap
        self._on_taken = on_taken
        self.held = False
        """Whether the slot is taken now."""

    async def take(self) -> None:
        """Wait for a unit of the cap, unless this slot holds one already."""
        if self.held:
            return
        await self._cap.acquire()
        self.held = True
        if self._on_taken is not None:
            self._on_taken()

    def give_back(self) -> None:
        """Return the unit this slot holds, if any."""
        if self.held:
            self.held = False
            self._cap.release()

    async def around(self, request: Coroutine[Any, Any, T]) -> T:
        """Await ``request`` (a request on its way out) holding the slot: taken first, given
        back as soon as it returns or fails. ``request`` is closed unawaited when waiting
        for the slot is cancelled."""
        try:
            await self.take()
        except BaseException:
            request.close()
            raise
        try:
            return await request
        finally:
            self.give_back()


def current_slot() -> Slot | None:
    """The slot of the call running in this context (``None`` outside a gateway's call, as
    in an LLM worker process, whose parent holds the slot)."""
    return _CURRENT.get()


async def take_current_slot() -> None:
    """Take the current call's slot now (a backend that cannot tell when its request leaves,
    or not yet); nothing outside a gateway's call."""
    slot = _CURRENT.get()
    if slot is not None:
        await slot.take()


@contextlib.contextmanager
def calling_with(slot: Slot) -> Iterator[None]:
    """Make ``slot`` the current call's slot inside the block (the backend's call)."""
    token = _CURRENT.set(slot)
    try:
        yield
    finally:
        _CURRENT.reset(token)
