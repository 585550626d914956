"""The LLM worker process: answers the parent's calls through litellm.

The parent's side (the pool, and when to use it) is :mod:`simworld.llm.workers`. A worker
runs :class:`~simworld.llm.litellm_backend.LiteLLMModel` in-process on its own event loop,
without litellm's hop to a thread (:class:`InPlaceExecutor`), and starts the calls it receives
in arrival order, one per turn of its loop (as every in-process litellm call does,
:class:`~simworld.support.turns.Turns`).

Protocol: length-prefixed pickles over a socket pair between the two processes. Parent to
worker ``(CALL, id, request, attempt, timeout_s, transient)`` and ``(CANCEL, id)``; worker to
parent ``(READY,)`` once, then ``(RESULT, id, completion, error)``.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import sys

import openai

from simworld.llm.errors import error_kind, is_transient, retry_after_s
from simworld.llm.litellm_backend import (
    InPlaceExecutor as InPlaceExecutor,  # moved; kept importable
)
from simworld.llm.litellm_backend import LiteLLMModel, in_place_executor
from simworld.llm.types import CallIdentity, Completion, LLMRequest, RemoteModelError
from simworld.llm.worker_protocol import (
    CALL,
    CANCEL,
    HEADER,
    READY,
    READY_TIMEOUT_S,
    RESULT,
    frame,
)
from simworld.support.process import leave_ctrl_c_to_the_parent, tune_gc

# Before it reports ready, a worker sends this many calls to the fake provider through
# litellm: its first calls import and cache what the rest of its call path needs.
WARM_UP_CALLS = 8
WARM_UP_MODEL = "fake/default"


def remote_error(exc: BaseException) -> BaseException:
    """What a worker sends back for an exception: model errors as :class:`RemoteModelError`
    (kind, retry class and message as the gateway sees them), others as themselves when they
    pickle, else as a ``RuntimeError`` naming them."""
    if isinstance(exc, TimeoutError | openai.OpenAIError):
        return RemoteModelError(
            str(exc),
            kind=error_kind(exc),
            transient=is_transient(exc),
            retry_after_s=retry_after_s(exc),
        )
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any pickling failure: send a description
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


async def warm_up(model: LiteLLMModel) -> None:
    """Make :data:`WARM_UP_CALLS` concurrent fake calls through ``model`` (and litellm)."""
    requests = [
        LLMRequest(
            model=WARM_UP_MODEL,
            messages=({"role": "user", "content": "Say something."},),
            identity=CallIdentity(seed=0, agent="warm-up", step=0, purpose="warm_up", index=i),
            temperature=0.0,
            max_tokens=8,
        )
        for i in range(WARM_UP_CALLS)
    ]
    await asyncio.gather(
        *(model.complete(r, attempt=0, timeout_s=READY_TIMEOUT_S) for r in requests)
    )


async def serve(sock: socket.socket) -> None:
    """Warm up (:func:`warm_up`) and tune the collector (:func:`~simworld.support.process.tune_gc`),
    then answer calls arriving on ``sock`` until the parent closes it.

    A burst of calls (the parent sends up to its concurrency at once) starts in arrival
    order, one per turn of the event loop: the model lets its calls in through
    :class:`~simworld.support.turns.Turns`, which says why.
    """
    asyncio.get_running_loop().set_default_executor(in_place_executor())
    model = LiteLLMModel(workers=0)
    await warm_up(model)
    tune_gc()
    reader, writer = await asyncio.open_connection(sock=sock)
    tasks: dict[int, asyncio.Task[None]] = {}

    async def answer(
        call_id: int, request: LLMRequest, attempt: int, timeout_s: float, transient: int
    ) -> None:
        completion: Completion | None = None
        error: BaseException | None = None
        try:
            completion = await model.complete(
                request, attempt=attempt, timeout_s=timeout_s, transient=transient
            )
        except Exception as exc:  # every failure is reported to the parent
            error = remote_error(exc)
        finally:
            tasks.pop(call_id, None)
        writer.write(frame((RESULT, call_id, completion, error)))

    writer.write(frame((READY,)))
    while True:
        try:
            (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
            message = pickle.loads(await reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        if message[0] == CALL:
            tasks[message[1]] = asyncio.create_task(answer(*message[1:]))
        elif message[0] == CANCEL and (task := tasks.pop(message[1], None)) is not None:
            task.cancel()
    for task in tasks.values():
        task.cancel()
    writer.close()


def main(argv: list[str]) -> None:
    """Entry point of a worker process: ``python -m simworld.llm.worker FD``."""
    leave_ctrl_c_to_the_parent()
    sock = socket.socket(fileno=int(argv[0]))
    asyncio.run(serve(sock))


if __name__ == "__main__":
    main(sys.argv[1:])
