"""Persona profiles, persona libraries and the seeded population sampler."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from simworld.errors import ConfigError, config_error_from_validation
from simworld.support.yamlio import read_yaml_mapping, strict_mismatch

LIBRARIES_KEPT = 8
"""Persona libraries :func:`load_library` keeps, read and validated."""
SLUG = r"^[a-z0-9][a-z0-9_\-]*$"
"""An id: a persona's, a topic's, a scenario's name (lowercase letters, digits, ``_``, ``-``)."""

TraitLevel = Annotated[float, Field(ge=1.0, le=5.0)]
OpinionValue = int | str

BIG_FIVE_TRAITS = (
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
)


def is_one_line(text: str) -> bool:
    """Whether ``text`` is one line that is not blank (no control characters): what a name,
    a persona attribute or an answer's text must be to sit in a prompt's line."""
    return bool(text.strip()) and not any(ord(c) < 32 or ord(c) == 127 for c in text)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BigFive(_Strict):
    """Big Five levels on the 1–5 scale of the BFI (3 is the midpoint)."""

    openness: TraitLevel
    conscientiousness: TraitLevel
    extraversion: TraitLevel
    agreeableness: TraitLevel
    neuroticism: TraitLevel


class Persona(_Strict):
    """Who an agent is: identity, demographics, personality, values, opinions and voice.

    Attributes:
        id: Unique slug of the persona within its library.
        name: Display name used in conversation.
        opinions: Initial opinion per topic id (a Likert value or a choice letter).
    """

    id: str = Field(pattern=SLUG)
    name: str = Field(min_length=1)
    age: int = Field(ge=16, le=110)
    gender: str = Field(min_length=1)
    nationality: str = Field(min_length=1)
    culture: str | None = None
    occupation: str = Field(min_length=1)
    education: str = Field(min_length=1)
    big_five: BigFive
    values: list[str] = Field(default_factory=list)
    opinions: dict[str, OpinionValue] = Field(default_factory=dict)
    backstory: str = ""
    speaking_style: str = ""

    @field_validator("name")
    @classmethod
    def _one_line(cls, name: str) -> str:
        """A name heads the agent's lines in others' prompts: one line, not blank."""
        if not is_one_line(name):
            raise ValueError("a name is one line of text: not blank, no control characters")
        return name


class PersonaLibrary(_Strict):
    """A named collection of personas stored as one YAML file under ``agents/``."""

    name: str
    description: str = ""
    personas: list[Persona] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> PersonaLibrary:
        ids: set[str] = set()
        names: set[str] = set()
        for i, p in enumerate(self.personas):
            if p.id in ids:
                raise ValueError(f"personas[{i}].id: duplicate persona id {p.id!r}")
            if p.name in names:  # others hear an agent by its name: two would be one voice
                raise ValueError(f"personas[{i}].name: duplicate persona name {p.name!r}")
            ids.add(p.id)
            names.add(p.name)
        return self


def load_library(path: str | Path) -> PersonaLibrary:
    """Load and validate a persona library.

    A run reads its library several times before it starts (the credential check, drawing
    the population, an edge list's check), and a sweep once per run: a file unchanged since
    it was last read (same path, modification time and size) is not read again.

    Args:
        path: YAML file with ``name``, ``description`` and ``personas``.

    Returns:
        The validated library (frozen; shared by the readers of an unchanged file).

    Raises:
        ConfigError: The file is missing or any field is malformed.
    """
    try:
        stat = Path(path).stat()
    except OSError:
        return _read_library(str(path))  # says what is wrong with the path
    return _unchanged_library(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=LIBRARIES_KEPT)
def _unchanged_library(path: str, mtime_ns: int, size: int) -> PersonaLibrary:
    return _read_library(path)


def _read_library(path: str) -> PersonaLibrary:
    data = read_yaml_mapping(path)
    try:
        library = PersonaLibrary.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(path, exc, data=data) from exc
    mismatch = strict_mismatch(data, library.model_dump())
    if mismatch is not None:
        raise ConfigError(path, *mismatch)
    return library


