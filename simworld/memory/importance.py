"""Importance of a memory (1..10): a cheap deterministic heuristic, or a batched LLM rating."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, create_model

from simworld.llm.gateway import CallOutcome
from simworld.prompts import render as prompts

ImportanceSource = Literal["heuristic", "pending", "llm", "heuristic_fallback", "given"]
"""Where a memory's importance came from."""

Ask = Callable[[str, str, int, type[BaseModel]], Awaitable[CallOutcome]]
"""Sends one structured call for an agent: ``(user prompt, purpose, index, schema)``."""


class RatedMemories(Protocol):
    """What an LLM importance rating needs of a memory stream
    (:class:`~simworld.memory.stream.MemoryStream` has it)."""

    def pending_ratings(self) -> list[int]:
        """Ids waiting for a rating."""
        ...

    def labelled(self, ids: Sequence[int]) -> tuple[list[str], list[str]]:
        """Labels and ``[m12] speaker: text`` lines of ``ids``."""
        ...

    def importance(self, memory_id: int) -> float:
        """A memory's current importance."""
        ...

    def set_importance(
        self,
        ids: Sequence[int],
        values: Sequence[float],
        source: ImportanceSource,
    ) -> None:
        """Replace the importance of ``ids``."""
        ...


RATING_PURPOSE = "memory_importance"
RATING_BATCH = 40
SCHEMA_CACHE = 1024
MIN_IMPORTANCE = 1
MAX_IMPORTANCE = 10
KIND_BASE = {"observation": 3, "own_message": 4, "reflection": 6}
ADDRESSED_BONUS = 2
INTENSITY_BONUS = 1
LENGTH_BONUS = 1
LONG_WORDS = 40
_INTENSITY = re.compile(
    r"!|\b(strongly|absolutely|never|always|must|urgent|terrible|outrageous|"
    r"furious|angry|afraid|love|hate|crisis|disaster|wonderful)\b",
    re.IGNORECASE,
)
_SHOUT = re.compile(r"\b[A-Z]{3,}\b")


def heuristic_importance(text: str, kind: str, *, owner: str = "") -> int:
    """A deterministic importance rating in 1..10.

    The base depends on the kind (observation 3, own message 4, reflection 6); +2 when the
    text names the agent itself (someone addressed it), +1 for an intensity cue (an
    exclamation mark, a shouted word, or words such as *strongly*, *never*, *must*,
    *crisis*), +1 for a long text (40 words or more). A crude stand-in for the model's
    rating that costs nothing and never varies.

    Args:
        text: The memory's content.
        kind: ``observation``, ``own_message`` or ``reflection``.
        owner: The agent's display name.
    """
    score = KIND_BASE.get(kind, KIND_BASE["observation"])
    first = owner.split()[0] if owner.strip() else ""
    if kind == "observation" and first and re.search(rf"\b{re.escape(first)}\b", text):
        score += ADDRESSED_BONUS
    if _INTENSITY.search(text) or _SHOUT.search(text):
        score += INTENSITY_BONUS
    if len(text.split()) >= LONG_WORDS:
        score += LENGTH_BONUS
    return max(MIN_IMPORTANCE, min(MAX_IMPORTANCE, score))


def rating_model(refs: Sequence[str]) -> type[BaseModel]:
    """Structured output of a batched rating: ``{"m12": 1..10, "m13": 1..10, ...}``."""
    return _rating_model(tuple(refs))


@lru_cache(maxsize=SCHEMA_CACHE)
def _rating_model(refs: tuple[str, ...]) -> type[BaseModel]:
    fields: dict[str, Any] = {
        ref: (int, Field(ge=MIN_IMPORTANCE, le=MAX_IMPORTANCE)) for ref in refs
    }
    return create_model("ImportanceRatings", __config__=ConfigDict(extra="forbid"), **fields)


def rating_prompt(lines: Sequence[str], refs: Sequence[str]) -> str:
    """The user prompt that asks for one rating per labelled memory."""
    return prompts.render(
        "memory_importance",
        memories="\n".join(lines),
        example=refs[0] if refs else "m0",
    )


async def rate_importance(stream: RatedMemories, ask: Ask) -> list[CallOutcome]:
    """Rate the stream's pending memories with the model, in batches of ``RATING_BATCH``.

    One call per batch (``purpose = memory_importance``, ``index`` = batch number), in id
    order. A batch whose call failed keeps its heuristic values, flagged
    ``heuristic_fallback``: never a made-up value presented as a rating.

    Returns:
        The calls made, in order.
    """
    pending = stream.pending_ratings()
    calls = []
    for index, start in enumerate(range(0, len(pending), RATING_BATCH)):
        ids = pending[start : start + RATING_BATCH]
        refs, lines = stream.labelled(ids)
        schema = rating_model(refs)
        outcome = await ask(rating_prompt(lines, refs), RATING_PURPOSE, index, schema)
        calls.append(outcome)
        if outcome.ok and outcome.parsed is not None:
            stream.set_importance(ids, [outcome.parsed[r] for r in refs], "llm")
        else:
            stream.set_importance(ids, [stream.importance(i) for i in ids], "heuristic_fallback")
    return calls
