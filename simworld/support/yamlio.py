"""Safe reading of YAML documents with errors that name the file."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from simworld.errors import ConfigError, short_repr

YAML_BOOLS = ("true", "false")
MAX_YAML_BYTES = 16 * 1024**2
"""Largest YAML file read (scenario files and persona libraries are far smaller)."""
MAX_YAML_NODES = 1_000_000
"""Most values a document may hold once its aliases are expanded (a bound on the work done
on any input: an alias bomb is refused before it is expanded)."""
MAX_YAML_DEPTH = 100
MAX_FIELD_CHARS = 80
EXPONENT_NUMBER = re.compile(r"([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))[eE]([-+]?[0-9]+)")
"""A number in exponent form, as YAML 1.1 may take it for text."""
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it (several times faster)."""
OCTAL_NUMBER = re.compile(r"[-+]?0[0-7_]+")
"""An integer YAML 1.1 reads in base 8 (``010`` is 8)."""
SEXAGESIMAL_NUMBER = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
"""A number YAML 1.1 reads in base 60 (``1:30`` is 90)."""


def parse_scalar(text: str, *, source: str, field: str) -> Any:
    """A command-line value: a number, ``true``/``false``, ``null``, a YAML list or mapping,
    quoted text, or else the text as typed.

    Only ``true``/``false`` become booleans: YAML 1.1 would also read ``off``, ``on``,
    ``yes`` and ``no`` as booleans, which breaks settings such as ``llm.cache=off``. Text
    that YAML would change is kept as typed: a ``#`` would start a comment (``user #1``),
    a ``: `` a mapping (``Remember: be brief``), digits and dashes a date.

    Args:
        text: The value as typed.
        source: The option named in errors (``--set``, ``--grid``).
        field: The item named in errors.

    Raises:
        ConfigError: A control character, or a list, mapping or quoted text that is not
            valid YAML.
    """
    plain = text.strip()
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in plain):
        raise ConfigError(source, field, f"bad value {text!r}: special characters are not allowed")
    structured = plain[:1] in ("[", "{", '"', "'")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        if not structured:
            return plain
        problem = getattr(exc, "problem", None) or exc  # a reader error has no ``problem``
        raise ConfigError(source, field, f"bad value {text!r}: {problem}") from None
    if structured:
        return value
    if isinstance(value, bool) and plain.casefold() not in YAML_BOOLS:
        return plain
    if isinstance(value, int | float) or value is None:
        if value is not None and (problem := surprising_number(plain)):
            raise ConfigError(source, field, problem)
        return plain if "#" in plain else value
    return plain


