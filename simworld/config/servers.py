"""Scenario settings for model servers: endpoint, key variable, provider parameters, deployments.

These describe *where* calls go (``llm.api_base``, ``llm.api_key_env``, ``llm.deployments``,
``llm.routing``) and *what else* is sent with them (``llm.params``). Where calls go never
changes an answer, so none of it enters a call's cache key; the provider parameters do (see
:func:`answer_params`). Keys themselves never appear in a scenario: only the name of the
environment variable that holds one.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Parameters simworld sets itself, or that would put a secret or an endpoint in the scenario.
RESERVED_PARAMS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "response_format",
        "logprobs",
        "top_logprobs",
        "n",
        "stream",
        "timeout",
        "num_retries",
        "max_retries",
        "api_key",
        "api_base",
        "base_url",
        "extra_headers",
        "headers",
    }
)
SECRET_PARAM = re.compile(
    r"api_?key|access_key|secret|passw(or)?d|credential|token$|auth|headers|cookie", re.IGNORECASE
)
"""A provider parameter, at any depth of ``llm.params``, whose value would be a credential
(``api_key``, ``aws_secret_access_key``, ``azure_ad_token``, ``vertex_credentials``,
``default_headers``, ``extra_body.api_key``)."""
# Provider parameters that are passed through but cannot change an answer: not in cache keys.
NEUTRAL_PARAMS = frozenset({"user", "api_version"})


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_env_name(value: str | None) -> str | None:
    """Accept the name of an environment variable (what ``api_key_env`` holds).

    Raises:
        ValueError: ``value`` cannot be a variable name (for instance, it is a key).
    """
    if value is not None and not ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable holding the key "
            "(letters, digits, underscores), never the key itself"
        )
    return value


class Deployment(_Frozen):
    """One server of a model (``llm.deployments`` entry).

    Attributes:
        api_base: The server's base URL (``http://10.0.0.5:8000/v1``).
        api_key_env: Name of the environment variable holding its key (default:
            ``llm.api_key_env``); ``None`` and no default: no key is sent.
        model: The litellm model string at this server, when it names the same weights
            differently (default ``llm.model``).
        rpm: Requests per minute it accepts.
        tpm: Tokens per minute it accepts.
        concurrency: Requests it may have in flight at once.
        fallback: Used only when every primary deployment has failed the call.
    """

    api_base: str = Field(min_length=1)
    api_key_env: str | None = None
    model: str | None = Field(default=None, min_length=3)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)
    fallback: bool = False

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return check_env_name(value)

    @field_validator("api_base")
    @classmethod
    def _no_user_info(cls, value: str) -> str:
        check_api_base(value)
        return value


class RoutingConfig(_Frozen):
    """How calls are spread over ``llm.deployments`` (litellm's Router).

    Attributes:
        strategy: ``balanced`` (simworld picks the primary deployment with the fewest calls
            in flight, litellm's Router fails over from it) or one of litellm's strategies
            (all primaries in one Router group).
        cooldown_s: How long a failing deployment is left out.
        allowed_fails: Failures within a minute before a deployment is cooled down.
    """

    strategy: Literal[
        "balanced",
        "simple-shuffle",
        "least-busy",
        "usage-based-routing-v2",
        "latency-based-routing",
    ] = "balanced"
    cooldown_s: float = Field(default=5.0, ge=0.0)
    allowed_fails: int = Field(default=3, ge=0)


class Route(_Frozen):
    """Where one call goes: a single endpoint or a set of deployments (never in a cache key).

    Attributes:
        api_base: The endpoint's base URL (``None``: the provider's default).
        api_key_env: Name of the environment variable holding its key.
        deployments: Servers of the same model; when given, calls go through a Router.
        routing: The Router's settings.
    """

    api_base: str | None = None
    api_key_env: str | None = None
    deployments: tuple[Deployment, ...] = ()
    routing: RoutingConfig = RoutingConfig()

    def key_envs(self) -> tuple[str, ...]:
        """Every environment variable named for a key, in order, without repeats."""
        names = [self.api_key_env] + [d.api_key_env for d in self.deployments]
        return tuple(dict.fromkeys(n for n in names if n))

    def missing_keys(self) -> list[str]:
        """The key variables named here that the environment lacks."""
        return [name for name in self.key_envs() if not os.environ.get(name)]


@lru_cache(maxsize=64)
def make_route(
    api_base: str | None,
    api_key_env: str | None,
    deployments: tuple[Deployment, ...],
    routing: RoutingConfig,
) -> Route | None:
    """The route of these settings, built once per distinct settings; ``None`` when calls go
    to the provider's default endpoint with its default key."""
    if api_base is None and api_key_env is None and not deployments:
        return None
    if api_key_env is not None:
        deployments = tuple(
            d if d.api_key_env else d.model_copy(update={"api_key_env": api_key_env})
            for d in deployments
        )
    return Route(
        api_base=api_base, api_key_env=api_key_env, deployments=deployments, routing=routing
    )


def check_api_base(value: str | None) -> str | None:
    """Accept an endpoint URL that carries no user name or password (``user:pw@host``).

    Raises:
        ValueError: The URL holds user information.
    """
    try:
        parts = urlsplit(value) if value is not None else None
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if parts is not None and (parts.username is not None or parts.password is not None):
        raise ValueError(
            "holds a user name or password (user:password@); keys never go in a scenario: "
            "name the environment variable holding the key in llm.api_key_env"
        )
    return value


def check_params(params: dict[str, JsonValue], field: str = "") -> dict[str, JsonValue]:
    """Reject provider parameters simworld sets itself or that would carry a secret, at any
    depth (:data:`SECRET_PARAM`).

    Raises:
        ValueError: Naming the first offending parameter.
    """
    for name, value in params.items():
        where = f"{field}.{name}" if field else name
        if SECRET_PARAM.search(name):
            raise ValueError(
                f"{where}: keys never go in a scenario; name the environment variable "
                "holding the key in llm.api_key_env"
            )
        if not field and name in {"api_base", "base_url"}:
            raise ValueError(f"{name}: give the endpoint as llm.api_base")
        if not field and name in RESERVED_PARAMS:
            raise ValueError(f"{name}: set by simworld (see the llm section), not a parameter")
        if isinstance(value, dict):
            check_params(value, where)
    return params


def answer_params(params: dict[str, JsonValue] | None) -> dict[str, JsonValue]:
    """The provider parameters that can change an answer (the ones cache keys include)."""
    if not params:
        return {}
    return {k: v for k, v in params.items() if k not in NEUTRAL_PARAMS}
