"""Agent memory: the remembered item, what an agent needs from a store, and the recency window."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

MemoryKind = Literal["observation", "own_message", "reflection"]
_REF = re.compile(r"^m(\d+)$")


@dataclass(frozen=True)
class MemoryItem:
    """One remembered event.

    Attributes:
        step: Simulation step at which it was stored.
        kind: What it is.
        speaker: Who said it (display name).
        topic: Topic id it concerns (empty for reflections).
        text: The content.
    """

    step: int
    kind: MemoryKind
    speaker: str
    topic: str
    text: str


class Memory(Protocol):
    """What the agent needs from a memory store."""

    def add(self, item: MemoryItem) -> object:
        """Store one memory (a store may return an id; the agent ignores it)."""
        ...

    def recall(self, topic: str, k: int) -> list[MemoryItem]:
        """Up to ``k`` memories relevant to ``topic``, oldest first."""
        ...


class RecentMemory:
    """A window memory: recalls the ``k`` most recent memories on a topic."""

    def __init__(self) -> None:
        # Memories by topic, each list oldest first: a recall reads its last ``k`` items
        # whatever the number of memories held.
        self.by_topic: dict[str, list[MemoryItem]] = {}

    def add(self, item: MemoryItem) -> None:
        """Store one memory."""
        self.by_topic.setdefault(item.topic, []).append(item)

    def recall(self, topic: str, k: int) -> list[MemoryItem]:
        """Up to ``k`` most recent memories on ``topic``, oldest first."""
        if k <= 0:
            return []
        return self.by_topic.get(topic, [])[-k:]


def memory_ref(memory_id: int) -> str:
    """The label of a memory in prompts and citations (``m12``)."""
    return f"m{memory_id}"


def parse_ref(ref: str) -> int | None:
    """The memory id of a label, or ``None`` when it is not one."""
    match = _REF.match(ref.strip())
    return int(match.group(1)) if match else None
