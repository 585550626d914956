"""Registration of simworld's own litellm providers: ``fake/`` and ``local/``."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import litellm

from simworld.config.memory import MemoryConfig
from simworld.errors import ConfigError
from simworld.llm.providers import local
from simworld.llm.providers.fake import FakeLLM, FakeOptions

PROVIDERS = {"fake": FakeLLM, "local": local.LocalLLM}


def register_providers() -> None:
    """Add simworld's providers to litellm's custom provider map, once per process."""
    present = {entry["provider"] for entry in litellm.custom_provider_map}
    for name, handler in PROVIDERS.items():
        if name not in present:
            litellm.custom_provider_map.append({"provider": name, "custom_handler": handler()})
    litellm.utils.custom_llm_setup()


def check_model(model: str) -> None:
    """Fail early, with one line, when no provider can run ``model``; nothing is sent.

    ``local/`` models: extra installed, GGUF file present, packaged model assembled;
    ``fake/`` models: options parse; other model strings: litellm knows their provider
    (``openai/...``, ``anthropic/...``, a bare name only where litellm infers the provider),
    as it must before it can send them anywhere.

    Raises:
        simworld.llm.providers.local.LocalModelError: The local model cannot be used.
        ValueError: The fake model's options are malformed, or no provider is known for
            the model string.
    """
    if model.startswith("fake/"):
        FakeOptions.parse(model)
    elif not model.startswith(local.PROVIDER_PREFIX):
        register_providers()  # so that a provider a user registered counts as known
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # litellm prints a banner
                litellm.get_llm_provider(model)
        except litellm.BadRequestError:
            raise ValueError(
                f"{model!r}: no provider is known for this model string; name one as "
                "PROVIDER/MODEL (openai/gpt-4o-mini, anthropic/claude-sonnet-4-5, "
                "hosted_vllm/NAME for a vLLM server, fake/default, local/gemma3-270m)"
            ) from None
    local.check_model(model)


def check_scenario_model(model: str, source: str | Path) -> None:
    """:func:`check_model` for the ``llm.model`` of the scenario read from ``source``.

    Raises:
        ConfigError: The model string is malformed or no provider is known for it (naming
            ``source`` and ``llm.model``).
        simworld.llm.providers.local.LocalModelError: The local model cannot be used.
    """
    try:
        check_model(model)
    except ValueError as exc:
        raise ConfigError(source, "llm.model", str(exc)) from exc


def check_scenario_embedding(memory: MemoryConfig, source: str | Path) -> None:
    """Refuse, before anything is written, a litellm embedding model
    (``memory.embedding.provider: litellm``) that no provider can serve: one of simworld's
    own (``fake/``, ``local/``: they serve no embeddings) or a model string litellm knows no
    provider for. A memory ``window`` embeds nothing and is not checked.

    Raises:
        ConfigError: Naming ``source`` and ``memory.embedding.model``.
    """
    embedding = memory.embedding
    if memory.store == "window" or embedding.provider != "litellm":
        return
    model = embedding.model
    field = "memory.embedding.model"
    if model.startswith(("fake/", local.PROVIDER_PREFIX)):
        raise ConfigError(
            source,
            field,
            f"{model!r}: simworld's fake and local providers serve no embeddings; use "
            "memory.embedding.provider: local (all-MiniLM-L6-v2, offline)",
        )
    try:
        check_model(model)
    except ValueError as exc:
        raise ConfigError(
            source,
            field,
            f"{model!r}: no provider is known for this embedding model; name one as "
            "PROVIDER/MODEL (openai/text-embedding-3-small, ollama/nomic-embed-text), or use "
            "memory.embedding.provider: local",
        ) from exc
