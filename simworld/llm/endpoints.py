"""One endpoint's litellm arguments: its base URL and its key, read from the environment.

The key is never stored anywhere: a scenario names the environment variable holding it
(``llm.api_key_env``, a deployment's ``api_key_env``), and it is read when a call is made.
"""

from __future__ import annotations

import os
from typing import Any

from simworld.errors import SimworldError

# Sent to a server named without ``api_key_env`` (local servers take any key, or none).
NO_KEY = "no-key"


def endpoint_kwargs(api_base: str | None, api_key_env: str | None) -> dict[str, Any]:
    """The ``api_base``/``api_key`` arguments of litellm for an endpoint (the key read from the
    environment now, never stored: :func:`endpoint_key`), and no retries inside the
    provider's client (the gateway retries, honouring ``Retry-After``).

    Raises:
        SimworldError: The named key variable is not set.
    """
    out: dict[str, Any] = {"max_retries": 0, "api_key": endpoint_key(api_key_env, api_base)}
    if api_base is not None:
        out["api_base"] = api_base
    if out["api_key"] is None:
        del out["api_key"]
    return out


def endpoint_key(api_key_env: str | None, api_base: str | None) -> str | None:
    """The key to send: the named variable's value; for a server named without one,
    :data:`NO_KEY` (OpenAI's client refuses to send a request without a key); else ``None``
    (the provider's own variable applies).

    Raises:
        SimworldError: The named key variable is not set.
    """
    if api_key_env is None:
        return NO_KEY if api_base is not None else None
    key = os.environ.get(api_key_env)
    if not key:
        raise SimworldError(f"llm.api_key_env: environment variable {api_key_env} is not set")
    return key