class PopulationDistributions(_Strict):
    """Attribute distributions for drawing synthetic personas.

    Categorical attributes are ``{value: weight}`` mappings; weights need not sum to 1.
    Big Five levels are drawn from a normal distribution clipped to 1..5.
    """

    nationality: dict[str, float] = Field(min_length=1)
    gender: dict[str, float] = Field(default_factory=lambda: {"woman": 1.0, "man": 1.0})
    age_min: int = Field(default=18, ge=16)
    age_max: int = Field(default=80, le=110)
    occupation: dict[str, float] = Field(default_factory=lambda: {"office worker": 1.0})
    education: dict[str, float] = Field(default_factory=lambda: {"secondary school": 1.0})
    big_five_mean: float = Field(default=3.0, ge=1.0, le=5.0)
    big_five_sd: float = Field(default=0.7, ge=0.0)
    opinions: dict[str, dict[str, float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> PopulationDistributions:
        if self.age_min > self.age_max:
            raise ValueError("age_min: must not exceed age_max")
        for name in ("nationality", "gender", "occupation", "education"):
            _check_weights(getattr(self, name), name)
            for value in getattr(self, name):  # it becomes a persona's field and name
                if not is_one_line(value):
                    raise ValueError(
                        f"{name}: {value!r} is not a value: blank, or with control characters"
                    )
        for topic, dist in self.opinions.items():
            _check_weights(dist, f"opinions.{topic}")
        return self


def _check_weights(weights: dict[str, float], name: str) -> None:
    total = sum(weights.values())
    if (
        not weights
        or any(not math.isfinite(w) or w < 0 for w in weights.values())
        or not 0 < total < math.inf
    ):
        raise ValueError(f"{name}: weights must be finite and non-negative with a positive sum")


def _draw(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """One key drawn with probability proportional to its weight.

    Keys are taken in sorted order, so the draw does not depend on the mapping's order (a
    manifest stores the scenario with sorted keys, and a replay must draw the same people).
    """
    keys = sorted(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def opinion_value(raw: str) -> OpinionValue:
    """A key of ``distributions.opinions``: a Likert value when it is a whole number written
    in ASCII digits, else a choice letter."""
    return int(raw) if re.fullmatch(r"-?[0-9]+", raw) else raw


def sample_from_library(
    library: PersonaLibrary, size: int, rng: np.random.Generator, *, replace: bool = False
) -> list[Persona]:
    """Draw ``size`` personas from a library, in a seeded order.

    Args:
        library: Personas to draw from.
        size: How many to draw.
        rng: Seeded generator (the model's ``rng``).
        replace: Draw with replacement (a persona drawn again gets its id suffixed ``-2``,
            ``-3`` … and its name ``(2)``, ``(3)`` …, so no two agents share a voice).

    Returns:
        The drawn personas.

    Raises:
        ValueError: ``size`` exceeds the library without replacement.
    """
    n = len(library.personas)
    if not replace and size > n:
        raise ValueError(f"size {size} exceeds the library's {n} personas (set replace: true)")
    idx = rng.choice(n, size=size, replace=replace)
    out: list[Persona] = []
    counts: dict[str, int] = {}
    # a copy's id and name must be no library persona's: others hear an agent by its name
    taken = {p.id for p in library.personas} | {p.name for p in library.personas}
    for i in idx:
        p = library.personas[int(i)]
        counts[p.id] = counts.get(p.id, 0) + 1
        if counts[p.id] == 1:
            out.append(p)
            continue
        while {f"{p.id}-{counts[p.id]}", f"{p.name} ({counts[p.id]})"} & taken:
            counts[p.id] += 1
        copy = {"id": f"{p.id}-{counts[p.id]}", "name": f"{p.name} ({counts[p.id]})"}
        taken |= set(copy.values())
        out.append(p.model_copy(update=copy))
    return out


def sample_from_distributions(
    dist: PopulationDistributions, size: int, rng: np.random.Generator
) -> list[Persona]:
    """Draw ``size`` synthetic personas from attribute distributions.

    Args:
        dist: The attribute distributions.
        size: How many personas.
        rng: Seeded generator.

    Returns:
        Personas with ids ``synthetic-000`` … in draw order.
    """
    out = []
    for i in range(size):
        nationality = _draw(rng, dist.nationality)
        levels = np.clip(rng.normal(dist.big_five_mean, dist.big_five_sd, 5), 1.0, 5.0)
        out.append(
            Persona(
                id=f"synthetic-{i:03d}",
                name=f"Resident {i + 1} ({nationality})",
                age=int(rng.integers(dist.age_min, dist.age_max + 1)),
                gender=_draw(rng, dist.gender),
                nationality=nationality,
                occupation=_draw(rng, dist.occupation),
                education=_draw(rng, dist.education),
                big_five=BigFive(
                    **dict(zip(BIG_FIVE_TRAITS, (round(float(v), 2) for v in levels), strict=True))
                ),
                opinions={
                    t: opinion_value(_draw(rng, d)) for t, d in sorted(dist.opinions.items())
                },
            )
        )
    return out
