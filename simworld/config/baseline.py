"""The ``baseline:`` section of a scenario: classical opinion dynamics as agent policies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_SHARE = 1.0
DEFAULT_SELF_WEIGHT = 1.0
DEFAULT_SUSCEPTIBILITY = 0.5
DEFAULT_CONFIDENCE = 0.5
DEFAULT_CONVERGENCE = 0.3

BaselineName = Literal["degroot", "friedkin_johnsen", "hegselmann_krause", "deffuant_weisbuch"]


class BaselineConfig(BaseModel):
    """Some (or all) agents follow a classical update rule instead of calling a model.

    Attributes:
        model: ``degroot``, ``friedkin_johnsen``, ``hegselmann_krause`` or
            ``deffuant_weisbuch`` (docs/metrics.md §7, :mod:`simworld.engine.baselines`).
        share: Fraction of agents that use the baseline, picked with the run's seeded rng
            (``round(share * n)``, at least one).
        self_weight: DeGroot / Friedkin–Johnsen weight of an agent's own opinion.
        susceptibility: Friedkin–Johnsen λ (1: pure DeGroot, 0: never moves).
        epsilon: Confidence bound of Hegselmann–Krause and Deffuant–Weisbuch.
        mu: Deffuant–Weisbuch convergence rate.
    """

    model_config = ConfigDict(extra="forbid")

    model: BaselineName
    share: float = Field(default=DEFAULT_SHARE, gt=0.0, le=1.0)
    self_weight: float = Field(default=DEFAULT_SELF_WEIGHT, ge=0.0)
    susceptibility: float = Field(default=DEFAULT_SUSCEPTIBILITY, ge=0.0, le=1.0)
    epsilon: float = Field(default=DEFAULT_CONFIDENCE, gt=0.0)
    mu: float = Field(default=DEFAULT_CONVERGENCE, gt=0.0, le=0.5)


__all__ = ["BaselineConfig"]
