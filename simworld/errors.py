"""Errors raised for bad user input, each naming the file and the field at fault."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

_NO_DATA: Any = object()
MAX_SHOWN = 60
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 6, 6, 6
_REPR.maxstring, _REPR.maxother = MAX_SHOWN, MAX_SHOWN
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.\[\]]*): (.+)$", re.DOTALL)


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


class ResumeError(SimworldError):
    """A run cannot be resumed: complete, unrecorded, or not reproducing what it wrote."""


class ReplayMissError(SimworldError):
    """Replay mode met a model call that the cache does not hold."""


class StorageError(SimworldError):
    """A run's files could not be written (no space left, a quota, read-only storage): the
    run stopped where it was, as after a crash, and ``simworld resume`` continues it once
    there is room. The command exits 1 (the run failed), not 2 (bad input)."""


def format_loc(loc: Sequence[str | int], prefix: str = "", data: Any = _NO_DATA) -> str:
    """Turn a pydantic error location into a dotted field path such as ``topics[2].scale``.

    Args:
        loc: The location tuple from a pydantic error.
        prefix: A dotted path to put in front (for nested documents).
        data: The validated input; when given, parts of ``loc`` that name a union member
            rather than a field (``watts_strogatz`` in ``network.watts_strogatz.p``, ``int``
            in ``opinions.x.int``) are left out.

    Returns:
        The dotted path.
    """
    out = prefix
    node = data
    for part in loc:
        if isinstance(part, str) and (
            part.startswith(("function-", "tagged-union")) or part in {"list", "dict", "[key]"}
        ):
            continue
        if node is not _NO_DATA:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, dict) and isinstance(part, str):
                if part in {v for v in node.values() if isinstance(v, str)}:
                    continue  # the tag of a discriminated union, e.g. generator: watts_strogatz
                node = _NO_DATA  # a missing field
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
            else:
                continue  # the member name of a union tried on a scalar
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def short_repr(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr`` of a value with bounded work and length (:mod:`reprlib`: deep or long
    containers are abbreviated, never rendered whole), cut to ``limit`` characters."""
    shown = _REPR.repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def config_error_from_validation(
    path: str | Path, err: ValidationError, prefix: str = "", data: Any = _NO_DATA
) -> ConfigError:
    """Build a one-line :class:`ConfigError` from the first error of a pydantic failure.

    Args:
        path: The file that was being validated.
        err: The validation error.
        prefix: Dotted path of the validated part inside the file.
        data: The validated input, to tell union member names from field names.

    Returns:
        The error naming file, field and problem.
    """
    first = err.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    msg = first["msg"]
    kind = first["type"]
    ctx = first.get("ctx") or {}
    if kind == "extra_forbidden":
        msg = "unknown field"
    elif kind in {"missing", "union_tag_not_found"}:
        msg = "required field is missing"
    elif kind == "union_tag_invalid":
        msg = f"unknown value {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    elif loc and loc[-1] == "[key]":
        msg = f"key {short_repr(first.get('input'))}: {msg}"
        loc = loc[:-2]
    elif "input" in first and kind not in {"value_error", "assertion_error"}:
        shown = short_repr(first["input"])
        if len(shown) <= MAX_SHOWN:
            msg = f"{msg} (got {shown})"
        if kind in {"string_type", "literal_error"} and isinstance(first["input"], bool):
            msg += "; unquoted Yes, No, On or Off is read as true or false: quote the text"
    field = format_loc(loc, prefix, data)
    if kind.startswith("union_tag"):
        field = ".".join(p for p in (field, str(ctx.get("discriminator", "")).strip("'")) if p)
    msg = msg.removeprefix("Value error, ")
    # A validator's message may start with the field it is about ("labels: must be distinct").
    sub = _FIELD_PREFIX.match(msg) if kind == "value_error" else None
    if sub:
        joiner = "" if not field or sub.group(1).startswith("[") else "."
        field, msg = f"{field}{joiner}{sub.group(1)}", sub.group(2)
    return ConfigError(path, field, msg)


class PluginError(SimworldError):
    """A plug-in (an extra tracker, a protocol, an agent class, an intervention type) broke
    its contract while a run went: it returned something simworld cannot use. The run stops
    with status ``failed``, naming the plug-in."""


class ModelFailureError(SimworldError):
    """The run's model calls fail in a way that continuing cannot fix.

    Raised for an error that retrying cannot fix (authentication, unknown model, unsupported
    parameter, bad request) or when the share of failed calls passes
    ``llm.max_failure_rate``; the run stops with status ``failed``.
    """
