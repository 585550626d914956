"""Interaction protocols: strategy objects that decide who talks to whom at each step.

A protocol (as Concordia's engines) owns one step's interaction. The shipped modes
``broadcast``, ``pairs``, ``group`` and ``asch`` are registered instances of
:class:`Protocol`; a scenario selects one by name (``protocol.mode``), or a user's own
class by ``path.py:Class`` (relative to the scenario file) or ``package.module:Class``.

Most protocols only :meth:`Protocol.plan` the step's conversations (lists of
:class:`Turn`); the model runs them concurrently, applies them in plan order and logs their
``message`` (and ``conversation``) events, so call identities, replay and resume hold for a
user's protocol as for the shipped ones. Random choices must use ``model.rng``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from typing import Protocol as TypingProtocol

import networkx as nx
import numpy as np

from simworld.config.scenario import Scenario, Topic
from simworld.engine.agent import PersonaAgent
from simworld.engine.asch import run_trials
from simworld.engine.context import Society
from simworld.engine.grouping import balanced_groups, random_groups
from simworld.engine.record import StepRecord
from simworld.errors import ConfigError
from simworld.support.plugins import (
    build_error,
    check_call,
    import_object,
    is_plugin_spec,
    snake_case,
)


@dataclass
class Turn:
    """One speaking turn inside a conversation.

    Attributes:
        speaker: Who speaks.
        template: The prompt template of the turn (``post``, ``pair_open``, ``pair_reply``,
            ``group_turn``, or a template a scenario adds).
        listeners: Who hears it (only they remember it).
        fields: More template fields (``partner``, ``members``).
    """

    speaker: PersonaAgent
    template: str
    listeners: list[PersonaAgent]
    fields: dict[str, str] = field(default_factory=dict)


class Stage(Society, TypingProtocol):
    """What a protocol uses of the model (the model satisfies it)."""

    scenario: Scenario
    graph: nx.Graph
    rng: np.random.Generator

    def agent_at(self, node: int) -> PersonaAgent:
        """The agent on graph node ``node``."""
        ...

    def active_agents(self) -> Sequence[PersonaAgent]:
        """Agents not removed by an intervention, in node order."""
        ...

    def discuss(
        self, record: StepRecord, topic: Topic, step: int, conversations: list[list[Turn]]
    ) -> None:
        """Run conversations concurrently (turns in order) and apply them in plan order."""
        ...


class Protocol:
    """An interaction protocol: one step's interaction, as a strategy object.

    Subclass it and override :meth:`plan` (or :meth:`run` for an interaction that is not
    conversations). Give the class a ``name``: it is written in the transcript's events
    (``mode``); without one the class name in snake case is used.

    Attributes:
        name: The protocol's name in events and the registry.
        logs_conversations: Whether each conversation is logged as a ``conversation``
            event (who took part) before its messages.
    """

    name: ClassVar[str] = ""
    logs_conversations: ClassVar[bool] = True

    def run(self, model: Stage, record: StepRecord, step: int, topic: Topic) -> None:
        """Carry out step ``step``'s interaction on ``topic`` (its events go to ``record``)."""
        model.discuss(record, topic, step, self.plan(model, step, topic))

    def plan(self, model: Stage, step: int, topic: Topic) -> list[list[Turn]]:
        """The step's conversations, each a list of turns taken in order."""
        raise NotImplementedError(f"{type(self).__name__} must define plan() or run()")


class Broadcast(Protocol):
    """Every active agent posts once to its neighbours."""

    name = "broadcast"
    logs_conversations = False

    def plan(self, model: Stage, step: int, topic: Topic) -> list[list[Turn]]:
        """One single-turn conversation per active agent, in node order."""
        return [[Turn(a, "post", a.neighbours())] for a in model.active_agents()]


class Pairs(Protocol):
    """A random maximal matching along edges: each pair talks (open, reply)."""

    name = "pairs"

    def plan(self, model: Stage, step: int, topic: Topic) -> list[list[Turn]]:
        """One two-turn conversation per matched pair."""
        return [
            [
                Turn(a, "pair_open", [b], {"partner": b.name}),
                Turn(b, "pair_reply", [a], {"partner": a.name}),
            ]
            for a, b in matching(model)
        ]


def matching(model: Stage) -> list[tuple[PersonaAgent, PersonaAgent]]:
    """A random maximal matching along edges; the first of each pair opens."""
    edges = sorted((min(u, v), max(u, v)) for u, v in model.graph.edges())
    order = model.rng.permutation(len(edges))
    taken: set[int] = set()
    pairs = []
    for i in order:
        u, v = edges[int(i)]
        if u in taken or v in taken:
            continue
        taken.update((u, v))
        if model.rng.random() < 0.5:
            u, v = v, u
        pairs.append((model.agent_at(u), model.agent_at(v)))
    return pairs


