"""How the LLM layer classifies a model call's exception: its kind and whether to retry it.

Shared by the gateway (which retries) and the worker processes (which classify an error
before sending it to the parent).
"""

from __future__ import annotations

import asyncio
import email.utils
from datetime import UTC, datetime

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
FATAL_KINDS = frozenset({"auth", "permission", "not_found", "unsupported_params", "bad_request"})
"""Error kinds that no retry can fix and that every later call would meet as well: the run
stops at once (``failed``) instead of recording them call after call."""
# How a provider client says that it has no credentials at all (raised before any request,
# and wrapped by litellm as a server or connection error).
_MISSING_CREDENTIALS = ("missing credentials", "api_key client option must be set")


def error_kind(exc: BaseException) -> str:
    """A short, stable name for an exception raised by a model call."""
    if isinstance(exc, RemoteModelError):
        return exc.kind
    if _missing_credentials(exc):
        return "auth"
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
    if isinstance(exc, litellm.PermissionDeniedError):
        return "permission"
    if isinstance(exc, litellm.NotFoundError):
        return "not_found"
    if isinstance(exc, litellm.UnsupportedParamsError):
        return "unsupported_params"
    if isinstance(exc, litellm.ContextWindowExceededError):
        return "context_window"
    if isinstance(exc, litellm.ContentPolicyViolationError):
        return "content_policy"
    if isinstance(exc, litellm.BadRequestError):
        return "bad_request"
    return type(exc).__name__


def retry_after_s(exc: BaseException) -> float | None:
    """The wait a failed call's server asked for (``Retry-After``, in seconds or as an HTTP
    date, or ``retry-after-ms``), or ``None`` when it sent none."""
    if isinstance(exc, RemoteModelError):
        return exc.retry_after_s
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(float(millis) / 1000, 0.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError, AttributeError):
        return None  # a header that is no wait at all: the normal backoff applies


def _missing_credentials(exc: BaseException) -> bool:
    """Whether the provider client refused to start for want of an API key."""
    text = str(exc).casefold()
    return any(marker in text for marker in _MISSING_CREDENTIALS)


def is_transient(exc: BaseException) -> bool:
    """Whether a model call's exception is worth retrying after a backoff."""
    if isinstance(exc, RemoteModelError):
        return exc.transient
    if _missing_credentials(exc):
        return False
    return isinstance(exc, TRANSIENT_ERRORS)
