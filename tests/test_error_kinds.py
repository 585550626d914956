"""A model call's exception gets its stable kind (``simworld.llm.errors.error_kind``)."""

from __future__ import annotations

import httpx
import litellm
import pytest

from simworld.llm.errors import FATAL_KINDS, error_kind, is_transient

_RESPONSE = httpx.Response(400, request=httpx.Request("POST", "http://127.0.0.1/"))
_ARGS = {"message": "m", "llm_provider": "openai", "model": "fake"}


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (litellm.RateLimitError(**_ARGS), "rate_limit"),
        (litellm.Timeout(**_ARGS), "timeout"),
        (TimeoutError(), "timeout"),
        (litellm.APIConnectionError(**_ARGS), "connection"),
        (litellm.ServiceUnavailableError(**_ARGS), "server"),
        (litellm.InternalServerError(**_ARGS), "server"),
        (litellm.AuthenticationError(**_ARGS), "auth"),
        (litellm.PermissionDeniedError(**_ARGS, response=_RESPONSE), "permission"),
        (litellm.NotFoundError(**_ARGS), "not_found"),
        (litellm.UnsupportedParamsError(**_ARGS), "unsupported_params"),
        (litellm.ContextWindowExceededError(**_ARGS), "context_window"),
        (litellm.ContentPolicyViolationError(**_ARGS), "content_policy"),
        (litellm.BadRequestError(**_ARGS), "bad_request"),
        (ValueError("x"), "ValueError"),
    ],
)
def test_every_kind_is_named(exc: BaseException, kind: str) -> None:
    assert error_kind(exc) == kind


def test_subclasses_of_a_bad_request_keep_their_own_kind() -> None:
    # the order of the table matters: these are bad requests too
    for cls in (litellm.ContextWindowExceededError, litellm.ContentPolicyViolationError):
        assert issubclass(cls, litellm.BadRequestError)
        assert error_kind(cls(**_ARGS)) != "bad_request"
        assert error_kind(cls(**_ARGS)) not in FATAL_KINDS


def test_transient_kinds_are_retried() -> None:
    assert is_transient(litellm.RateLimitError(**_ARGS))
    assert not is_transient(litellm.BadRequestError(**_ARGS))
