"""A user tracker: how long each agent's public messages are, per step.

A tracker is any class with ``observe(event)`` and ``rows()``; it sees every transcript
event in order, live during a run and again in ``simworld analyze``. Name it in a scenario:

    trackers:
      extra: ["message_length.py:MessageLength"]   # a file next to the scenario
"""

from __future__ import annotations

from typing import Any


class MessageLength:
    """Words per public message, averaged per agent and step (frame ``message_length``)."""

    name = "message_length"

    def __init__(self) -> None:
        self._words: dict[tuple[int, str], list[int]] = {}

    def observe(self, event: dict[str, Any]) -> None:
        """Count the words of each ``message`` event."""
        if event.get("type") == "message":
            key = (int(event["step"]), str(event["agent"]))
            self._words.setdefault(key, []).append(len(str(event["text"]).split()))

    def rows(self) -> list[dict[str, Any]]:
        """One row per (step, agent), in that order."""
        return [
            {"step": step, "agent": agent, "messages": len(n), "mean_words": sum(n) / len(n)}
            for (step, agent), n in sorted(self._words.items())
        ]
