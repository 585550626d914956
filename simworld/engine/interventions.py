"""Scheduled interventions: a broadcast correction, removing agents, rewiring the network.

Each intervention of the scenario's ``interventions:`` list happens at the start of its step,
before that step's conversations, in list order, and is logged as one ``intervention`` event
(see :func:`apply_intervention`). Random choices use the model's seeded generator, so a run
is reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from simworld.config.interventions import (
    Broadcast,
    CustomIntervention,
    Intervention,
    Removal,
    Rewiring,
    Selection,
)
from simworld.engine.context import AgentView, Society
from simworld.errors import ConfigError, PluginError
from simworld.measures import believes
from simworld.support.events import Event, EventType, event_problem
from simworld.support.plugins import build_error, check_call, import_object, snake_case

Edge = list[int]
RESERVED = ("type", "step", "index", "kind")
"""Event keys a custom intervention's ``apply`` may not set."""


class UserIntervention(Protocol):
    """What an intervention type of your own provides (``kind: custom``)."""

    def apply(self, model: Society, step: int) -> dict[str, Any]:
        """Carry the intervention out; return the event's own fields (JSON values)."""
        ...


def load_custom(
    interventions: list[Intervention], *, source: str | Path = "<scenario>"
) -> dict[int, UserIntervention]:
    """Build the scenario's custom interventions (by index in its list) from their classes.

    Raises:
        ConfigError: A class cannot be imported, has no ``apply``, or rejects ``params``.
    """
    built: dict[int, UserIntervention] = {}
    for i, item in enumerate(interventions):
        if not isinstance(item, CustomIntervention):
            continue
        field = f"interventions[{i}].type"
        cls = import_object(item.type, source=source, field=field)
        if not isinstance(cls, type) or not callable(getattr(cls, "apply", None)):
            raise ConfigError(source, field, f"{item.type}: needs a class with apply(model, step)")
        try:
            built[i] = cls(**item.params)
        except TypeError as exc:
            raise ConfigError(source, f"interventions[{i}].params", str(exc)) from exc
        except Exception as exc:
            raise build_error(exc, source=source, field=field, spec=item.type) from exc
        call = "apply(model, step)"
        check_call(built[i].apply, 2, source=source, field=field, spec=item.type, call=call)
    return built


def custom_name(handler: UserIntervention) -> str:
    """A custom intervention's ``kind`` in events: its ``name``, else its class in snake case."""
    return getattr(handler, "name", "") or snake_case(type(handler).__name__)


def due(interventions: list[Intervention], step: int) -> list[tuple[int, Intervention]]:
    """The interventions scheduled for ``step``, with their index in the scenario's list."""
    return [(i, item) for i, item in enumerate(interventions) if item.step == step]


def apply_intervention(
    model: Society,
    item: Intervention,
    *,
    index: int,
    custom: UserIntervention | None = None,
) -> Event:
    """Carry out one intervention on the model and return its transcript event.

    Events (``type: intervention``, with ``step``, ``index`` and ``kind``):

    - ``broadcast``: ``source``, ``topic``, ``text`` and ``to`` (recipients' ids); every
      active agent remembers the text as heard from ``source``;
    - ``remove``: ``agents`` (ids, removal order) and ``edges_removed`` (node pairs);
    - ``rewire``: ``edges_removed`` and ``edges_added`` (node pairs, in rewiring order);
    - ``custom``: the fields ``custom.apply(model, step)`` returns; ``kind`` is the custom
      type's name (:func:`custom_name`).

    Raises:
        ValueError: A custom intervention without its built ``custom`` object.
        PluginError: Its ``apply`` returned no dict, set a reserved key, or returned a value
            that does not serialise as JSON.
    """
    event: Event = {
        "type": EventType.INTERVENTION.value,
        "step": item.step,
        "index": index,
        "kind": item.kind,
    }
    if isinstance(item, Broadcast):
        event.update(_broadcast(model, item))
    elif isinstance(item, Removal):
        event.update(_remove(model, item))
    elif isinstance(item, CustomIntervention):
        if custom is None:
            raise ValueError(f"interventions[{index}]: custom intervention not built")
        fields = custom.apply(model, item.step)
        if not isinstance(fields, dict) or any(k in RESERVED for k in fields):
            raise PluginError(
                f"interventions[{index}].type: {item.type}: apply() must return a dict without "
                f"the keys {RESERVED}"
            )
        event["kind"] = custom_name(custom)
        event.update(fields)
        problem = event_problem(event)
        if problem is not None:
            raise PluginError(f"interventions[{index}].type: {item.type}: apply() made {problem}")
    else:
        event.update(_rewire(model, item))
    return event


def _broadcast(model: Society, item: Broadcast) -> Event:
    recipients = model.active_agents()
    for agent in recipients:
        agent.remember(
            step=item.step,
            kind="observation",
            speaker=item.source,
            topic=item.topic,
            text=item.text,
        )
    return {
        "source": item.source,
        "topic": item.topic,
        "text": item.text,
        "to": [a.key for a in recipients],
    }


def _remove(model: Society, item: Removal) -> Event:
    if item.agents is not None:
        by_key = {a.key: a for a in model.population}
        chosen = [by_key[key] for key in item.agents if by_key[key].active]
    else:
        assert item.select is not None  # the schema requires one of the two
        chosen = _select(model, item.select, item.step)
    removed: list[Edge] = []
    for agent in chosen:
        for other in sorted(model.graph.neighbors(agent.node)):
            removed.append(sorted((agent.node, other)))
        model.graph.remove_edges_from(list(model.graph.edges(agent.node)))
        agent.active = False
    return {"agents": [a.key for a in chosen], "edges_removed": removed}


def _select(model: Society, select: Selection, step: int) -> list[AgentView]:
    """The agents a selection takes, among active ones (believing ones if asked)."""
    candidates = list(model.active_agents())
    if select.among == "believing":
        belief = model.scenario.trackers.belief
        assert belief is not None  # the schema requires trackers.belief for this
        latest = model.latest_answers(belief.topic, before=step)
        candidates = [a for a in candidates if believes(latest.get(a.key), belief.believe_at)]
    if select.by == "degree":
        candidates.sort(key=lambda a: (-model.graph.degree(a.node), a.node))
        return candidates[: select.count]
    if len(candidates) <= select.count:
        return candidates
    picks = model.rng.choice(len(candidates), size=select.count, replace=False)
    return [candidates[int(i)] for i in sorted(picks)]


def _rewire(model: Society, item: Rewiring) -> Event:
    graph, rng = model.graph, model.rng
    active = sorted(a.node for a in model.active_agents())
    removed: list[Edge] = []
    added: list[Edge] = []
    for u, v in sorted((min(e), max(e)) for e in graph.edges()):
        if rng.random() >= item.p:
            continue
        keep = u if rng.random() < 0.5 else v
        taken = set(graph.neighbors(keep)) | {keep}
        options = [n for n in active if n not in taken]
        if not options:
            continue
        new = options[int(rng.integers(len(options)))]
        graph.remove_edge(u, v)
        graph.add_edge(keep, new)
        removed.append([u, v])
        added.append(sorted((keep, new)))
    return {"edges_removed": removed, "edges_added": added}


__all__ = ["UserIntervention", "apply_intervention", "custom_name", "due", "load_custom"]
