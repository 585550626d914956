"""Agent memory: what an agent heard and said, recalled when it speaks or is probed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

MemoryKind = Literal["observation", "own_message", "reflection"]


@dataclass(frozen=True)
class MemoryItem:
    """One remembered event.

    Attributes:
        step: Simulation step at which it was stored.
        kind: What it is.
        speaker: Who said it (display name).
        topic: Topic id it concerns.
        text: The content.
    """

    step: int
    kind: MemoryKind
    speaker: str
    topic: str
    text: str


class Memory(Protocol):
    """What the agent needs from a memory store."""

    def add(self, item: MemoryItem) -> None:
        """Store one memory."""
        ...

    def recall(self, topic: str, k: int) -> list[MemoryItem]:
        """Up to ``k`` memories relevant to ``topic``, oldest first."""
        ...


class RecentMemory:
    """A window memory: recalls the ``k`` most recent memories on a topic."""

    def __init__(self) -> None:
        self.items: list[MemoryItem] = []

    def add(self, item: MemoryItem) -> None:
        """Store one memory."""
        self.items.append(item)

    def recall(self, topic: str, k: int) -> list[MemoryItem]:
        """Up to ``k`` most recent memories on ``topic``, oldest first."""
        if k <= 0:
            return []
        return [m for m in self.items if m.topic == topic][-k:]
