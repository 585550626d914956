"""Drawing an answer from its options' scores, and where a drawn answer's tokens split
(``simworld.llm.providers.local_options``); no model is loaded."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from simworld.llm.logprobs import option_distribution
from simworld.llm.providers.local_engine import Sampling
from simworld.llm.providers.local_options import (
    ANSWER_LEAD,
    ANSWER_TAIL,
    AnswerOptions,
    Fork,
    draw_option,
    drawn_answer,
    drive,
)
from simworld.llm.providers.local_sampler import MIN_P


def test_temperature_zero_takes_the_most_likely_and_the_first_of_equals():
    assert draw_option([-3.0, -1.0, -2.0], 0.0, seed=5) == 1
    assert draw_option([-1.0, -3.0, -1.0], 0.0, seed=5) == 0


def test_the_seed_decides_and_the_same_seed_draws_the_same():
    scores = [math.log(p) for p in (0.4, 0.35, 0.25)]
    draws = [draw_option(scores, 1.0, seed) for seed in range(200)]
    assert draws == [draw_option(scores, 1.0, seed) for seed in range(200)]
    assert set(draws) == {0, 1, 2}


def test_draws_follow_the_tempered_distribution():
    probs = (0.45, 0.35, 0.2)
    scores = [math.log(p) for p in probs]
    n = 4000
    for temperature in (1.0, 0.5):
        counts = Counter(draw_option(scores, temperature, seed) for seed in range(n))
        weights = [p ** (1 / temperature) for p in probs]
        for i, w in enumerate(weights):
            expected = w / sum(weights)
            assert counts[i] / n == pytest.approx(expected, abs=0.03), (temperature, i)


def test_unlikely_options_are_never_drawn():
    # min-p: under MIN_P times the most likely option is cut, as a token would be
    scores = [0.0, math.log(MIN_P / 2), math.log(0.9)]
    assert {draw_option(scores, 1.5, seed) for seed in range(500)} == {0, 2}


def _tokenizer() -> tuple[dict[str, int], list[str]]:
    """A toy tokenizer that splits like Gemma: ``{"``, ``answer``, ``":``, then `` "`` or ``
    `` and the value one character at a time, then the closing text."""
    vocab: list[str] = []
    ids: dict[str, int] = {}

    def piece(text: str) -> int:
        if text not in ids:
            ids[text] = len(vocab)
            vocab.append(text)
        return ids[text]

    def tokenize(text: str) -> list[int]:
        head, value = text[: len(ANSWER_LEAD)], text[len(ANSWER_LEAD) :]
        assert head == ANSWER_LEAD and value.endswith(ANSWER_TAIL)
        value = value[: -len(ANSWER_TAIL)]
        out = [piece('{"'), piece("answer"), piece('":')]
        if value.startswith('"'):
            out += [piece(' "'), *(piece(c) for c in value[1:-1]), piece('"}')]
        else:
            out += [piece(" "), *(piece(c) for c in value), piece("}")]
        return out

    tokenize.vocab = vocab  # type: ignore[attr-defined]
    return tokenize, vocab


@pytest.mark.parametrize(
    ("enum", "shared_text"),
    [([1, 2, 10], '{"answer": '), (["Agree", "Alright"], '{"answer":')],
)
def test_shared_tokens_stop_before_the_value(enum, shared_text):
    tokenize, vocab = _tokenizer()
    options = AnswerOptions.of(
        True,
        {"properties": {"answer": {"enum": enum}}},
        20,
        tokenize,
        lambda t: "".join(vocab[i] for i in t),
    )
    assert options is not None
    assert "".join(vocab[t] for t in options.shared) == shared_text
    assert len(options.own) == len(enum) and all(options.own)


def test_only_an_answer_alone_that_fits_is_drawn():
    tokenize, vocab = _tokenizer()
    detok = lambda t: "".join(vocab[i] for i in t)  # noqa: E731
    answer = {"answer": {"enum": [1, 2]}}
    assert AnswerOptions.of(True, {"properties": answer}, 20, tokenize, detok) is not None
    assert AnswerOptions.of(False, {"properties": answer}, 20, tokenize, detok) is None
    with_message = {"properties": {**answer, "message": {"type": "string"}}}
    assert AnswerOptions.of(True, with_message, 20, tokenize, detok) is None
    assert (
        AnswerOptions.of(True, {"properties": {"answer": {"type": "integer"}}}, 20, tokenize, detok)
        is None
    )
    too_small = 5  # each continuation is 6 tokens
    assert AnswerOptions.of(True, {"properties": answer}, too_small, tokenize, detok) is None


def test_a_drawn_answer_is_one_of_its_reported_options():
    """Evaluated by a toy model, the answer's entries read back (by the parser the rest of
    simworld uses) as a distribution whose draw with the call's seed is the answer."""
    tokenize, vocab = _tokenizer()
    detok = lambda t: "".join(vocab[i] for i in t)  # noqa: E731
    enum = [1, 2, 3, 10]
    options = AnswerOptions.of(
        True, {"properties": {"answer": {"enum": enum}}}, 20, tokenize, detok
    )
    assert options is not None
    rng = np.random.default_rng(0)
    size = len(vocab)

    def evaluate(tokens: list[int], pos: int) -> list[np.ndarray]:
        return [rng.normal(size=size) for _ in tokens]

    for seed in range(5):
        settings = Sampling(8, 1.0, seed, None, 2)
        steps = drawn_answer(options, rng.normal(size=size), 30, settings, detok)
        out, text, logprobs = drive(steps, evaluate)
        assert text == detok(out) and text.startswith(ANSWER_LEAD)
        value = int(text[len(ANSWER_LEAD) : -len(ANSWER_TAIL)])
        dist = option_distribution(logprobs, enum)
        assert dist is not None and dist.position == len(options.shared)
        assert set(dist.probs) == set(enum) and all(p > 0 for p in dist.probs.values())
        scores = {int(a["token"][:-1]): a["logprob"] for a in logprobs[-1]["top_logprobs"]}
        assert enum[draw_option([scores[v] for v in enum], 1.0, seed)] == value


