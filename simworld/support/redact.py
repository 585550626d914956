"""Scrubbing of secrets (API keys, tokens) from anything simworld writes."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
MIN_SECRET_LENGTH = 8
MASK = "[REDACTED]"
# Shapes of well-known key formats, masked even when not in the environment.
KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,})\b")


class Redactor:
    """Masks the values of secret-looking environment variables and known key shapes.

    Args:
        environ: The environment to read secrets from (``os.environ`` by default).
        names: More variables whose values are secrets whatever their names (the scenario's
            ``api_key_env`` variables).
    """

    def __init__(
        self, environ: Mapping[str, str] | None = None, *, names: Iterable[str] = ()
    ) -> None:
        env = os.environ if environ is None else environ
        named = set(names)
        values = {
            v
            for k, v in env.items()
            if (k in named or SECRET_NAME.search(k)) and len(v) >= MIN_SECRET_LENGTH
        }
        # JSON-escaped forms too: transcripts are masked after serialisation.
        escaped = {json.dumps(v, ensure_ascii=False)[1:-1] for v in values}
        self._secrets = sorted(values | escaped, key=len, reverse=True)

    def text(self, value: str) -> str:
        """A copy of ``value`` with every secret masked."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return KEY_SHAPES.sub(MASK, value)

    def deep(self, value: Any) -> Any:
        """Mask secrets in every string inside nested dicts, lists and tuples."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value
