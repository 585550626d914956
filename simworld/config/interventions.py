"""The ``interventions:`` section of a scenario: broadcasts, removals and rewiring at set steps."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

DEFAULT_SOURCE = "Official fact-check"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Scheduled(_Strict):
    step: int = Field(ge=1)
    """The step at whose start the intervention happens (before that step's conversations)."""


class Selection(_Strict):
    """Which agents a removal takes.

    Attributes:
        count: How many agents (fewer if fewer qualify).
        by: ``degree``: highest degree first (ties by node); ``random``: seeded draw.
        among: ``all`` active agents, or only those ``believing`` the claim of
            ``trackers.belief`` at the latest probe before the intervention.
    """

    count: int = Field(ge=1)
    by: Literal["degree", "random"] = "degree"
    among: Literal["all", "believing"] = "all"


class Broadcast(_Scheduled):
    """A message every active agent receives, from a source outside the network.

    It enters each agent's memory as heard from ``source`` on ``topic`` and is logged as an
    ``intervention`` event listing the recipients.
    """

    kind: Literal["broadcast"]
    topic: str
    text: str = Field(min_length=3)
    source: str = Field(default=DEFAULT_SOURCE, min_length=1)


class Removal(_Scheduled):
    """Agents leave the network: their edges go, and they no longer speak, hear or answer.

    Give ``agents`` (persona ids) or ``select``.
    """

    kind: Literal["remove"]
    agents: list[str] | None = Field(default=None, min_length=1)
    select: Selection | None = None

    @model_validator(mode="after")
    def _one_choice(self) -> Removal:
        if (self.agents is None) == (self.select is None):
            raise ValueError("give exactly one of 'agents' or 'select'")
        if self.agents is not None and len(set(self.agents)) != len(self.agents):
            twice = next(a for a in self.agents if self.agents.count(a) > 1)
            raise ValueError(f"agents: {twice!r} is listed twice")
        return self


class Rewiring(_Scheduled):
    """Each edge between active agents is rewired with probability ``p``.

    A rewired edge keeps one end (each with probability 1/2) and moves its other end to an
    active agent drawn uniformly among those not yet linked to the kept end (seeded draws, in
    sorted edge order); the number of edges stays the same.
    """

    kind: Literal["rewire"]
    p: float = Field(gt=0.0, le=1.0)


class CustomIntervention(_Scheduled):
    """An intervention type of your own (:mod:`simworld.engine.interventions`).

    Attributes:
        type: The class: ``path.py:Class`` (relative to the scenario file) or
            ``package.module:Class``. It is built with ``params`` as keyword arguments and
            its ``apply(model, step)`` carries the intervention out.
        params: Keyword arguments of the class.
    """

    kind: Literal["custom"]
    type: str = Field(pattern=r"^.+:[A-Za-z_]\w*$")
    params: dict[str, JsonValue] = Field(default_factory=dict)


Intervention = Annotated[
    Broadcast | Removal | Rewiring | CustomIntervention, Field(discriminator="kind")
]

__all__ = [
    "DEFAULT_SOURCE",
    "Broadcast",
    "CustomIntervention",
    "Intervention",
    "Removal",
    "Rewiring",
    "Selection",
]