def test_options_are_asked_for_as_one_fork_answered_in_the_forks_order():
    """A drawn answer asks once, for a fork of every option after the shared tokens; an
    engine that answers it in one go (rows in the fork's order) draws what evaluating its
    parts one after another draws. The toy model's logits depend on the token and position
    only, as a model's would on what precedes them."""
    tokenize, vocab = _tokenizer()
    detok = lambda t: "".join(vocab[i] for i in t)  # noqa: E731
    enum = [1, 2, 3, 10, "none"]
    options = AnswerOptions.of(
        True, {"properties": {"answer": {"enum": enum}}}, 20, tokenize, detok
    )
    assert options is not None
    size = len(vocab)

    def row(token: int, pos: int) -> np.ndarray:
        return np.random.default_rng([token, pos]).normal(size=size) * 3

    def evaluate(tokens: list[int], pos: int) -> list[np.ndarray]:
        return [row(t, pos + i) for i, t in enumerate(tokens)]

    forks: list[Fork] = []

    def at_once(fork: Fork) -> list[np.ndarray]:
        forks.append(fork)
        after = fork.pos + len(fork.shared)
        rows = evaluate(fork.shared, fork.pos)
        return rows + [r for branch in fork.branches for r in evaluate(branch, after)]

    last = row(0, 29)
    for seed in range(8):
        settings = Sampling(8, 1.0, seed, None, 3)
        one_go = drive(drawn_answer(options, last, 30, settings, detok), evaluate, at_once)
        assert one_go == drive(drawn_answer(options, last, 30, settings, detok), evaluate)
    assert len(forks) == 8
    assert forks[0] == Fork(options.shared, [own[:-1] for own in options.own], 30)
    assert forks[0].asks() == [(options.shared, 30)] + [
        (own[:-1], 30 + len(options.shared)) for own in options.own if own[:-1]
    ]
