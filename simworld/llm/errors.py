"""How the LLM layer classifies a model call's exception: its kind and whether to retry it.

Shared by the gateway (which retries) and the worker processes (which classify an error
before sending it to the parent).
"""

from __future__ import annotations

import asyncio
import email.utils
import re
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
MAX_ERROR_CHARS = 300
"""Where a recorded error message is cut."""
FATAL_KINDS = frozenset({"auth", "permission", "not_found", "unsupported_params", "bad_request"})
"""Error kinds that no retry can fix and that every later call would meet as well: the run
stops at once (``failed``) instead of recording them call after call."""
# How a provider client says that it has no credentials at all (raised before any request,
# and wrapped by litellm as a server or connection error): "Missing credentials", "Missing
# Gemini API key", "Missing API key for DashScope", "Missing Azure AI credentials", ...
_MISSING_CREDENTIALS = re.compile(
    r"\bmissing(?: [\w-]+){0,3}[ _](?:api[ _]?key|credentials)\b|api_key client option must be set",
    re.IGNORECASE,
)


_KINDS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (litellm.RateLimitError, "rate_limit"),
    ((litellm.Timeout, asyncio.TimeoutError), "timeout"),
    (litellm.APIConnectionError, "connection"),
    ((litellm.ServiceUnavailableError, litellm.InternalServerError), "server"),
    (litellm.AuthenticationError, "auth"),
    (litellm.PermissionDeniedError, "permission"),
    (litellm.NotFoundError, "not_found"),
    (litellm.UnsupportedParamsError, "unsupported_params"),
    (litellm.ContextWindowExceededError, "context_window"),
    (litellm.ContentPolicyViolationError, "content_policy"),
    (litellm.BadRequestError, "bad_request"),
)
"""litellm's exceptions and their kind, tried in this order: the first match wins, so a
subclass comes before its base (a context window or content policy error is a bad request)."""


def error_kind(exc: BaseException) -> str:
    """A short, stable name for an exception raised by a model call."""
    if isinstance(exc, RemoteModelError):
        return exc.kind
    if _missing_credentials(exc):
        return "auth"
    for types, kind in _KINDS:
        if isinstance(exc, types):
            return kind
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
    return _MISSING_CREDENTIALS.search(str(exc)) is not None


def is_transient(exc: BaseException) -> bool:
    """Whether a model call's exception is worth retrying after a backoff."""
    if isinstance(exc, RemoteModelError):
        return exc.transient
    if _missing_credentials(exc):
        return False
    return isinstance(exc, TRANSIENT_ERRORS)
