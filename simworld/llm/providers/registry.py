"""Registration of simworld's own litellm providers: ``fake/`` and ``local/``."""

from __future__ import annotations

import litellm

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
    """Fail early, with one line, when simworld's own provider cannot run ``model``.

    ``local/`` models: extra installed, GGUF file present, packaged model assembled;
    ``fake/`` models: options parse. Other model strings pass.

    Raises:
        simworld.llm.providers.local.LocalModelError: The local model cannot be used.
        ValueError: The fake model's options are malformed.
    """
    if model.startswith("fake/"):
        FakeOptions.parse(model)
    local.check_model(model)
