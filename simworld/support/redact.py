"""Scrubbing of credentials (API keys, tokens) from anything simworld writes.

Two things are credentials: the values of the environment variables that the run's model
provider reads (``OPENAI_API_KEY`` for ``openai/...``, ``AWS_SECRET_ACCESS_KEY`` for
``bedrock/...``; see :func:`credential_variables`), and tokens shaped like a key by more than
their prefix (``sk-`` followed by a random-looking run of letters and digits, not
``sk-learn-compatible-pipelines``; see :func:`looks_like_key`). Nothing else is masked: a
variable such as ``SORT_KEY_FIELD`` whose value is ``remote_work`` is not a credential.

Scenario content is never masked. A scenario that holds a credential is refused instead
(:func:`find_credential`), so what is written is always the scenario that was run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
MIN_SECRET_LENGTH = 8
MASK = "[REDACTED]"
# Prefixes of well-known key formats; what follows must look random (:func:`looks_like_key`).
KEY_PREFIXES = (
    r"sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?",
    r"hf_",
    r"gh[pousr]_",
    r"github_pat_",
    r"xox[abprs]-",
    r"AIza",
    r"gsk_",
    r"r8_",
)
AWS_KEY_ID = r"(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9_\-])"
"""An AWS access key id: exactly 16 capitals and digits after its prefix (so a word such as
``ASIAPacific2024Summit`` is not one)."""
KEY_CANDIDATE = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:(?:"
    + "|".join(KEY_PREFIXES)
    + r")[A-Za-z0-9_\-]{12,}|"
    + AWS_KEY_ID
    + ")"
)
# Every key prefix holds one of these (a quick test before the regular expression).
_PREFIX_MARKS = ("-", "_", "AKIA", "ASIA", "AIza")
RANDOM_RUN = 12
"""A key's body holds a run of at least this many letters and digits, mixing both."""
_RUN = re.compile(rf"[A-Za-z0-9]{{{RANDOM_RUN},}}")
# Variables of providers whose names do not start with the provider's own name.
PROVIDER_PREFIXES: dict[str, tuple[str, ...]] = {
    "azure": ("AZURE_",),
    "azure_ai": ("AZURE_",),
    "bedrock": ("AWS_",),
    "sagemaker": ("AWS_",),
    "vertex_ai": ("VERTEX", "GOOGLE_"),
    "gemini": ("GEMINI_", "GOOGLE_"),
    "huggingface": ("HF_", "HUGGINGFACE_"),
    "together_ai": ("TOGETHER",),
    "cohere": ("COHERE_", "CO_"),
    "openrouter": ("OPENROUTER_", "OR_"),
    "watsonx": ("WATSONX_", "WX_"),
}
# simworld's own providers read no credentials.
NO_CREDENTIALS = ("fake", "local")


def looks_like_key(token: str) -> bool:
    """Whether ``token`` has the shape of an API key by more than its prefix.

    It must start with a known key prefix (``sk-``, ``AKIA``, ``hf_`` …) and go on with a
    run of at least :data:`RANDOM_RUN` letters and digits that mixes both; words joined by
    hyphens (``sk-learn-compatible-pipelines``) do not.
    """
    match = KEY_CANDIDATE.fullmatch(token)
    return match is not None and _random_body(token)


def _random_body(token: str) -> bool:
    return any(
        any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
        for run in _RUN.findall(token)
    )


def credential_variables(provider: str, environ: Mapping[str, str]) -> list[str]:
    """Names of the set environment variables that ``provider`` (a litellm provider name,
    see :func:`simworld.llm.credentials.provider_of`) reads as credentials: named like a
    secret (``KEY``, ``TOKEN`` …) and starting with the provider's name (or one of its
    :data:`PROVIDER_PREFIXES`)."""
    if not provider or provider in NO_CREDENTIALS:
        return []
    prefixes = (f"{provider.upper()}_", *PROVIDER_PREFIXES.get(provider, ()))
    return sorted(
        name for name in environ if name.upper().startswith(prefixes) and SECRET_NAME.search(name)
    )


class Redactor:
    """Masks credentials: the given secret values and key-shaped tokens.

    Args:
        secrets: Values to mask wherever they occur (shorter than
            :data:`MIN_SECRET_LENGTH` are ignored).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {v for v in secrets if len(v) >= MIN_SECRET_LENGTH}
        # JSON-escaped forms too, for text that is itself serialised JSON (a model's answer).
        escaped = {json.dumps(v, ensure_ascii=False)[1:-1] for v in values}
        self._secrets = sorted(values | escaped, key=len, reverse=True)

    @classmethod
    def for_providers(
        cls,
        providers: Iterable[str],
        environ: Mapping[str, str] | None = None,
        *,
        names: Iterable[str] = (),
    ) -> Redactor:
        """The redactor of a run whose models belong to ``providers``: it masks the values
        of their credential variables (:func:`credential_variables`), of the variables in
        ``names``, and key-shaped tokens.

        Args:
            providers: litellm provider names (``openai``, ``anthropic`` …).
            environ: The environment (``os.environ`` by default).
            names: More variables whose values are credentials whatever their names (the
                scenario's ``api_key_env`` variables).
        """
        env = os.environ if environ is None else environ
        wanted = {name for p in providers for name in credential_variables(p, env)}
        wanted |= {name for name in names if name in env}
        return cls(env[name] for name in sorted(wanted))

    @classmethod
    def for_environment(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        """A redactor of every variable named like a secret (:data:`SECRET_NAME`), whatever
        reads it, and of key-shaped tokens: for messages printed before a run's own
        redactor is known (a bad value given on the command line is echoed back).

        Args:
            environ: The environment (``os.environ`` by default).
        """
        env = os.environ if environ is None else environ
        return cls(value for name, value in env.items() if SECRET_NAME.search(name))

    @property
    def secrets(self) -> list[str]:
        """The values masked wherever they occur, longest first."""
        return list(self._secrets)

    def text(self, value: str) -> str:
        """A copy of ``value`` with every credential masked."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        if not any(mark in value for mark in _PREFIX_MARKS):
            return value  # no key prefix can be in it
        return KEY_CANDIDATE.sub(_mask_key, value)

    def deep(self, value: Any) -> Any:
        """Mask credentials in every string inside nested dicts, lists and tuples."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value

    def find(self, value: str) -> str | None:
        """What in ``value`` is a credential (a description, never the value), or ``None``."""
        for secret in self._secrets:
            if secret in value:
                return "the value of a credential variable"
        for match in KEY_CANDIDATE.finditer(value):
            if _random_body(match.group(0)):
                return f"a key-shaped token starting {match.group(0)[:4]!r}"
        return None


def _mask_key(match: re.Match[str]) -> str:
    token = match.group(0)
    return MASK if _random_body(token) else token


def find_credential(data: Any, redactor: Redactor, path: str = "") -> tuple[str, str] | None:
    """The first string inside nested data that holds a credential.

    Returns:
        ``(dotted field, what was found)``, or ``None``.
    """
    if isinstance(data, str):
        found = redactor.find(data)
        return None if found is None else (path, found)
    if isinstance(data, dict):
        for key, value in data.items():
            hit = find_credential(value, redactor, f"{path}.{key}" if path else str(key))
            if hit is not None:
                return hit
    if isinstance(data, list | tuple):
        for i, value in enumerate(data):
            hit = find_credential(value, redactor, f"{path}[{i}]")
            if hit is not None:
                return hit
    return None
