"""Personality consistency: BFI-44/BFI-10 items, scoring, distance to persona, change, order.

Source: docs/metrics.md §4; Frisch & Giulianelli 2024, "LLM Agents in Interaction: Measuring
Personality Consistency and Linguistic Alignment in Interacting Populations of Large Language
Models", arXiv 2402.02896; reliability caveats from Gupta et al. 2023, "Self-Assessment Tests
are Unreliable Measures of LLM Personality" (hence the seeded order randomiser).

Item texts: BFI-44 of John & Srivastava 1999 (John, Donahue & Kentle 1991) and BFI-10 of
Rammstedt & John 2007, each completing "I see myself as someone who …", answered on 1..5
(:data:`LIKERT_LABELS`). Ordinal only: trait scores are means of Likert answers.

Missing item answers (None/NaN from failed calls) are never values: they are left out of
the trait mean, and the number of answered items is reported.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import pandas as pd

from simworld.config.persona import BIG_FIVE_TRAITS, BigFive
from simworld.measures._common import is_missing

__all__ = [
    "BFI10",
    "BFI44",
    "BIG_FIVE_TRAITS",
    "INVENTORIES",
    "LIKERT_LABELS",
    "LIKERT_MAX",
    "LIKERT_MIN",
    "STEM",
    "Administration",
    "BfiItem",
    "TraitScores",
    "randomize_administration",
    "score_bfi",
    "score_change",
    "trait_distance",
]

LIKERT_MIN = 1
LIKERT_MAX = 5
LIKERT_LABELS = (
    "Disagree strongly",
    "Disagree a little",
    "Neither agree nor disagree",
    "Agree a little",
    "Agree strongly",
)
STEM = "I see myself as someone who"

_O, _C, _E, _A, _N = BIG_FIVE_TRAITS


@dataclass(frozen=True)
class BfiItem:
    """One inventory item: 1-based number, text completing :data:`STEM`, trait, reverse key."""

    number: int
    text: str
    trait: str
    reverse: bool


def _items(rows: Sequence[tuple[str, str, bool]]) -> tuple[BfiItem, ...]:
    return tuple(BfiItem(i, text, trait, rev) for i, (text, trait, rev) in enumerate(rows, 1))


BFI44: tuple[BfiItem, ...] = _items(
    [
        ("is talkative", _E, False),
        ("tends to find fault with others", _A, True),
        ("does a thorough job", _C, False),
        ("is depressed, blue", _N, False),
        ("is original, comes up with new ideas", _O, False),
        ("is reserved", _E, True),
        ("is helpful and unselfish with others", _A, False),
        ("can be somewhat careless", _C, True),
        ("is relaxed, handles stress well", _N, True),
        ("is curious about many different things", _O, False),
        ("is full of energy", _E, False),
        ("starts quarrels with others", _A, True),
        ("is a reliable worker", _C, False),
        ("can be tense", _N, False),
        ("is ingenious, a deep thinker", _O, False),
        ("generates a lot of enthusiasm", _E, False),
        ("has a forgiving nature", _A, False),
        ("tends to be disorganized", _C, True),
        ("worries a lot", _N, False),
        ("has an active imagination", _O, False),
        ("tends to be quiet", _E, True),
        ("is generally trusting", _A, False),
        ("tends to be lazy", _C, True),
        ("is emotionally stable, not easily upset", _N, True),
        ("is inventive", _O, False),
        ("has an assertive personality", _E, False),
        ("can be cold and aloof", _A, True),
        ("perseveres until the task is finished", _C, False),
        ("can be moody", _N, False),
        ("values artistic, aesthetic experiences", _O, False),
        ("is sometimes shy, inhibited", _E, True),
        ("is considerate and kind to almost everyone", _A, False),
        ("does things efficiently", _C, False),
        ("remains calm in tense situations", _N, True),
        ("prefers work that is routine", _O, True),
        ("is outgoing, sociable", _E, False),
        ("is sometimes rude to others", _A, True),
        ("makes plans and follows through with them", _C, False),
        ("gets nervous easily", _N, False),
        ("likes to reflect, play with ideas", _O, False),
        ("has few artistic interests", _O, True),
        ("likes to cooperate with others", _A, False),
        ("is easily distracted", _C, True),
        ("is sophisticated in art, music, or literature", _O, False),
    ]
)
"""BFI-44 (John & Srivastava 1999); reverse-keyed: 2 6 8 9 12 18 21 23 24 27 31 34 35 37 41 43."""

BFI10: tuple[BfiItem, ...] = _items(
    [
        ("is reserved", _E, True),
        ("is generally trusting", _A, False),
        ("tends to be lazy", _C, True),
        ("is relaxed, handles stress well", _N, True),
        ("has few artistic interests", _O, True),
        ("is outgoing, sociable", _E, False),
        ("tends to find fault with others", _A, True),
        ("does a thorough job", _C, False),
        ("gets nervous easily", _N, False),
        ("has an active imagination", _O, False),
    ]
)
"""BFI-10 (Rammstedt & John 2007); reverse-keyed: 1 3 4 5 7."""

INVENTORIES: Mapping[str, tuple[BfiItem, ...]] = {"bfi44": BFI44, "bfi10": BFI10}

Inventory = Literal["bfi44", "bfi10"] | Sequence[BfiItem]


def _inventory(inventory: Inventory) -> tuple[BfiItem, ...]:
    if isinstance(inventory, str):
        if inventory not in INVENTORIES:
            raise ValueError(f"unknown inventory {inventory!r}; one of {sorted(INVENTORIES)}")
        return INVENTORIES[inventory]
    return tuple(inventory)


@dataclass(frozen=True)
class TraitScores:
    """Trait scores of one administration.

    Attributes:
        scores: Trait → mean keyed answer on 1..5 (NaN when too few items were answered).
        answered: Trait → number of items with a present answer.
    """

    scores: dict[str, float]
    answered: dict[str, int]


def score_bfi(
    responses: Mapping[int, int | float | None],
    *,
    inventory: Inventory = "bfi44",
    min_items: int = 1,
) -> TraitScores:
    """Trait scores: mean of each trait's items after reverse-keying (``r → 6 - r``).

    Source: docs/metrics.md §4; Frisch & Giulianelli 2024, arXiv 2402.02896; keys of John &
    Srivastava 1999 (BFI-44) and Rammstedt & John 2007 (BFI-10).

    Args:
        responses: Item number (1-based, the inventory's numbering, not the shown order) →
            Likert answer 1..5; None/NaN or an absent item is missing and left out of the mean.
        inventory: ``"bfi44"``, ``"bfi10"`` or a sequence of :class:`BfiItem`.
        min_items: A trait with fewer answered items scores NaN.

    Returns:
        The :class:`TraitScores` (every trait of the inventory is present).

    Raises:
        ValueError: An item number is not in the inventory, or an answer is not an integer
            in 1..5.
    """
    items = _inventory(inventory)
    by_number = {it.number: it for it in items}
    unknown = sorted(set(responses) - set(by_number))
    if unknown:
        raise ValueError(f"item numbers not in the inventory: {unknown}")
    traits = {it.trait for it in items}
    order = [t for t in BIG_FIVE_TRAITS if t in traits] + sorted(traits - set(BIG_FIVE_TRAITS))
    keyed: dict[str, list[float]] = {t: [] for t in order}
    for number, answer in responses.items():
        if is_missing(answer):
            continue
        numeric = isinstance(answer, int | float | np.integer | np.floating)
        if isinstance(answer, bool) or not numeric or not float(answer).is_integer():  # type: ignore[arg-type]
            raise ValueError(f"item {number}: answer {answer!r} is not a Likert integer")
        r = int(answer)  # type: ignore[arg-type]
        if not LIKERT_MIN <= r <= LIKERT_MAX:
            raise ValueError(f"item {number}: answer {r} is outside {LIKERT_MIN}..{LIKERT_MAX}")
        item = by_number[number]
        keyed[item.trait].append(float(LIKERT_MIN + LIKERT_MAX - r if item.reverse else r))
    scores = {t: float(np.mean(v)) if len(v) >= max(min_items, 1) else math.nan
              for t, v in keyed.items()}  # fmt: skip
    return TraitScores(scores=scores, answered={t: len(v) for t, v in keyed.items()})


def trait_distance(
    scores: Mapping[str, float],
    assigned: Mapping[str, float] | BigFive,
    *,
    signed: bool = False,
) -> dict[str, float]:
    """Per trait, distance between the measured score and the persona's assigned level.

    Source: docs/metrics.md §4 (consistency); Frisch & Giulianelli 2024, arXiv 2402.02896.

    Both are on the BFI's 1..5 scale (persona levels are stored on it, 3 = midpoint).

    Args:
        scores: Measured trait scores (e.g. ``score_bfi(...).scores``).
        assigned: The persona's levels, a mapping or a :class:`~simworld.config.persona.BigFive`.
        signed: Return ``measured - assigned`` instead of ``|measured - assigned|``.

    Returns:
        Trait → distance for every trait in both; NaN where the measured score is NaN.
    """
    levels = assigned.model_dump() if isinstance(assigned, BigFive) else dict(assigned)
    out: dict[str, float] = {}
    for trait, score in scores.items():
        if trait in levels:
            diff = float(score) - float(levels[trait])
            out[trait] = diff if signed else abs(diff)
    return out


AgentKey = TypeVar("AgentKey", bound=Hashable)


def score_change(
    before: Mapping[AgentKey, Mapping[str, float]],
    after: Mapping[AgentKey, Mapping[str, float]],
    *,
    effect: Literal["dz", "av"] = "dz",
) -> pd.DataFrame:
    """Change of trait scores between two administrations, with Cohen's d across agents.

    Source: docs/metrics.md §4 (consistency: change between administrations, Cohen's d across
    agents of a profile); Frisch & Giulianelli 2024, arXiv 2402.02896.

    Choice: the same agents are measured twice, so the default is the paired
    ``d_z = mean(after - before) / sd(after - before, ddof=1)``. ``effect="av"`` gives
    ``d_av = mean(after - before) / sqrt((sd_before² + sd_after²) / 2)`` (ddof=1), the
    pooled-SD d for paired data, comparable to between-group d. Only agents with a score at
    both administrations enter (pairwise deletion); the rest are counted in ``n_excluded``.
    With fewer than 2 pairs d is NaN; with zero spread d is ``±inf`` for a non-zero mean
    change and NaN for none.

    Args:
        before: Agent → trait → score at the first administration.
        after: Agent → trait → score at the second.
        effect: ``"dz"`` (paired) or ``"av"`` (pooled SD).

    Returns:
        Columns ``trait, n, n_excluded, mean_before, mean_after, mean_change, sd_change, d``,
        one row per trait seen in either mapping.
    """
    if effect not in ("dz", "av"):
        raise ValueError(f"effect must be 'dz' or 'av', got {effect!r}")
    agents = set(before) | set(after)
    traits = sorted({t for m in (*before.values(), *after.values()) for t in m})
    rows: list[dict[str, object]] = []
    for trait in traits:
        pairs = [
            (before[a][trait], after[a][trait])
            for a in agents
            if a in before and a in after
            and not is_missing(before[a].get(trait)) and not is_missing(after[a].get(trait))
        ]  # fmt: skip
        b = np.array([p[0] for p in pairs], dtype=float)
        a = np.array([p[1] for p in pairs], dtype=float)
        diff = a - b
        n = len(pairs)
        mean_change = float(diff.mean()) if n else math.nan
        sd_change = float(diff.std(ddof=1)) if n > 1 else math.nan
        if effect == "dz":
            spread = sd_change
        else:
            spread = float(np.sqrt((b.var(ddof=1) + a.var(ddof=1)) / 2)) if n > 1 else math.nan
        rows.append(
            {
                "trait": trait,
                "n": n,
                "n_excluded": len(agents) - n,
                "mean_before": float(b.mean()) if n else math.nan,
                "mean_after": float(a.mean()) if n else math.nan,
                "mean_change": mean_change,
                "sd_change": sd_change,
                "d": _ratio(mean_change, spread),
            }
        )
    cols = ["trait", "n", "n_excluded", "mean_before", "mean_after", "mean_change",
            "sd_change", "d"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def _ratio(num: float, den: float) -> float:
    if math.isnan(num) or math.isnan(den):
        return math.nan
    if den == 0:
        return math.copysign(math.inf, num) if num != 0 else math.nan
    return num / den


@dataclass(frozen=True)
class Administration:
    """The recorded order of one seeded administration.

    Attributes:
        seed: The seed it was drawn with.
        item_order: Item numbers in the order shown.
        option_orders: Item number → Likert values in the order shown (position 0 first).
    """

    seed: int
    item_order: tuple[int, ...]
    option_orders: dict[int, tuple[int, ...]]

    def value_at(self, item: int, position: int) -> int:
        """The Likert value shown at 0-based ``position`` for ``item`` (decodes an answer)."""
        return self.option_orders[item][position]


def randomize_administration(
    *,
    seed: int,
    inventory: Inventory = "bfi44",
    shuffle_items: bool = True,
    shuffle_options: bool = True,
    per_item_options: bool = False,
) -> Administration:
    """Draw a seeded item order and option order for one administration, to be recorded.

    Source: docs/metrics.md §4 (robustness: randomise option and item order per administration,
    seeded, and record them); Gupta et al. 2023 (order sensitivity of self-assessment).

    Choice: by default one option permutation is drawn for the whole administration (all
    items show the options in the same order, as on a paper form); ``per_item_options=True``
    draws one per item. Items are drawn first, then options, from
    ``numpy.random.default_rng(seed)``, so the same seed always gives the same orders.

    Args:
        seed: Seed of this administration (derive it from the run seed, agent and step).
        inventory: ``"bfi44"``, ``"bfi10"`` or a sequence of :class:`BfiItem`.
        shuffle_items: Permute the items (else inventory order).
        shuffle_options: Permute the options (else 1..5 ascending).
        per_item_options: One option permutation per item instead of one for all.

    Returns:
        The :class:`Administration`.
    """
    items = _inventory(inventory)
    rng = np.random.default_rng(seed)
    numbers = [it.number for it in items]
    if shuffle_items:
        numbers = [numbers[i] for i in rng.permutation(len(numbers))]
    base = tuple(range(LIKERT_MIN, LIKERT_MAX + 1))

    def draw() -> tuple[int, ...]:
        if not shuffle_options:
            return base
        return tuple(base[i] for i in rng.permutation(len(base)))

    if per_item_options:
        options = {n: draw() for n in numbers}
    else:
        shared = draw()
        options = dict.fromkeys(numbers, shared)
    return Administration(seed=seed, item_order=tuple(numbers), option_orders=options)
