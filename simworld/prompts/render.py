"""Prompt templates (kept as data in ``prompts.yaml``) and the helpers that fill them."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import yaml

from simworld.config.persona import BIG_FIVE_TRAITS, Persona
from simworld.config.scenario import Topic


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
    """Fill template ``name``; a missing field raises ``KeyError``."""
    return templates()[name].format(**fields)


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