class Group(Protocol):
    """Groups of ``protocol.group_size`` talk for ``protocol.rounds`` rounds.

    Groups are a seeded random partition, or (``grouping: balanced``) composed by the
    members' latest private answers on the step's topic (:mod:`simworld.engine.grouping`).
    A speaker is heard by the members it shares an edge with.
    """

    name = "group"

    def plan(self, model: Stage, step: int, topic: Topic) -> list[list[Turn]]:
        """One conversation per group."""
        return [self.conversation(model, members) for members in self.groups(model, step, topic)]

    def groups(self, model: Stage, step: int, topic: Topic) -> list[list[PersonaAgent]]:
        """The step's groups of active agents."""
        protocol = model.scenario.protocol
        nodes = [a.node for a in model.active_agents()]
        if protocol.grouping == "balanced":
            latest = model.latest_answers(topic.id, before=step)
            answers = [latest.get(model.agent_at(n).key) for n in nodes]
            groups = balanced_groups(nodes, answers, protocol.group_size, model.rng, offset=step)
        else:
            groups = random_groups(nodes, protocol.group_size, model.rng)
        return [[model.agent_at(n) for n in g] for g in groups]

    def conversation(self, model: Stage, members: list[PersonaAgent]) -> list[Turn]:
        """``rounds`` rounds in which every member speaks once, in group order."""
        turns = []
        for _ in range(model.scenario.protocol.rounds):
            for speaker in members:
                listeners = [
                    m
                    for m in members
                    if m is not speaker and model.graph.has_edge(m.node, speaker.node)
                ]
                others = ", ".join(m.name for m in members if m is not speaker)
                turns.append(Turn(speaker, "group_turn", listeners, {"members": others}))
        return turns


class Asch(Protocol):
    """Asch-style conformity trials instead of conversations (:mod:`simworld.engine.asch`)."""

    name = "asch"
    logs_conversations = False

    def run(self, model: Stage, record: StepRecord, step: int, topic: Topic) -> None:
        """Every active agent answers every topic after the scripted peers."""
        run_trials(model, record, step)


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (Broadcast(), Pairs(), Group(), Asch())}
"""The registry: protocol name -> instance (the shipped modes and any registered)."""
SHIPPED = ("broadcast", "pairs", "group", "asch")


def protocol_name(protocol: Protocol) -> str:
    """The protocol's name: its ``name``, else its class name in snake case."""
    return protocol.name or snake_case(type(protocol).__name__)


def register_protocol(protocol: Protocol) -> Protocol:
    """Register ``protocol`` under its name so scenarios can select it as ``protocol.mode``.

    A name registered from Python is known only to the process that registered it; to let
    ``simworld replay``/``resume`` rebuild a run, select the class by ``path.py:Class`` instead.

    Raises:
        TypeError: ``protocol`` is not a :class:`Protocol` instance (a class, say).
        ValueError: The name is a shipped protocol's, or taken by another protocol.
    """
    if not isinstance(protocol, Protocol):
        what = "a class" if isinstance(protocol, type) else type(protocol).__name__
        raise TypeError(f"register_protocol takes a Protocol instance, not {what}")
    name = protocol_name(protocol)
    current = PROTOCOLS.get(name)
    if name in SHIPPED or (current is not None and current is not protocol):
        raise ValueError(f"protocol name {name!r} is already taken")
    PROTOCOLS[name] = protocol
    return protocol


def resolve_protocol(mode: str, *, source: str | Path = "<scenario>") -> Protocol:
    """The protocol ``protocol.mode`` names: a registered name, or a user's class.

    ``path.py:Class`` / ``package.module:Class`` name a :class:`Protocol` subclass (built
    with no arguments) or instance.

    Raises:
        ConfigError: Unknown name, import failure, or not a :class:`Protocol`.
    """
    if mode in PROTOCOLS:
        return PROTOCOLS[mode]
    if not is_plugin_spec(mode):
        known = ", ".join(sorted(PROTOCOLS))
        msg = (
            f"unknown protocol {mode!r} (known: {known}); a protocol registered from Python "
            "(register_protocol) exists only in the process that registered it: name its "
            "class as path.py:Class or module:Class"
        )
        raise ConfigError(source, "protocol.mode", msg)
    field = "protocol.mode"
    found = import_object(mode, source=source, field=field)
    if isinstance(found, type) and issubclass(found, Protocol):
        try:
            found = found()
        except Exception as exc:
            raise build_error(exc, source=source, field=field, spec=mode) from exc
    if not isinstance(found, Protocol):
        msg = f"{mode}: not a simworld.engine.protocols.Protocol subclass"
        raise ConfigError(source, field, msg)
    calls = {"run": ("run(model, record, step, topic)", 4), "plan": ("plan(model, step, topic)", 3)}
    for method, (call, n_args) in calls.items():
        if getattr(type(found), method) is not getattr(Protocol, method):
            function = getattr(found, method)
            check_call(function, n_args, source=source, field=field, spec=mode, call=call)
    return found


__all__ = [
    "PROTOCOLS",
    "Asch",
    "Broadcast",
    "Group",
    "Pairs",
    "Protocol",
    "Stage",
    "Turn",
    "matching",
    "protocol_name",
    "register_protocol",
    "resolve_protocol",
]
