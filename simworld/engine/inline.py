"""``trackers.stance: inline``: the speaker reports its stated position in the speech call.

Instead of one speech call per message and then one stance call per message (an annotator
reading the message, :mod:`simworld.engine.annotate`), the speech call itself is
structured: the speaker answers ``{"message": <what it says>, "answer": <the option it
states, or "none">}``. The message text goes to the transcript, the listeners and the
memories as before; the answer becomes the message's ``stance`` event, whose ``call`` is the
speech call. One call per message is saved; the trade-off is that the position is
self-reported by the speaker rather than read off the text by a third party, so a message
whose text and report disagree is not caught.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from simworld.config.scenario import Topic
from simworld.config.trackers import INLINE_STANCE
from simworld.llm.gateway import CallOutcome
from simworld.prompts import render as prompts

NO_POSITION = "none"
"""The stance answer meaning "the message states no position"; never counted as a value."""
MESSAGE_FIELD = "message"
"""The field of an inline answer holding what the speaker says."""


def inline_enabled(stance: bool | str) -> bool:
    """Whether ``trackers.stance`` asks for inline stances."""
    return stance == INLINE_STANCE


def speech_model(topic: Topic) -> type[BaseModel]:
    """``{"message": <text>, "answer": <one of the topic's values or "none">}``."""
    return _speech_model(f"Speech_{topic.id}", tuple(topic.scale.values))


@cache
def _speech_model(name: str, values: tuple[int | str, ...]) -> type[BaseModel]:
    allowed = (*values, NO_POSITION)
    answer: Any = Literal[allowed]  # built at run time: a value, not a static type
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        message=(str, Field(min_length=1)),
        answer=(answer, ...),
    )


def inline_prompt(speech: str, topic: Topic) -> str:
    """The speech prompt with the request to answer as ``{"message", "answer"}`` appended."""
    values = [*topic.scale.values, NO_POSITION]
    return prompts.render(
        "inline_stance",
        speech=speech,
        none=NO_POSITION,
        values=", ".join(str(v) for v in values),
    )


def message_text(outcome: CallOutcome) -> str | None:
    """What a speech call said: the ``message`` of an inline answer, else the text."""
    if outcome.parsed is not None and MESSAGE_FIELD in outcome.parsed:
        return str(outcome.parsed[MESSAGE_FIELD])
    return outcome.text


__all__ = [
    "MESSAGE_FIELD",
    "NO_POSITION",
    "inline_enabled",
    "inline_prompt",
    "message_text",
    "speech_model",
]
