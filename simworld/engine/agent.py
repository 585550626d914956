"""Persona agents: mesa agents that speak and answer probes through the LLM gateway."""

from __future__ import annotations

import inspect
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast

import mesa
from pydantic import BaseModel, ConfigDict, create_model

from simworld.config.persona import Persona
from simworld.config.scenario import Topic
from simworld.engine.context import AgentHost
from simworld.engine.counterbalance import ShownOrder, options_lines, shown_order
from simworld.engine.inline import inline_enabled, inline_prompt, speech_model
from simworld.errors import ConfigError
from simworld.llm.gateway import CallOutcome
from simworld.llm.types import CallIdentity, LLMRequest, json_schema
from simworld.memory.base import Memory, MemoryItem
from simworld.memory.importance import rate_importance
from simworld.memory.reflection import reflect
from simworld.memory.stream import MemoryStream
from simworld.prompts import render as prompts
from simworld.support.plugins import check_call, import_object

BEHAVIOUR_HOOKS: dict[str, tuple[int, str]] = {
    "speaks": (2, "speaks(topic, step)"),
    "addressees": (3, "addressees(listeners, topic, step)"),
    "postprocess": (3, "postprocess(text, topic, step)"),
}
"""The behaviour hooks an agent class may override: arguments simworld passes, and the call."""


def answer_model(topic: Topic) -> type[BaseModel]:
    """The pydantic model of a probe answer on ``topic``: ``{"answer": <allowed value>}``."""
    return enum_answer_model(f"Answer_{topic.id}", tuple(topic.scale.values))


@cache
def enum_answer_model(name: str, values: tuple[int | str, ...]) -> type[BaseModel]:
    """A pydantic model ``{"answer": <one of values>}`` named ``name``, built once."""
    answer: Any = Literal[values]  # built at run time: a value, not a static type
    return create_model(name, __config__=ConfigDict(extra="forbid"), answer=(answer, ...))


