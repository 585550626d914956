"""Building a scenario's population and checking personas against its topics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simworld.config.persona import (
    OpinionValue,
    Persona,
    load_library,
    opinion_value,
    sample_from_distributions,
    sample_from_library,
)
from simworld.config.scenario import Scenario, Topic
from simworld.errors import ConfigError


def build_population(
    scenario: Scenario, rng: np.random.Generator, *, source: str | Path
) -> list[Persona]:
    """Draw the scenario's personas, once every opinion they could be drawn with fits the
    topics' scales (so whether a scenario is valid does not depend on its seed).

    Args:
        scenario: The scenario.
        rng: Seeded generator.
        source: The scenario file, named in errors.

    Returns:
        The population in draw order.

    Raises:
        ConfigError: The library is bad or too small, a persona of the library holds an
            off-scale opinion, or ``distributions.opinions`` names a topic the scenario lacks
            or an answer off its scale.
    """
    pop = scenario.population
    topics = {t.id: t for t in scenario.topics}
    if pop.library is not None:
        library = load_library(pop.library)
        for i, persona in enumerate(library.personas):
            for topic_id, value in persona.opinions.items():
                if topic_id in topics:  # a library may hold opinions on others' topics
                    where = f"personas[{i}].opinions.{topic_id}"
                    _check_on_scale(value, topics[topic_id], pop.library, where)
        try:
            return sample_from_library(library, pop.size, rng, replace=pop.replace)
        except ValueError as exc:
            raise ConfigError(source, "population.size", str(exc)) from exc
    assert pop.distributions is not None
    for topic_id, weights in pop.distributions.opinions.items():
        where = f"population.distributions.opinions.{topic_id}"
        if topic_id not in topics:
            known = ", ".join(topics)
            raise ConfigError(source, where, f"not a topic of the scenario ({known})")
        for key in weights:
            _check_on_scale(opinion_value(key), topics[topic_id], source, where)
    return sample_from_distributions(pop.distributions, pop.size, rng)


def seed_drawn_ids(scenario: Scenario) -> str | None:
    """Why which persona ids the population holds depends on the seed (a sample of a
    library, or a draw with replacement), or ``None`` when every seed holds the same ids.

    An edge list may name agents by persona id only when the ids do not depend on the seed
    (:func:`simworld.society.network.build_graph`); otherwise a file valid for one seed
    would fail for another.
    """
    pop = scenario.population
    if pop.library is None:
        return None  # synthetic personas: synthetic-000 ... whatever the seed
    if pop.replace:
        return f"population.replace draws {pop.size} personas with replacement"
    available = len(load_library(pop.library).personas)
    if pop.size < available:
        return f"population.size draws {pop.size} of the library's {available} personas"
    return None


def _check_on_scale(value: OpinionValue, topic: Topic, origin: str | Path, where: str) -> None:
    allowed = topic.scale.values
    if value not in allowed:
        raise ConfigError(origin, where, f"{value!r} is not on the topic's scale {allowed}")
