"""Which credentials a run's models read: the redactor of a run (see
:mod:`simworld.support.redact` for what is masked), and the key a run cannot start without."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import litellm

from simworld.config.scenario import Scenario
from simworld.support.redact import NO_CREDENTIALS, Redactor


def provider_of(model: str) -> str:
    """The litellm provider of a model string (``openai`` for ``gpt-4o``); the part before
    the ``/`` when litellm does not know the model."""
    head, sep, _ = model.partition("/")
    if sep and head in NO_CREDENTIALS:
        return head
    import simworld.llm.litellm_backend  # noqa: F401  (litellm configured: no banners)

    try:
        return str(litellm.get_llm_provider(model)[1])
    except (litellm.BadRequestError, ValueError):
        return head if sep else ""


KEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY"),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
"""Providers whose client refuses to send any request unless one of these variables is set
(or the program gave litellm a key: ``litellm.api_key``, ``litellm.openai_key``). Other
providers' clients take keys in more ways (Anthropic's: a token, a federated identity; cloud
providers': credential files); a run on one whose key is missing stops at its first call
(an ``auth`` error, :mod:`simworld.llm.errors`)."""


def missing_key(model: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The key variable the provider of ``model`` cannot send a request without and
    ``environ`` (default: the process's) lacks; ``None`` when one is set, litellm was given a
    key, or the provider is not in :data:`KEY_VARIABLES`."""
    names = KEY_VARIABLES.get(provider_of(model))
    env = os.environ if environ is None else environ
    if not names or any(env.get(name) for name in names) or litellm.api_key or litellm.openai_key:
        return None
    return names[0]


def redactor_for(
    models: Iterable[str | None],
    environ: Mapping[str, str] | None = None,
    *,
    names: Iterable[str] = (),
) -> Redactor:
    """The redactor of a run on ``models``: the values of the credential variables their
    providers read, of the variables in ``names`` (the scenario's ``api_key_env``
    variables), and key-shaped tokens (``None`` entries of ``models`` add nothing)."""
    return Redactor.for_providers((provider_of(m) for m in models if m), environ, names=names)


def run_redactor(*scenarios: Scenario, environ: Mapping[str, str] | None = None) -> Redactor:
    """The redactor of a run of ``scenarios`` (a branch runs its parent's and its own): the
    credential variables of every model they send requests for and their ``api_key_env``
    variables (:func:`redactor_for`)."""
    models = [model for s in scenarios for model in s.provider_models()]
    names = [
        name for s in scenarios if (route := s.llm.route()) is not None for name in route.key_envs()
    ]
    return redactor_for(models, environ, names=names)