class PersonaAgent(mesa.Agent):
    """An LLM-backed agent with a persona, a place in the network and a memory.

    Args:
        model: The simulation.
        persona: Who the agent is.
        node: Its node in ``model.graph``.
        memory: Its memory store (by default a fresh one from ``model.memory_system``: a
            :class:`~simworld.memory.base.RecentMemory` or a
            :class:`~simworld.memory.stream.MemoryStream`).
    """

    model: AgentHost

    def __init__(
        self,
        model: AgentHost,
        persona: Persona,
        node: int,
        *,
        memory: Memory | None = None,
    ) -> None:
        super().__init__(model)
        self.persona = persona
        self.node = node
        self.baseline = False
        """Whether the agent follows the scenario's baseline rule (no model calls, no memory)."""
        self.active = True
        """False once an intervention removed the agent: it no longer speaks, hears or answers."""
        self.memory: Memory = (
            memory if memory is not None else model.memory_system.create(persona.id, persona.name)
        )
        self._system = ""
        self.refresh_system_prompt()

    def refresh_system_prompt(self) -> None:
        """Render the persona's system prompt for the model's current topics."""
        self._system = prompts.persona_system(self.persona, self.model.scenario.topics)

    @property
    def key(self) -> str:
        """The agent's id in outputs (its persona id)."""
        return self.persona.id

    @property
    def name(self) -> str:
        """Display name used in conversation."""
        return self.persona.name

    def neighbours(self) -> list[PersonaAgent]:
        """Agents adjacent in the social graph, in node order."""
        nodes = sorted(self.model.graph.neighbors(self.node))
        # the host sees agents through the narrow AgentView; its agents are PersonaAgents
        return [cast("PersonaAgent", self.model.agent_at(n)) for n in nodes]

    # -- behaviour hooks: override in a subclass (``population.agent_class``) ---------------
    def speaks(self, topic: Topic, step: int) -> bool:
        """Whether the agent takes its speaking turns on ``topic`` at ``step`` (default: yes).

        Called once per planned turn, in plan order, before any model call of the step; a
        turn it declines is not taken (no call, no message).
        """
        return True

    def addressees(
        self, listeners: list[PersonaAgent], topic: Topic, step: int
    ) -> list[PersonaAgent]:
        """Whom the agent's turn reaches, chosen among the protocol's ``listeners``
        (default: all of them). Returning someone not in ``listeners`` is an error, so
        messages still travel only where the protocol lets them."""
        return listeners

    def postprocess(self, text: str, topic: Topic, step: int) -> str:
        """The message as the others hear it, from the model's reply ``text`` (default:
        unchanged). The call log keeps the model's own reply; the transcript, memories and
        later turns get this text."""
        return text

    def remember(self, *, step: int, kind: Any, speaker: str, topic: str, text: str) -> None:
        """Store a memory (a baseline agent keeps none)."""
        if self.baseline:
            return
        self.memory.add(MemoryItem(step=step, kind=kind, speaker=speaker, topic=topic, text=text))

    async def memory_step(self, step: int) -> tuple[list[CallOutcome], list[dict[str, Any]]]:
        """End-of-step memory work (importance rating, forgetting, reflection).

        Runs concurrently for all agents; must not touch other agents. Returns the model calls
        made (in a fixed order) and the transcript events to log, which the model applies
        in agent order. For a memory stream, in this order: rate the step's new memories
        (``llm`` importance mode), embed them, forget (``memory_forgotten`` events), then
        reflect when the importance sum exceeds the threshold (``reflection`` events).
        A window memory does nothing.
        """
        memory = self.memory
        if not isinstance(memory, MemoryStream) or self.baseline:
            return [], []

        async def ask(user: str, purpose: str, index: int, schema: type[BaseModel]) -> CallOutcome:
            request = self.request(
                user,
                step=step,
                purpose=purpose,
                index=index,
                schema=schema,
                max_tokens=memory.config.max_tokens,
            )
            return await self.model.gateway.call(request, schema)

        calls: list[CallOutcome] = []
        events: list[dict[str, Any]] = []
        if memory.config.importance.mode == "llm":
            calls.extend(await rate_importance(memory, ask))
        memory.ensure_embedded()
        events.extend(memory.forget(step))
        if memory.reflection_due():
            more_calls, more_events = await reflect(memory, step=step, ask=ask)
            calls.extend(more_calls)
            events.extend(more_events)
        memory.persist()
        return calls, events

    def _memory_k(self) -> int:
        """How many memories a prompt shows."""
        k = self.model.scenario.memory.retrieval.k
        return self.model.scenario.protocol.memory_window if k is None else k

    def _context(
        self, topic: Topic, extra: list[tuple[str, str]], *, step: int, touch: bool
    ) -> str:
        """The memories block of a prompt: recalled memories, then ``extra`` (heard now).

        A memory stream retrieves by score (a recall when ``touch``); the query is the
        topic statement, plus the latest line of ``extra`` when configured.
        """
        memory = self.memory
        if not isinstance(memory, MemoryStream):
            window = self.model.scenario.protocol.memory_window
            recalled = [(m.speaker, m.text) for m in memory.recall(topic.id, window)]
            return prompts.memories_block(recalled + extra)
        query = topic.statement
        if memory.config.retrieval.query == "topic_and_heard" and extra:
            query = f"{query}\n{extra[-1][1]}"
        lines = memory.context_lines(query, k=self._memory_k(), step=step, touch=touch)
        lines += [
            prompts.render("memory_line", speaker=s, text=" ".join(t.split())) for s, t in extra
        ]
        return "\n".join(lines) if lines else prompts.render("no_memories")

    def probe_memories(self, topic: Topic, *, step: int) -> str:
        """The memories block a private probe on ``topic`` shows (no recall is counted)."""
        return self._context(topic, [], step=step, touch=False)

    def request(
        self,
        user: str,
        *,
        step: int,
        purpose: str,
        index: int = 0,
        schema: type[BaseModel] | None = None,
        logprobs: bool = False,
        max_tokens: int | None = None,
    ) -> LLMRequest:
        """A request with this agent's system prompt and identity (``max_tokens``: overrides
        ``llm.max_tokens``)."""
        llm = self.model.scenario.llm
        return LLMRequest(
            model=llm.model,
            messages=(
                {"role": "system", "content": self._system},
                {"role": "user", "content": user},
            ),
            identity=CallIdentity(self.model.scenario.seed, self.key, step, purpose, index),
            temperature=llm.temperature,
            max_tokens=llm.max_tokens if max_tokens is None else max_tokens,
            schema=None if schema is None else json_schema(schema),
            schema_name=None if schema is None else schema.__name__,
            logprobs=logprobs,
            params=llm.params or None,
            route=llm.route(),
        )

    def speech_request(
        self,
        template: str,
        topic: Topic,
        *,
        step: int,
        index: int = 0,
        heard: list[tuple[str, str]] | None = None,
        **fields: str,
    ) -> LLMRequest:
        """A request for a public message, rendered from ``template``.

        Args:
            template: ``post``, ``pair_open``, ``pair_reply`` or ``group_turn``.
            topic: What to talk about.
            step: Current step.
            index: Turn number inside the step.
            heard: This step's messages visible to the agent so far, ``(speaker, text)``.
            **fields: Extra template fields (``partner``, ``members``).
        """
        user = prompts.render(
            template,
            instruction=prompts.instruction_prefix(self.model.scenario.protocol.instruction),
            statement=topic.statement,
            options=prompts.options_block(topic),
            memories=self._context(topic, heard or [], step=step, touch=True),
            **fields,
        )
        schema = self.speech_schema(topic)
        if schema is not None:
            user = inline_prompt(user, topic)
        return self.request(
            user, step=step, purpose=f"{template}:{topic.id}", index=index, schema=schema
        )

    def speech_schema(self, topic: Topic) -> type[BaseModel] | None:
        """The answer model of this agent's speech calls: ``{"message", "answer"}`` with
        ``trackers.stance: inline`` (:mod:`simworld.engine.inline`), else None (free text)."""
        if self.baseline or not inline_enabled(self.model.scenario.trackers.stance):
            return None
        return speech_model(topic)

    def probe_request(
        self, topic: Topic, *, step: int
    ) -> tuple[LLMRequest, type[BaseModel], ShownOrder]:
        """A private, structured request for the agent's opinion on ``topic``.

        With ``protocol.counterbalance`` the options are shown in an order drawn from the
        call's identity (:mod:`simworld.engine.counterbalance`); the caller maps the answer back.

        Returns:
            The request, the answer's pydantic model and the order shown.
        """
        identity = CallIdentity(self.model.scenario.seed, self.key, step, f"probe:{topic.id}", 0)
        counterbalance = self.model.scenario.protocol.counterbalance
        order = shown_order(topic, identity, counterbalance=counterbalance)
        request, schema = self.answer_request(topic, step=step, order=order)
        return request, schema, order

    def answer_request(
        self,
        topic: Topic,
        *,
        step: int,
        template: str = "probe",
        heard: list[tuple[str, str]] | None = None,
        order: ShownOrder | None = None,
    ) -> tuple[LLMRequest, type[BaseModel]]:
        """A structured request for one answer on ``topic``, rendered from ``template``.

        Args:
            topic: The question.
            step: Current step.
            template: ``probe`` (private; the prompt shows recalled memories) or ``asch``
                (after scripted peers; the prompt shows ``heard`` and no memories).
            heard: The peers' answers, ``(name, answer)``, for ``asch``.
            order: The order to show the options in (default: the topic's own).

        Returns:
            The request (purpose ``<template>:<topic>``) and the answer's pydantic model.
        """
        schema = answer_model(topic)
        heard = heard or []
        user = prompts.render(
            template if heard or template == "probe" else f"{template}_alone",
            statement=topic.statement,
            options=prompts.options_block(
                topic, None if order is None else options_lines(topic, order)
            ),
            memories=(
                self._context(topic, [], step=step, touch=False) if template == "probe" else ""
            ),
            peers=prompts.memories_block(heard),
            count=len(heard),
            values=", ".join(str(v) for v in topic.scale.values),
        )
        request = self.request(
            user,
            step=step,
            purpose=f"{template}:{topic.id}",
            schema=schema,
            logprobs=self.model.scenario.llm.probe_logprobs,
        )
        return request, schema


def agent_class_from(spec: str, *, source: str | Path = "<scenario>") -> type[PersonaAgent]:
    """The agent class ``population.agent_class`` names (``path.py:Class`` or
    ``package.module:Class``): a subclass of :class:`PersonaAgent`.

    Raises:
        ConfigError: The class cannot be imported, is not a :class:`PersonaAgent`, or a
            behaviour hook of it cannot be called as simworld calls it.
    """
    field = "population.agent_class"
    found = import_object(spec, source=source, field=field)
    if not (isinstance(found, type) and issubclass(found, PersonaAgent)):
        msg = f"{spec}: not a simworld.engine.agent.PersonaAgent subclass"
        raise ConfigError(source, field, msg)
    for name, (n_args, call) in BEHAVIOUR_HOOKS.items():
        hook = inspect.getattr_static(found, name)
        bound = isinstance(hook, staticmethod | classmethod)
        n = n_args if bound else n_args + 1  # read from the class: self is an argument
        check_call(getattr(found, name), n, source=source, field=field, spec=spec, call=call)
    return found
