"""Which credentials a run's models read: the redactor of a run (see
:mod:`simworld.support.redact` for what is masked)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import litellm

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
