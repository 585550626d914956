"""Annotation calls on public messages: the stated stance (D_i) and the impersonation judge."""

from __future__ import annotations

from functools import cache, partial
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

from simworld.config.scenario import Scenario, Topic
from simworld.engine.agent import enum_answer_model
from simworld.engine.context import Society
from simworld.engine.inline import NO_POSITION
from simworld.engine.record import Job
from simworld.llm.gateway import CallOutcome
from simworld.llm.types import CallIdentity, LLMRequest, json_schema
from simworld.prompts import render as prompts
from simworld.support.events import Event, EventType

STANCE_PURPOSE = "stance:{topic}"
JUDGE_PURPOSE = "judge:impersonation"
JUDGE_ANSWERS = ("yes", "no")


def stance_model(topic: Topic) -> type[BaseModel]:
    """``{"answer": <one of the topic's values or "none">}`` (docs/metrics.md §1, D_i)."""
    return enum_answer_model(f"Stance_{topic.id}", (*topic.scale.values, NO_POSITION))


@cache
def _judge_model() -> type[BaseModel]:
    answer: Any = Literal[JUDGE_ANSWERS]  # built at run time: a value, not a static type
    return create_model(
        "ImpersonationJudge", __config__=ConfigDict(extra="forbid"), answer=(answer, ...)
    )


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _request(
    scenario: Scenario,
    *,
    system: str,
    user: str,
    identity: CallIdentity,
    schema: type[BaseModel],
    temperature: float,
) -> LLMRequest:
    return LLMRequest(
        model=scenario.llm.model,
        messages=({"role": "system", "content": system}, {"role": "user", "content": user}),
        identity=identity,
        temperature=temperature,
        max_tokens=scenario.llm.max_tokens,
        schema=json_schema(schema),
        schema_name=schema.__name__,
        params=scenario.llm.params or None,
        route=scenario.llm.route(),
    )


def stance_request(
    scenario: Scenario, topic: Topic, message: Event, *, speaker: str
) -> tuple[LLMRequest, type[BaseModel]]:
    """The structured call extracting the position one message states.

    Its identity is ``(seed, speaker, step, "stance:<topic>", turn)``, unique per message
    (an agent speaks in one conversation per step), so a replay finds it in the cache.

    Args:
        scenario: The running scenario (model, limits, seed).
        topic: The message's topic.
        message: The ``message`` event.
        speaker: The speaker's display name.

    Returns:
        The request and the pydantic model its answer must parse into.
    """
    schema = stance_model(topic)
    none_label = prompts.render("stance_none_label")
    options = "\n".join(
        [
            prompts.options_block(topic),
            prompts.render("option_line", value=NO_POSITION, label=none_label),
        ]
    )
    values = [*topic.scale.values, NO_POSITION]
    user = prompts.render(
        "stance",
        statement=topic.statement,
        options=options,
        speaker=speaker,
        text=_oneline(message["text"]),
        none=NO_POSITION,
        values=", ".join(str(v) for v in values),
    )
    identity = CallIdentity(
        scenario.seed,
        message["agent"],
        message["step"],
        STANCE_PURPOSE.format(topic=topic.id),
        message["turn"],
    )
    request = _request(
        scenario,
        system=prompts.render("stance_system"),
        user=user,
        identity=identity,
        schema=schema,
        temperature=scenario.trackers.stance_temperature,
    )
    return request, schema


def stance_event(message: Event, topic: Topic, outcome: CallOutcome) -> Event:
    """The ``stance`` event recorded right after the stance call of ``message``.

    ``status`` is ``stated`` (``answer`` holds the value), ``none`` (the message states no
    position) or ``failed`` (the call failed); ``answer`` and ``value`` are null unless
    stated, so "no position" and failures are never counted as a value.
    """
    raw = outcome.parsed["answer"] if outcome.ok and outcome.parsed else None
    if not outcome.ok:
        status, answer = "failed", None
    elif raw is None or raw == NO_POSITION:
        status, answer = "none", None
    else:
        status, answer = "stated", raw
    return {
        "type": EventType.STANCE.value,
        "step": message["step"],
        "agent": message["agent"],
        "topic": topic.id,
        "turn": message["turn"],
        "status": status,
        "answer": None if answer is None else str(answer),
        "value": float(answer) if answer is not None and topic.ordinal else None,
        "call": outcome.key,
    }


def judge_request(
    scenario: Scenario,
    message: Event,
    *,
    speaker: str,
    nationality: str,
    others: list[str],
) -> tuple[LLMRequest, type[BaseModel]]:
    """The optional LLM judge of impersonation for one message (docs/metrics.md §1).

    Identity ``(seed, speaker, step, "judge:impersonation", turn)``.
    """
    schema = _judge_model()
    user = prompts.render(
        "judge",
        speaker=speaker,
        nationality=nationality,
        others=", ".join(others) or "(none)",
        text=_oneline(message["text"]),
    )
    identity = CallIdentity(
        scenario.seed, message["agent"], message["step"], JUDGE_PURPOSE, message["turn"]
    )
    request = _request(
        scenario,
        system=prompts.render("judge_system"),
        user=user,
        identity=identity,
        schema=schema,
        temperature=scenario.trackers.stance_temperature,
    )
    return request, schema


def judge_event(message: Event, outcome: CallOutcome) -> Event:
    """The ``impersonation_judge`` event: ``verdict`` true/false, null when the call failed."""
    raw = outcome.parsed["answer"] if outcome.ok and outcome.parsed else None
    return {
        "type": EventType.IMPERSONATION_JUDGE.value,
        "step": message["step"],
        "agent": message["agent"],
        "turn": message["turn"],
        "verdict": None if raw is None else raw == "yes",
        "call": outcome.key,
    }


def annotation_jobs(model: Society, events: list[Event], step: int) -> list[Job]:
    """The stance (and judge) calls for every ``message`` event of ``step``, in event order.

    The model runs them concurrently and applies the outcomes in this order, so the
    transcript does not depend on which call returns first. Baseline agents' messages get
    no calls.
    """
    cfg = model.scenario.trackers
    if not (cfg.stance is True or cfg.judge):
        return []
    agents = {a.key: a for a in model.population}
    jobs: list[Job] = []
    for message in events:
        if message.get("type") != "message" or message.get("step") != step:
            continue
        topic = model.scenario.topic(message["topic"])
        speaker = agents[message["agent"]]
        if speaker.baseline:
            continue  # a baseline agent's stance is its own value (simworld.engine.policy)
        if cfg.stance is True:  # ``inline``: reported in the speech call (engine.inline)
            request, schema = stance_request(model.scenario, topic, message, speaker=speaker.name)
            jobs.append(Job(request, schema, partial(stance_event, message, topic)))
        if cfg.judge:
            others = [
                f"{agents[k].name} ({agents[k].persona.nationality})"
                for k in model.listeners(message)
            ]
            request, schema = judge_request(
                model.scenario,
                message,
                speaker=speaker.name,
                nationality=speaker.persona.nationality,
                others=others,
            )
            jobs.append(Job(request, schema, partial(judge_event, message)))
    return jobs


__all__ = [
    "NO_POSITION",
    "Job",
    "annotation_jobs",
    "judge_event",
    "judge_request",
    "stance_event",
    "stance_model",
    "stance_request",
]
