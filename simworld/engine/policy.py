"""Classical opinion dynamics as drop-in agent policies: baseline agents make no model calls.

A scenario's ``baseline:`` section (:class:`~simworld.config.baseline.BaselineConfig`) turns a
seeded share of the agents into baseline agents. Each holds a continuous opinion per
(Likert) topic, starting at its persona's assigned value (the scale midpoint when the persona
has none). It speaks by stating that position (template ``baseline_message``), its stance is
read off directly, and a probe returns the value itself. After each step's interaction the
opinion vector over *all* agents on the step's topic is updated with the chosen dynamics on
the scenario's graph; only baseline agents take the new values. LLM agents enter as inputs
with their latest valid probed value (their assigned value, or the midpoint, before any).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx
import numpy as np

from simworld.config.baseline import BaselineConfig
from simworld.config.persona import Persona
from simworld.config.scenario import Topic
from simworld.engine.baselines import Dynamics, make_dynamics
from simworld.engine.context import AgentView
from simworld.prompts import render as prompts
from simworld.support.events import Event, EventType


@dataclass(frozen=True)
class Statement:
    """A baseline agent's public message; like a successful call outcome, without a call."""

    text: str
    ok: bool = True


def midpoint(topic: Topic) -> float:
    """The middle of a Likert scale ``1..K``: ``(1 + K) / 2``."""
    return (1 + len(topic.scale.values)) / 2


def nearest_value(x: float, topic: Topic) -> int:
    """The scale value nearest to ``x`` (halves round up), clipped to ``1..K``."""
    return min(max(math.floor(x + 0.5), 1), len(topic.scale.values))


def initial_opinion(persona: Persona, topic: Topic) -> float:
    """The persona's assigned opinion on ``topic``, or the scale midpoint when it has none."""
    value = persona.opinions.get(topic.id)
    return midpoint(topic) if value is None else float(value)


def choose_nodes(n: int, share: float, rng: np.random.Generator) -> list[int]:
    """The baseline agents' nodes: ``round(share * n)`` of ``0..n-1`` (at least one), seeded.

    A share of 1 takes everyone without drawing from ``rng``.
    """
    k = min(n, max(1, round(share * n)))
    if k == n:
        return list(range(n))
    return sorted(int(i) for i in rng.choice(n, size=k, replace=False))


class BaselinePolicy:
    """The baseline agents of a run and the opinion vectors they update.

    Args:
        config: The scenario's ``baseline`` section.
        topics: The scenario's topics (all Likert; the scenario schema checks it).
        graph: The social graph on nodes ``0..n-1``.
        personas: Personas in node order.
        rng: The model's seeded generator (agent choice; Deffuant–Weisbuch encounters).
    """

    def __init__(
        self,
        config: BaselineConfig,
        topics: list[Topic],
        graph: nx.Graph,
        personas: list[Persona],
        rng: np.random.Generator,
    ) -> None:
        self.config = config
        self.rng = rng
        self.topics = {t.id: t for t in topics}
        self.nodes = frozenset(choose_nodes(len(personas), config.share, rng))
        self.node_of = {p.id: i for i, p in enumerate(personas)}
        self.x: dict[str, np.ndarray] = {
            t.id: np.array([initial_opinion(p, t) for p in personas], dtype=float) for t in topics
        }
        self.dynamics: dict[str, Dynamics] = {
            tid: make_dynamics(
                config.model,
                graph,
                x0,
                self_weight=config.self_weight,
                susceptibility=config.susceptibility,
                epsilon=config.epsilon,
                mu=config.mu,
            )
            for tid, x0 in self.x.items()
        }
        self._mask = np.zeros(len(personas), dtype=bool)
        self._mask[sorted(self.nodes)] = True

    def is_baseline(self, agent: AgentView) -> bool:
        """Whether ``agent`` follows the baseline rule."""
        return agent.node in self.nodes

    def value(self, agent: AgentView, topic: Topic) -> float:
        """The agent's current continuous opinion on ``topic``."""
        return float(self.x[topic.id][agent.node])

    def statement(self, agent: AgentView, topic: Topic) -> Statement:
        """What a baseline agent says when it speaks: its position, from a template."""
        value = self.value(agent, topic)
        label = topic.scale.label(nearest_value(value, topic))
        return Statement(prompts.render("baseline_message", label=label, value=value))

    def probe_row(self, agent: AgentView, topic: Topic, step: int) -> Event:
        """A baseline agent's opinions row: its value, answered without a call."""
        value = self.value(agent, topic)
        return {
            "step": step,
            "agent": agent.key,
            "topic": topic.id,
            "value": value,
            "answer": str(nearest_value(value, topic)),
            "raw": None,
            "ok": True,
            "call": None,
            "probs": None,
            "expected": None,
        }

    def stance_events(self, events: Iterable[Event], step: int) -> list[Event]:
        """Direct ``stance`` events for the baseline agents' messages of ``step``, in order."""
        out = []
        for message in events:
            if message.get("type") != "message" or message.get("step") != step:
                continue
            node = self.node_of[message["agent"]]
            if node not in self.nodes:
                continue
            topic = self.topics[message["topic"]]
            answer = nearest_value(float(self.x[topic.id][node]), topic)
            out.append(
                {
                    "type": EventType.STANCE.value,
                    "step": step,
                    "agent": message["agent"],
                    "topic": topic.id,
                    "turn": message["turn"],
                    "status": "stated",
                    "answer": str(answer),
                    "value": float(answer),
                    "call": None,
                }
            )
        return out

    def observe(self, events: Iterable[Event]) -> None:
        """Take LLM agents' valid probed values as their current inputs."""
        for event in events:
            if event.get("type") != "probe" or event.get("value") is None:
                continue
            node = self.node_of.get(event["agent"])
            if node is None or node in self.nodes or event["topic"] not in self.x:
                continue
            self.x[event["topic"]][node] = float(event["value"])

    def update(self, topic: Topic) -> None:
        """One step of the dynamics on ``topic``; only baseline agents take the new values."""
        x = self.x[topic.id]
        new = self.dynamics[topic.id].update(x, self.rng)
        self.x[topic.id] = np.where(self._mask, new, x)


__all__ = [
    "BaselinePolicy",
    "Statement",
    "choose_nodes",
    "initial_opinion",
    "midpoint",
    "nearest_value",
]