def surprising_number(text: str) -> str | None:
    """Why a number as typed is not the number YAML 1.1 reads, or ``None``.

    YAML 1.1 reads digits with a leading zero in base 8 (``010`` is 8) and digits joined by
    colons in base 60 (``1:30`` is 90): a seed or a step count typed that way would silently
    be another number.

    Args:
        text: A scalar as typed, which YAML reads as a number.
    """
    plain = text.strip()
    if OCTAL_NUMBER.fullmatch(plain):
        base = "base 8"
    elif SEXAGESIMAL_NUMBER.fullmatch(plain):
        base = "base 60"
    else:
        return None
    value = yaml.safe_load(plain)
    if base == "base 8" and value == int(plain.replace("_", ""), 10):
        return None  # 007: the same number either way
    return (
        f"YAML reads {plain} as a number in {base} ({value}); write the number you mean, "
        f"or quote it ('{plain}') for text"
    )


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
        raise ConfigError(p, "", _not_a_file(p))
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(p, "", f"file is too large ({size} bytes; at most {MAX_YAML_BYTES})")
        data = _safe_load(p.read_text(encoding="utf-8"), p)
    except yaml.reader.ReaderError as exc:
        raise ConfigError(
            p,
            "",
            f"not valid YAML: unacceptable character #x{exc.character:04x} at character "
            f"{exc.position + 1}",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(p, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(p, "", f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read file: {exc.strerror or exc}") from None
    except RecursionError:
        raise ConfigError(p, "", f"nested deeper than {MAX_YAML_DEPTH}") from None
    if data is None:
        raise ConfigError(p, "", "file is empty")
    if not isinstance(data, dict):
        raise ConfigError(p, "", "expected a mapping at the top level")
    return data


def _not_a_file(path: Path) -> str:
    """Why ``path``, which is not a regular file, cannot be read as YAML."""
    if path.is_dir():
        return "is a directory, not a YAML file"
    if path.exists():
        return "is not a regular file (a device, pipe or socket); give a YAML file"
    if str(path) == "-":
        return "file not found (standard input is not read: give a YAML file)"
    return "file not found"


def _safe_load(text: str, path: Path) -> Any:
    """``yaml.safe_load`` through :data:`FAST_LOADER`, checked before it is built
    (:func:`check_document`).

    A document it rejects is read again by the pure-Python loader, so errors read the same.
    """
    try:
        return _load(text, FAST_LOADER, path)
    except yaml.YAMLError:
        return _load(text, yaml.SafeLoader, path)


def _load(text: str, loader_class: Any, path: Path) -> Any:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_document(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def check_document(root: yaml.Node, path: Path) -> None:
    """Refuse a composed YAML document before it is built into Python objects.

    Aliases are followed without expanding them (each node is visited once), so the check
    costs the size of the file, not of its expansion.

    Raises:
        ConfigError: A mapping repeats a key; aliases expand to more than
            :data:`MAX_YAML_NODES` values or refer to themselves; nesting is deeper than
            :data:`MAX_YAML_DEPTH`; a number is not finite (``.inf``, ``.nan``).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str, int, bool]] = [(root, "", 0, False)]
    while stack:
        node, field, depth, done = stack.pop()
        nid = id(node)
        children = _children(node)
        if done:
            open_nodes.discard(nid)
            sizes[nid] = 1 + sum(sizes[id(c)] for _, c in children)
            if sizes[nid] > MAX_YAML_NODES:
                raise ConfigError(
                    path,
                    _where(field, node),
                    f"aliases expand to more than {MAX_YAML_NODES} values; refused",
                )
            continue
        if nid in sizes:
            continue
        if nid in open_nodes:
            raise ConfigError(path, _where(field, node), "an alias refers to itself")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(path, _where(field, node), f"nested deeper than {MAX_YAML_DEPTH}")
        if (
            isinstance(node, yaml.ScalarNode)
            and node.tag.endswith(":float")
            and not _finite(node.value)
        ):
            raise ConfigError(path, _where(field, node), "must be a finite number")
        if (
            isinstance(node, yaml.ScalarNode)
            and not node.style
            and node.tag.endswith((":int", ":float"))
            and (problem := surprising_number(node.value))
        ):
            raise ConfigError(path, _where(field, node), problem)
        if isinstance(node, yaml.MappingNode):
            _check_keys(node, field, path)
        open_nodes.add(nid)
        stack.append((node, field, depth, True))
        for name, child in reversed(children):
            stack.append((child, _join(field, name), depth + 1, False))


def _finite(text: str) -> bool:
    """Whether a YAML float scalar is finite (``.inf``, ``.nan``, ``1.0e999`` are not)."""
    plain = text.strip().casefold().replace("_", "")
    if plain.lstrip("+-") in {".inf", ".nan"}:
        return False
    try:
        return math.isfinite(float(plain))
    except ValueError:  # a sexagesimal float (1:30.5): finite
        return True


def _children(node: yaml.Node) -> list[tuple[str, yaml.Node]]:
    if isinstance(node, yaml.SequenceNode):
        return [(f"[{i}]", child) for i, child in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[str, yaml.Node]] = []
        for key, value in node.value:
            name = _key_name(key)
            out.append((name, key))
            out.append((name, value))
        return out
    return []


def _key_name(key: yaml.Node) -> str:
    if isinstance(key, yaml.ScalarNode):
        return key.value if len(key.value) <= 60 else key.value[:57] + "..."
    return "<key>"


def _join(field: str, name: str) -> str:
    if name.startswith("["):
        return field + name
    return f"{field}.{name}" if field else name


def _where(field: str, node: yaml.Node) -> str:
    line = f"line {node.start_mark.line + 1}"
    if len(field) > MAX_FIELD_CHARS:
        field = field[: MAX_FIELD_CHARS - 3] + "..."
    return f"{field} ({line})" if field else line


def _check_keys(node: yaml.MappingNode, field: str, path: Path) -> None:
    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag.endswith(":merge"):
            continue
        ident = (key.tag, key.value)
        if ident in seen:
            raise ConfigError(
                path,
                _where(_join(field, _key_name(key)), key),
                "duplicate key (each key may appear once in a mapping)",
            )
        seen.add(ident)


def strict_mismatch(data: Any, validated: Any, field: str = "") -> tuple[str, str] | None:
    """Where validation converted a scalar of another kind: a boolean taken as a number
    (``size: true``), a number as a boolean, or text as a number or boolean (``"3"``).

    Args:
        data: The input (as read from YAML, overrides applied).
        validated: The validated document's ``model_dump()`` (a scenario, a persona library).
        field: Dotted path of ``data`` (for the message).

    Returns:
        ``(field, problem)`` for the first such value, or ``None``.
    """
    if isinstance(data, dict) and isinstance(validated, dict):
        for key, value in data.items():
            if key in validated:
                sub = f"{field}.{key}" if field else str(key)
                found = strict_mismatch(value, validated[key], sub)
                if found is not None:
                    return found
        return None
    if isinstance(data, list) and isinstance(validated, list | tuple):
        if len(data) != len(validated):
            return None
        for i, (value, out) in enumerate(zip(data, validated, strict=True)):
            found = strict_mismatch(value, out, f"{field}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(data, float) and not math.isfinite(data):
        return field, "must be a finite number"
    if isinstance(validated, bool):
        if not isinstance(data, bool):
            return field, f"expected true or false, got {short_repr(data)}"
    elif isinstance(validated, int | float):
        if isinstance(data, bool):
            return field, f"expected a number, got {str(data).lower()}"
        if isinstance(data, str):
            return field, f"expected a number, got text {short_repr(data)}{_exponent_hint(data)}"
    return None


def _exponent_hint(text: str) -> str:
    """How to write ``text`` as a number YAML 1.1 reads, when it is one in exponent form
    that YAML took for text (``1e-3``, ``2.5e3``); else nothing."""
    match = EXPONENT_NUMBER.fullmatch(text.strip())
    if match is None:
        return ""
    mantissa, exponent = match.groups()
    mantissa = mantissa if "." in mantissa else f"{mantissa}.0"
    exponent = exponent if exponent[0] in "+-" else f"+{exponent}"
    return (
        f"; YAML reads an exponent as a number only with a decimal point and a sign: "
        f"write {mantissa}e{exponent}"
    )
