"""Errors raised for bad user input, each naming the file and the field at fault."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError


class SimworldError(Exception):
    """Base class of every error simworld raises on purpose."""


class ConfigError(SimworldError):
    """A scenario, persona or edge-list file is malformed.

    Args:
        path: The file at fault.
        field: Dotted path of the field at fault (empty when the whole file is wrong).
        message: What is wrong, in one line.
    """

    def __init__(self, path: str | Path, field: str, message: str) -> None:
        self.path = str(path)
        self.field = field
        self.message = " ".join(str(message).split())
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {self.message}")


class BudgetExceededError(SimworldError):
    """The run's spending budget is used up; the run stops after the current step."""


class ReplayMissError(SimworldError):
    """Replay mode met a model call that the cache does not hold."""


def format_loc(loc: Sequence[str | int], prefix: str = "") -> str:
    """Turn a pydantic error location into a dotted field path such as ``topics[2].scale``.

    Args:
        loc: The location tuple from a pydantic error.
        prefix: A dotted path to put in front (for nested documents).

    Returns:
        The dotted path.
    """
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "tagged-union")) or part in {"list", "dict"}:
            continue
        else:
            out += f".{part}" if out else part
    return out


def config_error_from_validation(
    path: str | Path, err: ValidationError, prefix: str = ""
) -> ConfigError:
    """Build a one-line :class:`ConfigError` from the first error of a pydantic failure.

    Args:
        path: The file that was being validated.
        err: The validation error.
        prefix: Dotted path of the validated part inside the file.

    Returns:
        The error naming file, field and problem.
    """
    first = err.errors(include_url=False)[0]
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "required field is missing"
    elif "input" in first and first["type"] not in {"value_error", "assertion_error"}:
        shown = repr(first["input"])
        if len(shown) <= 60:
            msg = f"{msg} (got {shown})"
    return ConfigError(path, format_loc(first["loc"], prefix), msg.removeprefix("Value error, "))
