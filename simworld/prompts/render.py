"""Prompt templates (kept as data in ``prompts.yaml``) and the helpers that fill them."""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from simworld.config.persona import BIG_FIVE_TRAITS, Persona
from simworld.config.scenario import Topic
from simworld.errors import ConfigError

PROVIDER_TEMPLATES = ("local_",)
"""Prefixes of the templates the local model provider renders (in its own worker process,
outside a scenario's reach): they cannot be overridden by a scenario."""
_OVERRIDES: ContextVar[Mapping[str, str] | None] = ContextVar(
    "simworld_prompt_overrides", default=None
)


@cache
def templates() -> dict[str, str]:
    """All templates, read once from the packaged ``prompts.yaml``."""
    text = (
        resources.files(__name__.rpartition(".")[0])
        .joinpath("prompts.yaml")
        .read_text(encoding="utf-8")
    )
    data = yaml.safe_load(text)
    return {str(k): str(v) for k, v in data.items()}


def render(name: str, /, **fields: Any) -> str:
    """Fill template ``name`` (a scenario's override of it when one is in effect, see
    :func:`overridden`); a missing field raises ``KeyError``."""
    overrides = _OVERRIDES.get() or {}
    template = overrides[name] if name in overrides else templates()[name]
    return template.format(**fields)


def fields_of(template: str) -> set[str]:
    """The names of the fields a template fills (``{name}`` or ``{name:spec}``)."""
    return {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(template) if f}


def _written(template: str) -> set[str]:
    """How ``template`` writes each field (``name``, ``name:spec``, ``name!conversion``)."""
    return {
        name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        for _, name, spec, conversion in string.Formatter().parse(template)
        if name is not None
    }


def _check_fields(template: str, packaged: str) -> None:
    """Every field of ``template`` is a plain ``{name}`` or written as ``packaged`` writes
    it: no positional ``{}``, attribute or index (``{a.b}``, ``{a[0]}``), and no conversion
    or format spec of its own, which would fail, or reach into objects, only when the
    template is rendered.

    Raises:
        ValueError: Naming the first field that is neither.
    """
    allowed = _written(packaged)
    for field in sorted(_written(template)):
        if not (field.isidentifier() or field in allowed):
            raise ValueError(
                f"{{{field}}}: write a field as a plain {{name}} (or as prompts.yaml writes "
                "it), and a brace as {{ or }}"
            )


def check_overrides(overrides: Mapping[str, str], *, source: str | Path = "<scenario>") -> None:
    """A scenario's ``prompts`` overrides name packaged templates and use only their fields.

    Raises:
        ConfigError: Unknown template, a provider's template, a malformed template, or a
            field the packaged template does not have (one line, ``prompts.<name>``).
    """
    packaged = templates()
    for name, text in overrides.items():
        field = f"prompts.{name}"
        if name not in packaged:
            raise ConfigError(source, field, f"no prompt template {name!r} in prompts.yaml")
        if name.startswith(PROVIDER_TEMPLATES):
            raise ConfigError(source, field, "rendered by the local provider; not overridable")
        try:
            _check_fields(text, packaged[name])
            extra = sorted(fields_of(text) - fields_of(packaged[name]))
        except ValueError as exc:
            raise ConfigError(source, field, f"malformed template: {exc}") from exc
        if extra:
            known = ", ".join(sorted(fields_of(packaged[name]))) or "none"
            raise ConfigError(source, field, f"unknown field {{{extra[0]}}} (fields: {known})")


@contextmanager
def overridden(overrides: Mapping[str, str]) -> Iterator[None]:
    """Render with ``overrides`` (template name -> text) in effect in this context (and the
    asyncio tasks created in it)."""
    token = _OVERRIDES.set(dict(overrides))
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


def options_block(topic: Topic, lines: Iterable[tuple[str, str]] | None = None) -> str:
    """The topic's options, one ``value = label`` line each.

    Args:
        topic: The topic.
        lines: ``(code, label)`` pairs to show instead of the topic's own order (a
            counterbalanced probe, :func:`simworld.engine.counterbalance.options_lines`).
    """
    if lines is None:
        lines = [(str(v), topic.scale.label(v)) for v in topic.scale.values]
    return "\n".join(render("option_line", value=v, label=label) for v, label in lines)


def memories_block(items: Iterable[tuple[str, str]]) -> str:
    """Render ``(speaker, text)`` pairs as a bulleted list."""
    lines = [render("memory_line", speaker=s, text=" ".join(t.split())) for s, t in items]
    return "\n".join(lines) if lines else render("no_memories")


def persona_system(persona: Persona, topics: list[Topic]) -> str:
    """The system prompt that puts the model in the persona's shoes."""
    views = [
        render(
            "start_view_line", statement=t.statement, label=t.scale.label(persona.opinions[t.id])
        )
        for t in topics
        if t.id in persona.opinions
    ]
    b5 = persona.big_five
    personality = ", ".join(f"{trait} {getattr(b5, trait):.1f}" for trait in BIG_FIVE_TRAITS)
    return render(
        "persona_system",
        name=persona.name,
        age=persona.age,
        gender=persona.gender,
        nationality=persona.nationality,
        culture=f" ({persona.culture})" if persona.culture else "",
        occupation=persona.occupation,
        education=persona.education,
        personality=personality,
        values=", ".join(persona.values) or "(unspecified)",
        backstory=persona.backstory or "(none given)",
        speaking_style=persona.speaking_style or "plain and direct",
        start_views="\n".join(views) if views else render("no_start_views"),
    )


def instruction_prefix(instruction: str) -> str:
    """The scenario's instruction as a leading paragraph (empty when there is none)."""
    return f"{instruction.strip()}\n" if instruction.strip() else ""
