"""Narrow views of the model and its agents: what the step helpers may use, and no more.

The helpers (annotation, Asch trials, BFI probes, interventions, baseline policies) and the
persona agent type their argument with these protocols instead of the model class, so they
do not import the model and the model imports them without a cycle.
:class:`~simworld.engine.model.SocialSimulation` and
:class:`~simworld.engine.agent.PersonaAgent` satisfy them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Protocol

import networkx as nx
import numpy as np
from pydantic import BaseModel

from simworld.config.persona import Persona
from simworld.config.scenario import Scenario, Topic
from simworld.llm.gateway import Gateway
from simworld.llm.types import LLMRequest
from simworld.memory.base import Memory
from simworld.memory.system import MemorySystem


class AgentHost(Protocol):
    """What a persona agent reads of its model."""

    scenario: Scenario
    gateway: Gateway
    graph: nx.Graph
    memory_system: MemorySystem

    def agent_at(self, node: int) -> AgentView:
        """The agent on graph node ``node``."""
        ...


class AgentView(Protocol):
    """What the step helpers use of an agent."""

    persona: Persona
    node: int
    baseline: bool
    active: bool
    memory: Memory

    @property
    def model(self) -> AgentHost:
        """The agent's model."""
        ...

    @property
    def key(self) -> str:
        """The agent's id (its persona id)."""
        ...

    @property
    def name(self) -> str:
        """Display name."""
        ...

    def remember(self, *, step: int, kind: Any, speaker: str, topic: str, text: str) -> None:
        """Store a memory."""
        ...

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
        """A request with the agent's system prompt and identity."""
        ...

    def answer_request(
        self,
        topic: Topic,
        *,
        step: int,
        template: str = "probe",
        heard: list[tuple[str, str]] | None = None,
    ) -> tuple[LLMRequest, type[BaseModel]]:
        """A private question on ``topic`` and its answer model."""
        ...


class Society(Protocol):
    """What the step helpers use of the model."""

    scenario: Scenario
    gateway: Gateway
    graph: nx.Graph
    rng: np.random.Generator
    peer_answers: dict[str, str]

    @property
    def population(self) -> Sequence[AgentView]:
        """Agents in node order."""
        ...

    def active_agents(self) -> Sequence[AgentView]:
        """Agents not removed by an intervention, in node order."""
        ...

    def latest_answers(self, topic_id: str, *, before: int) -> dict[str, str | None]:
        """Agent → latest private answer on ``topic_id`` before step ``before``."""
        ...

    def listeners(self, message: dict[str, Any]) -> list[str]:
        """The ids of the agents a ``message`` event of this run reached."""
        ...

    def gather(
        self, aws: Iterable[Awaitable[Any]], *, return_exceptions: bool = False
    ) -> list[Any]:
        """Run awaitables concurrently; results in input order."""
        ...
