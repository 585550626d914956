"""Registration of simworld's own litellm providers (``fake/`` now, ``local/`` when installed)."""

from __future__ import annotations

import litellm

from simworld.fake import FakeLLM

PROVIDERS = {"fake": FakeLLM}


def register_providers() -> None:
    """Add simworld's providers to litellm's custom provider map, once per process."""
    present = {entry["provider"] for entry in litellm.custom_provider_map}
    for name, handler in PROVIDERS.items():
        if name not in present:
            litellm.custom_provider_map.append({"provider": name, "custom_handler": handler()})
    litellm.utils.custom_llm_setup()
