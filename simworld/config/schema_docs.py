"""Descriptions and examples of every scenario field, merged into the JSON Schema.

They live in one data file, ``simworld/config/schema_docs.yaml``, keyed by field path:

* ``llm.model`` — a field of a section;
* ``topics[].scale`` — a field of each item of a list;
* ``network[watts_strogatz].k`` — a field of one variant of a union, named by its
  discriminator value (``generator``, ``kind`` or ``type``).

A value is either the description or a mapping with ``description`` and ``examples`` (a
list). :func:`field_paths` walks the schema pydantic generates, so a field added to a
config class without an entry in the file is found (``tests/test_schema_docs.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import yaml

DOCS_FILE = "schema_docs.yaml"
DISCRIMINATORS = ("generator", "kind", "type")


@cache
def schema_docs() -> dict[str, dict[str, Any]]:
    """Field path → ``{"description": str, "examples": list}`` (examples may be absent)."""
    text = (
        resources.files(__package__ or "simworld").joinpath(DOCS_FILE).read_text(encoding="utf-8")
    )
    raw = yaml.safe_load(text) or {}
    out: dict[str, dict[str, Any]] = {}
    for path, value in raw.items():
        entry = {"description": value} if isinstance(value, str) else dict(value)
        out[str(path)] = entry
    return out


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    return dict(schema["$defs"][ref.rsplit("/", 1)[-1]])


def _variant(schema: dict[str, Any], node: dict[str, Any]) -> str | None:
    """The discriminator value of one union member (an object with a constant tag)."""
    props = _resolve(schema, node).get("properties", {})
    for tag in DISCRIMINATORS:
        if tag in props:
            spec = props[tag]
            if "const" in spec:
                return str(spec["const"])
            if len(spec.get("enum", [])) == 1:
                return str(spec["enum"][0])
    return None


def _objects(
    schema: dict[str, Any], node: dict[str, Any], path: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The object schemas reachable at ``path`` (through refs, unions, lists and maps)."""
    node = _resolve(schema, node)
    if "properties" in node:
        yield path, node
        return
    members = node.get("anyOf") or node.get("oneOf")
    if members:
        objects = [m for m in members if "properties" in _resolve(schema, m)]
        for member in members:
            name = _variant(schema, member) if len(objects) > 1 else None
            yield from _objects(schema, member, f"{path}[{name}]" if name else path)
        return
    if isinstance(node.get("items"), dict):
        yield from _objects(schema, node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _objects(schema, node["additionalProperties"], f"{path}{{}}")


def _walk(
    schema: dict[str, Any], obj: dict[str, Any], prefix: str
) -> Iterator[tuple[str, dict[str, Any], str]]:
    for name, prop in obj.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        yield path, obj, name
        for sub_path, sub in _objects(schema, prop, path):
            yield from _walk(schema, sub, sub_path)


def field_paths(schema: dict[str, Any]) -> list[str]:
    """Every field path of a scenario JSON Schema, in schema order."""
    return [path for path, _, _ in _walk(schema, schema, "")]


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with each field's description and examples from :func:`schema_docs`.

    The text goes into the property where the field is declared (its class's definition),
    so a definition reached by two paths takes the first path's entry. Fields without an
    entry are left as they are.
    """
    docs = schema_docs()
    seen: set[tuple[int, str]] = set()
    for path, obj, name in _walk(schema, schema, ""):
        entry = docs.get(path)
        if entry is None or (id(obj["properties"]), name) in seen:
            continue
        seen.add((id(obj["properties"]), name))
        prop = obj["properties"][name]
        prop["description"] = entry["description"]
        if entry.get("examples") is not None:
            prop["examples"] = list(entry["examples"])
    return schema


__all__ = ["DOCS_FILE", "document", "field_paths", "schema_docs"]
