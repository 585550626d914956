"""``protocol.probe_batch``: all the topics of one agent's probe in one structured call.

By default a probe makes one call per topic. With ``probe_batch`` an agent whose probe asks
about several topics gets one questionnaire instead: one item per topic (``Question q1.``,
its ``Topic:`` line, its options, the memories recalled for it) and one structured answer
``{"q1": <code>, "q2": <code>, …}``. Counterbalancing stays per topic: each item shows its
options in the order drawn from the identity the unbatched probe of that topic would have
(:func:`simworld.engine.counterbalance.shown_order`), so the orders are the same as without
batching, and each answer is mapped back through its own item's order.

The trade-off in measurement: the answers are given together, so one topic's answer can prime
the next (item order is the scenario's topic order), and no option probabilities are asked
for (``probs`` is null). The call's purpose is ``probes:<topic>+<topic>…``; every topic's
probe row names the same call.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

from simworld.config.scenario import Topic
from simworld.engine.agent import PersonaAgent
from simworld.engine.counterbalance import ShownOrder, options_lines, shown_order
from simworld.llm.types import CallIdentity, LLMRequest
from simworld.prompts import render as prompts

BATCH_PURPOSE = "probes:{topics}"
"""The purpose of a batched probe call: the topic ids joined by ``+``."""


def item_field(index: int) -> str:
    """The answer field of the ``index``-th (0-based) item: ``q1``, ``q2`` and so on."""
    return f"q{index + 1}"


@cache
def _batch_model(name: str, items: tuple[tuple[int | str, ...], ...]) -> type[BaseModel]:
    # Literal[values] is built at run time: a value, not a static type
    fields: dict[str, Any] = {
        item_field(i): (Literal[values], ...) for i, values in enumerate(items)
    }
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def batch_model(topics: list[Topic]) -> type[BaseModel]:
    """``{"q1": <a value of topic 1>, "q2": …}`` for ``topics`` in order."""
    name = "Probes_" + "_".join(t.id for t in topics)
    return _batch_model(name, tuple(tuple(t.scale.values) for t in topics))


def batch_request(
    agent: PersonaAgent, topics: list[Topic], *, step: int
) -> tuple[LLMRequest, type[BaseModel], list[ShownOrder]]:
    """One private, structured request for the agent's opinion on every topic of ``topics``.

    Returns:
        The request, its answer model and the order each item shows its options in.
    """
    scenario = agent.model.scenario
    orders = [
        shown_order(
            topic,
            CallIdentity(scenario.seed, agent.key, step, f"probe:{topic.id}", 0),
            counterbalance=scenario.protocol.counterbalance,
        )
        for topic in topics
    ]
    items = [
        prompts.render(
            "probe_batch_item",
            field=item_field(i),
            statement=topic.statement,
            options=prompts.options_block(topic, options_lines(topic, order)),
            memories=agent.probe_memories(topic, step=step),
            values=", ".join(str(v) for v in topic.scale.values),
        )
        for i, (topic, order) in enumerate(zip(topics, orders, strict=True))
    ]
    example = "{" + ", ".join(f'"{item_field(i)}": …' for i in range(len(topics))) + "}"
    user = prompts.render("probe_batch", items="\n".join(items), example=example)
    schema = batch_model(topics)
    purpose = BATCH_PURPOSE.format(topics="+".join(t.id for t in topics))
    request = agent.request(user, step=step, purpose=purpose, schema=schema)
    return request, schema, orders


__all__ = ["BATCH_PURPOSE", "batch_model", "batch_request", "item_field"]
