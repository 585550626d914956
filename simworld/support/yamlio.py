"""Safe reading of YAML documents with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from simworld.errors import ConfigError

YAML_BOOLS = ("true", "false")
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it (several times faster)."""


def parse_scalar(text: str, *, source: str, field: str) -> Any:
    """A command-line value read as a YAML scalar (``0.5``, ``3``, ``true``, ``text``).

    Only ``true``/``false`` become booleans: YAML 1.1 would also read ``off``, ``on``,
    ``yes`` and ``no`` as booleans, which breaks settings such as ``llm.cache=off``.

    Args:
        text: The value as typed.
        source: The option named in errors (``--set``, ``--grid``).
        field: The item named in errors.

    Raises:
        ConfigError: The text is not valid YAML.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, field, f"bad value {text!r}: {exc.problem}") from None
    if isinstance(value, bool) and text.strip().casefold() not in YAML_BOOLS:
        return text
    return value


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping, with ``yaml.safe_load`` only.

    Args:
        path: The file to read.

    Returns:
        The mapping.

    Raises:
        ConfigError: The file is missing, unreadable, not YAML or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, "", "file not found")
    try:
        data = _safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(p, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(p, "", f"cannot read file: {exc}") from exc
    if data is None:
        raise ConfigError(p, "", "file is empty")
    if not isinstance(data, dict):
        raise ConfigError(p, "", "expected a mapping at the top level")
    return data


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` through :data:`FAST_LOADER`.

    A document it rejects is read again by the pure-Python loader, so errors read the same.
    """
    try:
        return yaml.load(text, Loader=FAST_LOADER)
    except yaml.YAMLError:
        return yaml.safe_load(text)
