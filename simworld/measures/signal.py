"""Signal checks: do a topic's probe answers carry an opinion, or only a position effect?

Source: docs/metrics.md §8, after Dominguez-Olmedo et al. 2024 ("Questioning the Survey
Responses of Large Language Models"), Tjuatja et al. 2024 (TACL, response biases of LLMs in
surveys) and Rupprecht et al. 2025 (recency bias). The checks read counterbalanced probes
(:mod:`simworld.engine.counterbalance`): each probe records the order its options were shown in,
so the answer's content (the topic's value) and its position (where it was shown) can be
told apart.

Model behind the position-bias index: with probability b the answer is a fixed position
(the first shown, say) whatever the content, otherwise it follows content, independently of
the order shown. The index estimates b:

- Likert (the order is the scale's own direction or its reverse):
  ``PBI = |mean(v | reversed) - mean(v | own direction)| / (K - 1)``; a pure content
  answerer gives 0 in expectation, one that always takes the first (or last) position 1.
  A position effect toward the middle of the scale cannot be seen this way (its content
  is the same in both directions).
- choices (the option texts are permuted uniformly at random under fixed letters):
  ``PBI = (max_p share(p) - 1/K) / (1 - 1/K)``, with ``share(p)`` the share of answers
  chosen at shown position p. Content answers land on every position equally often
  under random orders, so only a position effect lifts one position above 1/K.

Missing answers (failed calls) are dropped before anything is counted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simworld.measures._common import is_missing

__all__ = [
    "SignalAccumulator",
    "VarianceSplit",
    "lowest_step_modal_share",
    "modal_share",
    "one_hot",
    "ordering_class",
    "position_bias_index",
    "variance_split",
]


def modal_share(answers: Sequence[object]) -> float:
    """Share of the most frequent answer among the present ones (NaN when none is present).

    Source: docs/metrics.md §8 (as the consensus share of §5, over all probes of a topic).
    """
    given = [a for a in answers if not is_missing(a)]
    if not given:
        return math.nan
    return Counter(given).most_common(1)[0][1] / len(given)


def position_bias_index(
    answers: Sequence[object],
    orders: Sequence[Sequence[str] | None],
    *,
    ordinal: bool,
) -> float:
    """How much the chosen position, not the chosen content, explains the answers (0..1).

    Source: docs/metrics.md §8 (formulas in the module docstring).

    Args:
        answers: The topic's values answered (after mapping back), one per probe.
        orders: The order each probe showed (the topic's values, top to bottom); None for
            a probe that was not counterbalanced (left out).
        ordinal: Likert (direction reversal) or choices (permutations).

    Returns:
        The index; NaN when it cannot be estimated (no counterbalanced answer, or for a
        Likert topic no answer in one of the two directions).
    """
    pairs = [
        (str(a), tuple(o))
        for a, o in zip(answers, orders, strict=True)
        if o is not None and not is_missing(a)
    ]
    if not pairs:
        return math.nan
    k = len(pairs[0][1])
    if k < 2:
        return math.nan
    if ordinal:
        forward = [float(a) for a, o in pairs if _ascending(o)]
        backward = [float(a) for a, o in pairs if not _ascending(o)]
        if not forward or not backward:
            return math.nan
        return abs(float(np.mean(backward)) - float(np.mean(forward))) / (k - 1)
    positions = Counter(o.index(a) for a, o in pairs if a in o)
    top = max(positions.values()) / sum(positions.values())
    return max(0.0, (top - 1.0 / k) / (1.0 - 1.0 / k))


def _ascending(order: Sequence[str]) -> bool:
    nums = [float(v) for v in order]
    return nums == sorted(nums)


def one_hot(answer: object, values: Sequence[str]) -> np.ndarray:
    """An answer as a 0/1 vector over ``values`` (a categorical answer's vector, §8)."""
    return np.array([1.0 if str(answer) == v else 0.0 for v in values])


@dataclass(frozen=True)
class VarianceSplit:
    """Between-persona and between-ordering variance of one topic's answers.

    Within each probe step t the answers are grouped by ordering class o (what the probe
    showed: for Likert its direction, for choices the option shown first);
    ``μ_t`` is the step's mean answer and ``μ_to`` the class mean.

    Attributes:
        persona: ``Σ_t Σ_o Σ_i ||x_i − μ_to||² / N``: how much personas shown the same
            ordering at the same step differ.
        ordering: ``Σ_t Σ_o n_to ||μ_to − μ_t||² / N``: how much the ordering shown moves
            the mean answer at a step.
        n: Answers counted (N).
        n_personas: Distinct personas among them.
    """

    persona: float
    ordering: float
    n: int
    n_personas: int

    @property
    def persona_signal(self) -> bool | None:
        """Whether answers differ more between personas than between orderings (None:
        undecided: fewer than two personas, nothing counted, or nothing varies at all)."""
        if self.n_personas < 2 or math.isnan(self.persona) or math.isnan(self.ordering):
            return None
        if self.persona == 0.0 and self.ordering == 0.0:
            return None
        return bool(self.persona > self.ordering)


def variance_split(
    records: Sequence[tuple[Hashable, Hashable, Hashable, np.ndarray | float]],
) -> VarianceSplit:
    """Split answers' variance into a between-persona and a between-ordering part.

    Source: docs/metrics.md §8. Per probe step, the one-way decomposition of the sum of
    squares ``Σ ||x − μ_t||²`` by ordering class: between the class means (ordering) and
    within the classes (persona), pooled over steps and divided by N. Working within a step
    keeps opinion change over time out of both parts. An answer is a vector: a Likert value
    (or its expected value under the token probabilities) as a 1-vector, a choice as
    :func:`one_hot` (or its option probabilities), so for choices the variance is the Gini
    impurity ``1 − Σ p²``. Under random orders and no position effect the ordering part
    is sampling noise only (about (classes − 1) / answers per step of the total).

    Args:
        records: ``(step, persona, ordering class, answer vector)`` per counted probe.

    Returns:
        The split (NaN parts when nothing is counted).
    """
    if not records:
        return VarianceSplit(math.nan, math.nan, 0, 0)
    xs = np.array([np.atleast_1d(np.asarray(x, dtype=float)) for *_, x in records])
    by_step: dict[Hashable, list[int]] = {}
    by_cell: dict[tuple[Hashable, Hashable], list[int]] = {}
    for i, (step, _, ordering, _) in enumerate(records):
        by_step.setdefault(step, []).append(i)
        by_cell.setdefault((step, ordering), []).append(i)
    step_mean: Mapping[Hashable, np.ndarray] = {t: xs[ix].mean(axis=0) for t, ix in by_step.items()}
    persona = ordering = 0.0
    for (step, _), ix in by_cell.items():
        cell = xs[ix]
        mean = cell.mean(axis=0)
        persona += float(((cell - mean) ** 2).sum())
        ordering += len(ix) * float(((mean - step_mean[step]) ** 2).sum())
    n = len(records)
    return VarianceSplit(persona / n, ordering / n, n, len({r[1] for r in records}))


def ordering_class(order: Sequence[str] | None, values: Sequence[str], *, ordinal: bool) -> str:
    """The ordering class of a probe for :func:`variance_split` (docs/metrics.md §8).

    Likert: ``own`` or ``reversed`` direction; choices: the value shown first. A probe
    without a recorded order was shown the topic's own order.
    """
    shown = list(values) if order is None else list(order)
    if ordinal:
        return "own" if shown == sorted(shown, key=float) else "reversed"
    return shown[0]


def lowest_step_modal_share(steps: Sequence[Hashable], answers: Sequence[object]) -> float:
    """The smallest per-step :func:`modal_share` (NaN when no answer is present).

    Source: docs/metrics.md §8. High even at the step where answers differ most, it says
    the answers were near-identical at every step, which a consensus reached by talking
    (diverse at first) is not.
    """
    by_step: dict[Hashable, list[object]] = {}
    for step, answer in zip(steps, answers, strict=True):
        by_step.setdefault(step, []).append(answer)
    shares = [modal_share(a) for a in by_step.values()]
    shares = [x for x in shares if not math.isnan(x)]
    return min(shares) if shares else math.nan


class _Split:
    """Running sums for :func:`variance_split` (same result, in O(1) per answer)."""

    def __init__(self) -> None:
        self.cells: dict[tuple[Hashable, Hashable], list[Any]] = {}  # n, Σx, Σ||x||²
        self.steps: dict[Hashable, list[Any]] = {}  # n, Σx
        self.personas: set[Hashable] = set()

    def add(self, step: Hashable, persona: Hashable, ordering: Hashable, x: np.ndarray) -> None:
        cell = self.cells.setdefault((step, ordering), [0, 0.0, 0.0])
        cell[0] += 1
        cell[1] = cell[1] + x
        cell[2] += float((x**2).sum())
        at = self.steps.setdefault(step, [0, 0.0])
        at[0] += 1
        at[1] = at[1] + x
        self.personas.add(persona)

    def result(self) -> VarianceSplit:
        n = sum(c[0] for c in self.cells.values())
        if not n:
            return VarianceSplit(math.nan, math.nan, 0, 0)
        between_cells = sum(float((c[1] ** 2).sum()) / c[0] for c in self.cells.values())
        between_steps = sum(float((s[1] ** 2).sum()) / s[0] for s in self.steps.values())
        total = sum(c[2] for c in self.cells.values())
        persona = max(0.0, total - between_cells)
        ordering = max(0.0, between_cells - between_steps)
        return VarianceSplit(persona / n, ordering / n, n, len(self.personas))


class SignalAccumulator:
    """The §8 checks of one topic, updated answer by answer (what the ``signal`` tracker keeps).

    Gives the values of :func:`modal_share`, :func:`lowest_step_modal_share`,
    :func:`position_bias_index` and :func:`variance_split` over the answers added so far
    (up to floating-point rounding: the variance split is kept as running sums), at a cost
    per answer that does not grow with the run's history.

    Args:
        values: The topic's values in their own order.
        ordinal: Likert (True) or choices.
    """

    def __init__(self, values: Sequence[str], *, ordinal: bool) -> None:
        self.values = tuple(values)
        self.ordinal = ordinal
        self.n_missing = 0
        self.n_counterbalanced = 0
        self.counts: Counter[str] = Counter()
        self.by_step: dict[Hashable, Counter[str]] = {}
        self.direction: dict[bool, list[float]] = {True: [0, 0.0], False: [0, 0.0]}
        self.positions: Counter[int] = Counter()
        self.split, self.split_probs = _Split(), _Split()

    def add(
        self,
        step: Hashable,
        persona: Hashable,
        answer: object,
        order: Sequence[str] | None,
        probs: Mapping[str, float] | None = None,
    ) -> None:
        """Add one probe: step, persona, answer (None: failed), shown order, probabilities."""
        klass = ordering_class(order, self.values, ordinal=self.ordinal)
        if probs:
            self.split_probs.add(step, persona, klass, self._prob_vector(probs))
        if is_missing(answer):
            self.n_missing += 1
            self.by_step.setdefault(step, Counter())
            return
        a = str(answer)
        self.counts[a] += 1
        self.by_step.setdefault(step, Counter())[a] += 1
        x = np.array([float(a)]) if self.ordinal else one_hot(a, self.values)
        self.split.add(step, persona, klass, x)
        if order is None or len(order) < 2:
            return
        self.n_counterbalanced += 1
        if self.ordinal:
            acc = self.direction[_ascending(order)]
            acc[0] += 1
            acc[1] += float(a)
        elif a in order:
            self.positions[list(order).index(a)] += 1

    def _prob_vector(self, probs: Mapping[str, float]) -> np.ndarray:
        total = sum(probs.values())
        if self.ordinal:
            return np.array([sum(float(k) * p for k, p in probs.items()) / total])
        return np.array([probs.get(v, 0.0) / total for v in self.values])

    @property
    def n(self) -> int:
        """Answers present."""
        return sum(self.counts.values())

    def modal(self) -> tuple[str | None, float]:
        """The unique modal answer (None on a tie) and :func:`modal_share`."""
        if not self.counts:
            return None, math.nan
        ranked = self.counts.most_common()
        top = ranked[0][1]
        unique = len(ranked) == 1 or ranked[1][1] < top
        return (min(a for a, c in ranked if c == top) if unique else None), top / self.n

    def lowest_step_modal_share(self) -> float:
        """:func:`lowest_step_modal_share` over the answers so far."""
        shares = [max(c.values()) / sum(c.values()) for c in self.by_step.values() if c]
        return min(shares) if shares else math.nan

    def position_bias(self) -> float:
        """:func:`position_bias_index` over the counterbalanced answers so far."""
        k = len(self.values)
        if not self.n_counterbalanced or k < 2:
            return math.nan
        if self.ordinal:
            (nf, sf), (nb, sb) = self.direction[True], self.direction[False]
            if not nf or not nb:
                return math.nan
            return abs(sb / nb - sf / nf) / (k - 1)
        if not self.positions:
            return math.nan
        top = max(self.positions.values()) / sum(self.positions.values())
        return max(0.0, (top - 1.0 / k) / (1.0 - 1.0 / k))
