"""Building a scenario's population and checking personas against its topics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simworld.config.persona import (
    Persona,
    load_library,
    sample_from_distributions,
    sample_from_library,
)
from simworld.config.scenario import Scenario
from simworld.errors import ConfigError


def build_population(
    scenario: Scenario, rng: np.random.Generator, *, source: str | Path
) -> list[Persona]:
    """Draw the scenario's personas and check their opinions fit the topics' scales.

    Args:
        scenario: The scenario.
        rng: Seeded generator.
        source: The scenario file, named in errors.

    Returns:
        The population in draw order.

    Raises:
        ConfigError: The library is bad, too small, or a persona's opinion is off-scale.
    """
    pop = scenario.population
    if pop.library is not None:
        library = load_library(pop.library)
        try:
            personas = sample_from_library(library, pop.size, rng, replace=pop.replace)
        except ValueError as exc:
            raise ConfigError(source, "population.size", str(exc)) from exc
        origin: str | Path = pop.library
        positions = {p.id: i for i, p in enumerate(library.personas)}
    else:
        assert pop.distributions is not None
        personas = sample_from_distributions(pop.distributions, pop.size, rng)
        origin, positions = source, {}
    for persona in personas:
        base_id = persona.id if persona.id in positions else persona.id.rsplit("-", 1)[0]
        where = (
            f"personas[{positions[base_id]}]"
            if base_id in positions
            else "population.distributions"
        )
        for topic in scenario.topics:
            if topic.id not in persona.opinions:
                continue
            value = persona.opinions[topic.id]
            allowed = topic.scale.values
            if value not in allowed:
                raise ConfigError(
                    origin,
                    f"{where}.opinions.{topic.id}",
                    f"{value!r} is not on the topic's scale {allowed}",
                )
    return personas
