"""§8 signal checks: position-bias index, modal shares and the variance split, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simworld.measures.signal import (
    SignalAccumulator,
    VarianceSplit,
    lowest_step_modal_share,
    modal_share,
    one_hot,
    ordering_class,
    position_bias_index,
    variance_split,
)

OWN = ("1", "2", "3", "4", "5")
REV = OWN[::-1]


def test_position_bias_index_likert_by_hand() -> None:
    # own direction: 1, 1, 2 (mean 4/3); reversed: 5, 4 (mean 9/2); K = 5
    answers = ["1", "1", "2", "5", "4", None]
    orders = [OWN, OWN, OWN, REV, REV, REV]  # the failed probe is dropped
    assert position_bias_index(answers, orders, ordinal=True) == pytest.approx((4.5 - 4 / 3) / 4)


def test_position_bias_index_likert_needs_both_directions_and_an_order() -> None:
    assert math.isnan(position_bias_index(["1", "2"], [OWN, OWN], ordinal=True))
    assert math.isnan(position_bias_index(["1", "2"], [None, None], ordinal=True))


def test_position_bias_index_choices_by_hand() -> None:
    # K = 4; the chosen positions are 0, 0, 0, 1 -> top share 3/4 -> (3/4 - 1/4) / (3/4)
    orders = [
        ("A", "B", "C", "D"),
        ("C", "A", "B", "D"),
        ("D", "C", "B", "A"),
        ("B", "A", "C", "D"),
    ]
    answers = ["A", "C", "D", "A"]
    assert position_bias_index(answers, orders, ordinal=False) == pytest.approx(2 / 3)
    # every position chosen equally often: no position effect at all
    spread = ["A", "A", "B", "D"]  # positions 0, 1, 2, 3
    assert position_bias_index(spread, orders, ordinal=False) == 0.0


@pytest.mark.parametrize("ordinal", [True, False])
@pytest.mark.parametrize("b", [0.0, 0.3, 0.8])
def test_position_bias_index_estimates_the_mixture_weight(ordinal: bool, b: float) -> None:
    """With probability b the first shown option, else the persona's own answer: PBI → b."""
    rng = np.random.default_rng(7)
    values = OWN if ordinal else ("A", "B", "C", "D")
    answers, orders = [], []
    for _ in range(40_000):
        if ordinal:
            order = REV if rng.random() < 0.5 else OWN
        else:
            order = tuple(values[i] for i in rng.permutation(len(values)))
        own = values[min(int(rng.integers(0, 3)), len(values) - 1)]  # opinions 1..3 / A..C
        answers.append(order[0] if rng.random() < b else own)
        orders.append(order)
    assert position_bias_index(answers, orders, ordinal=ordinal) == pytest.approx(b, abs=0.02)


def test_modal_shares_by_hand() -> None:
    assert modal_share(["A", "A", "B", None]) == pytest.approx(2 / 3)
    assert math.isnan(modal_share([None]))
    # step 0 diverse (1/2), step 1 unanimous: the lowest is 1/2
    steps, answers = [0, 0, 0, 0, 1, 1], ["1", "1", "2", "3", "5", "5"]
    assert lowest_step_modal_share(steps, answers) == pytest.approx(0.5)


def test_variance_split_by_hand() -> None:
    # step 0: own direction 1 and 3 (mean 2), reversed 5; step mean 3.
    # persona SS = (1-2)^2 + (3-2)^2 = 2; ordering SS = 2 (2-3)^2 + (5-3)^2 = 6; N = 3.
    records = [(0, "a", "own", 1.0), (0, "b", "own", 3.0), (0, "c", "reversed", 5.0)]
    split = variance_split(records)
    assert (split.persona, split.ordering) == (pytest.approx(2 / 3), pytest.approx(2.0))
    assert (split.n, split.n_personas) == (3, 3)
    assert split.persona_signal is False


