"""How the LLM layer classifies a model call's exception: its kind and whether to retry it.

Shared by the gateway (which retries) and the worker processes (which classify an error
before sending it to the parent).
"""

from __future__ import annotations

import asyncio

import litellm

from simworld.llm.types import RemoteModelError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    litellm.RateLimitError,
    litellm.Timeout,
    litellm.APIConnectionError,
    litellm.ServiceUnavailableError,
    litellm.InternalServerError,
    asyncio.TimeoutError,
)


def error_kind(exc: BaseException) -> str:
    """A short, stable name for an exception raised by a model call."""
    if isinstance(exc, RemoteModelError):
        return exc.kind
    if isinstance(exc, litellm.RateLimitError):
        return "rate_limit"
    if isinstance(exc, litellm.Timeout | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, litellm.APIConnectionError):
        return "connection"
    if isinstance(exc, litellm.ServiceUnavailableError | litellm.InternalServerError):
        return "server"
    if isinstance(exc, litellm.AuthenticationError):
        return "auth"
    if isinstance(exc, litellm.BadRequestError):
        return "bad_request"
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """Whether a model call's exception is worth retrying after a backoff."""
    if isinstance(exc, RemoteModelError):
        return exc.transient
    return isinstance(exc, TRANSIENT_ERRORS)
