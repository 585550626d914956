"""Transcript events: the one catalogue of event types a run writes to ``transcript.jsonl``.

An event is a JSON object with a ``type`` (an :class:`EventType` value) and the fields listed
for it below. The engine writes them in a fixed order per step; trackers re-derive every
frame from them (``simworld analyze``).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

Event = dict[str, Any]
"""One transcript event (a JSON object)."""


class EventType(StrEnum):
    """The ``type`` of a transcript event, with the module that writes it."""

    RUN_START = "run_start"
    """Opens a run: scenario, seed, agents (personas, nodes), edges (engine.model)."""
    STEP_END = "step_end"
    """Closes a step: its number of calls and failures (engine.model)."""
    RUN_STOPPED = "run_stopped"
    """A run stopped early: step and reason (runs.run)."""
    LLM_CALL = "llm_call"
    """One model call: identity, key, status, text, tokens (engine.record)."""
    MESSAGE = "message"
    """A public message: speaker, listeners, topic, mode, turn, text (engine.model)."""
    CONVERSATION = "conversation"
    """Who takes part in a pair or group conversation (engine.model)."""
    PROBE = "probe"
    """A private answer on a topic (engine.model, engine.policy)."""
    STANCE = "stance"
    """The stated stance of a message (engine.annotate, engine.policy)."""
    IMPERSONATION_JUDGE = "impersonation_judge"
    """The judge's verdict on a message (engine.annotate)."""
    BFI = "bfi"
    """One BFI administration (engine.bfi)."""
    ASCH = "asch"
    """One Asch trial (engine.asch)."""
    INTERVENTION = "intervention"
    """An applied intervention (engine.interventions)."""
    MEMORY_FORGOTTEN = "memory_forgotten"
    """Memories forgotten by a memory stream (memory.stream)."""
    REFLECTION = "reflection"
    """A reflection written into a memory stream (memory.reflection)."""


MESSAGE_FIELDS: dict[str, str] = {
    "type": "string",
    "step": "int",
    "agent": "string",
    "to": "list<string> or {neighbours_of: string}",
    "topic": "string",
    "mode": "string",
    "turn": "int",
    "text": "string",
}
"""The fields of a ``message`` event and their JSON types (docs/outputs.md lists them). ``to``
is compact when the message reached all of its speaker's neighbours
(:mod:`simworld.support.recipients`)."""


def event_problem(event: object) -> str | None:
    """What keeps ``event`` out of a transcript, or ``None``: an event is a dict with a
    string ``type`` whose values serialise as JSON (a plug-in may add its own types)."""
    if not isinstance(event, dict):
        return f"an event that is a {type(event).__name__}, not a dict with a 'type'"
    if not isinstance(event.get("type"), str):
        keys = ", ".join(sorted(map(str, event))) or "none"
        return f"an event with no 'type' (keys: {keys})"
    try:
        json.dumps(event, sort_keys=True)
    except (TypeError, ValueError) as exc:
        return f"an event of type {event['type']!r} that is not JSON: {exc}"
    return None