def test_variance_split_is_the_within_step_anova_identity() -> None:
    rng = np.random.default_rng(3)
    records = [
        (int(rng.integers(0, 3)), f"p{i % 7}", str(rng.integers(0, 2)), float(rng.integers(1, 6)))
        for i in range(200)
    ]
    split = variance_split(records)
    total = 0.0
    for step in {r[0] for r in records}:
        xs = np.array([r[3] for r in records if r[0] == step])
        total += float(((xs - xs.mean()) ** 2).sum())
    assert split.persona + split.ordering == pytest.approx(total / len(records))


def test_variance_split_of_choices_is_the_gini_impurity() -> None:
    values = ("A", "B", "C")
    answers = ["A", "A", "B", "C"]
    split = variance_split([(0, f"p{i}", "A", one_hot(a, values)) for i, a in enumerate(answers)])
    p = np.array([2, 1, 1]) / 4
    assert split.ordering == 0.0
    assert split.persona == pytest.approx(1 - float((p**2).sum()))
    assert split.persona_signal is True


def test_persona_signal_is_undecided_without_variation_or_personas() -> None:
    assert VarianceSplit(0.0, 0.0, 4, 4).persona_signal is None
    assert VarianceSplit(1.0, 0.0, 4, 1).persona_signal is None
    assert math.isnan(variance_split([]).persona)


def test_ordering_class() -> None:
    assert ordering_class(None, OWN, ordinal=True) == "own"
    assert ordering_class(REV, OWN, ordinal=True) == "reversed"
    assert ordering_class(("C", "A", "B"), ("A", "B", "C"), ordinal=False) == "C"
    assert ordering_class(None, ("A", "B", "C"), ordinal=False) == "A"


@pytest.mark.parametrize("ordinal", [True, False])
def test_the_running_accumulator_gives_the_pure_functions_values(ordinal: bool) -> None:
    rng = np.random.default_rng(11)
    values = OWN if ordinal else ("A", "B", "C", "D")
    acc = SignalAccumulator(values, ordinal=ordinal)
    steps, personas, answers, orders, probs = [], [], [], [], []
    for i in range(300):
        step, persona = int(rng.integers(0, 4)), f"p{i % 9}"
        if rng.random() < 0.2:
            order = None
        elif ordinal:
            order = REV if rng.random() < 0.5 else OWN
        else:
            order = tuple(values[j] for j in rng.permutation(4))
        answer = None if rng.random() < 0.1 else values[int(rng.integers(0, len(values)))]
        dist = dict(zip(values, rng.dirichlet(np.ones(len(values))), strict=True))
        acc.add(step, persona, answer, order, dist)
        steps.append(step), personas.append(persona), answers.append(answer)
        orders.append(order), probs.append(dist)
    given = [a for a in answers if a is not None]
    assert acc.modal()[1] == pytest.approx(modal_share(given))
    assert acc.lowest_step_modal_share() == pytest.approx(lowest_step_modal_share(steps, answers))
    assert acc.position_bias() == pytest.approx(
        position_bias_index(answers, orders, ordinal=ordinal)
    )
    klass = [ordering_class(o, values, ordinal=ordinal) for o in orders]
    vec = (lambda a: float(a)) if ordinal else (lambda a: one_hot(a, values))
    plain = variance_split(
        [(s, p, k, vec(a)) for s, p, k, a in zip(steps, personas, klass, answers, strict=True)
         if a is not None]
    )  # fmt: skip
    assert acc.split.result().persona == pytest.approx(plain.persona)
    assert acc.split.result().ordering == pytest.approx(plain.ordering)

    def expected(d: dict) -> np.ndarray:
        if ordinal:
            return np.array([sum(float(k) * p for k, p in d.items())])
        return np.array([d[v] for v in values])

    with_probs = variance_split(
        [(s, p, k, expected(d)) for s, p, k, d in zip(steps, personas, klass, probs, strict=True)]
    )
    assert acc.split_probs.result().persona == pytest.approx(with_probs.persona)
    assert acc.split_probs.result().ordering == pytest.approx(with_probs.ordering)
    assert acc.split_probs.result().n == 300
