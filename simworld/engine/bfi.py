"""Big Five inventory as a private probe: seeded item/option order, request and event."""

from __future__ import annotations

import string
from functools import cache, partial
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

from simworld.config.trackers import BfiConfig
from simworld.engine.context import AgentView, Society
from simworld.engine.record import Job
from simworld.llm.gateway import CallOutcome
from simworld.llm.types import LLMRequest
from simworld.measures.personality import (
    INVENTORIES,
    LIKERT_LABELS,
    LIKERT_MAX,
    LIKERT_MIN,
    STEM,
    Administration,
    randomize_administration,
)
from simworld.prompts import render as prompts
from simworld.support.events import Event, EventType
from simworld.support.hashing import derive_seed

BFI_PURPOSE = "bfi:{inventory}"
LETTERS = string.ascii_uppercase[: LIKERT_MAX - LIKERT_MIN + 1]


def administration_seed(seed: int, agent: str, step: int) -> int:
    """The seed of one administration, derived from the run seed, agent and step."""
    return derive_seed({"seed": seed, "agent": agent, "step": step, "for": "bfi"})


@cache
def bfi_model(n_items: int) -> type[BaseModel]:
    """``{"q1": "A".."E", …, "qN": …}``: one letter per shown position."""
    letter: Any = Literal[tuple(LETTERS)]  # built at run time: a value, not a static type
    fields: dict[str, Any] = {f"q{i}": (letter, ...) for i in range(1, n_items + 1)}
    return create_model(f"Bfi{n_items}", __config__=ConfigDict(extra="forbid"), **fields)


def _memories(agent: AgentView) -> str:
    window = agent.model.scenario.protocol.memory_window
    items = [m for t in agent.model.scenario.topics for m in agent.memory.recall(t.id, window)]
    items.sort(key=lambda m: m.step)  # stable: topic order within a step
    return prompts.memories_block((m.speaker, m.text) for m in items[-window:] if window > 0)


def bfi_request(
    agent: AgentView, *, step: int, config: BfiConfig
) -> tuple[LLMRequest, type[BaseModel], Administration]:
    """A private, structured BFI administration for ``agent`` at ``step`` (docs/metrics.md §4).

    Items and options are shown in the order of a seeded
    :func:`~simworld.measures.randomize_administration` (one option order for all items);
    options are lettered A–E in shown order, so an answer letter decodes to a Likert value
    through :meth:`Administration.value_at`. Recent memories on every topic are included,
    as in opinion probes; nothing enters memory.

    Returns:
        The request, its answer model, and the administration (to be recorded).
    """
    seed = administration_seed(agent.model.scenario.seed, agent.key, step)
    admin = randomize_administration(
        seed=seed,
        inventory=config.inventory,
        shuffle_items=config.shuffle_items,
        shuffle_options=config.shuffle_options,
    )
    items = {it.number: it for it in INVENTORIES[config.inventory]}
    lines = [
        prompts.render("bfi_item_line", position=pos, stem=STEM, text=items[num].text)
        for pos, num in enumerate(admin.item_order, start=1)
    ]
    first = admin.item_order[0]
    options = "\n".join(
        prompts.render("bfi_option_line", letter=LETTERS[pos], label=LIKERT_LABELS[value - 1])
        for pos, value in enumerate(admin.option_orders[first])
    )
    example = ", ".join(f'"q{i}": "{LETTERS[i % len(LETTERS)]}"' for i in (1, 2))
    user = prompts.render(
        "bfi",
        memories=_memories(agent),
        items="\n".join(lines),
        options=options,
        example="e.g. {" + example + ", …}",
    )
    schema = bfi_model(len(admin.item_order))
    purpose = BFI_PURPOSE.format(inventory=config.inventory)
    request = agent.request(user, step=step, purpose=purpose, schema=schema)
    return request, schema, admin


def bfi_event(
    agent: str, step: int, config: BfiConfig, admin: Administration, outcome: CallOutcome
) -> Event:
    """The ``bfi`` event: the recorded orders and the decoded answers.

    ``responses`` maps item number (inventory numbering, as a string key) to the Likert
    value 1..5 chosen, or null for every item when the call failed (missing, never a value).
    """
    parsed = outcome.parsed if outcome.ok and outcome.parsed else None
    responses: dict[str, int | None] = {}
    for pos, number in enumerate(admin.item_order, start=1):
        letter = None if parsed is None else parsed.get(f"q{pos}")
        value = None if letter is None else admin.value_at(number, LETTERS.index(letter))
        responses[str(number)] = value
    return {
        "type": EventType.BFI.value,
        "step": step,
        "agent": agent,
        "inventory": config.inventory,
        "seed": admin.seed,
        "item_order": list(admin.item_order),
        "option_order": list(admin.option_orders[admin.item_order[0]]),
        "responses": responses,
        "ok": outcome.ok,
        "call": outcome.key,
    }


def bfi_jobs(model: Society, step: int) -> list[Job]:
    """The BFI administrations due at ``step``, one per active agent in node order (none if off)."""
    config = model.scenario.trackers.bfi
    if config is None or step not in config.steps:
        return []
    jobs = []
    for agent in model.active_agents():
        request, schema, admin = bfi_request(agent, step=step, config=config)
        jobs.append(Job(request, schema, partial(bfi_event, agent.key, step, config, admin)))
    return jobs


__all__ = ["administration_seed", "bfi_event", "bfi_jobs", "bfi_model", "bfi_request"]
