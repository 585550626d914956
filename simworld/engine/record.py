"""What a step produces: the step record (events and calls in a fixed order) and tracker jobs.

The run writer reads :class:`StepRecord`; the step helpers fill it. Neither needs the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from simworld.llm.gateway import CallOutcome
from simworld.llm.types import LLMRequest
from simworld.support.events import Event, EventType


@dataclass
class StepRecord:
    """Everything one step (or the initial probe at step 0) produced, in a fixed order."""

    step: int
    events: list[Event] = field(default_factory=list)
    calls: list[CallOutcome] = field(default_factory=list)

    def call(self, outcome: CallOutcome) -> None:
        """Log one model call."""
        self.calls.append(outcome)
        self.events.append({"type": EventType.LLM_CALL.value, **outcome.record()})


@dataclass(frozen=True)
class Job:
    """One tracker call of a step: the request, its answer model, and the event it yields."""

    request: LLMRequest
    schema: type[BaseModel]
    event: Callable[[CallOutcome], Event]
