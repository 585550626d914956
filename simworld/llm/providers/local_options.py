"""Answers over a fixed set of options, for both embedded engines: scoring and drawing them.

Two things happen here, each written once as a generator that asks its engine to evaluate
tokens (it yields ``(tokens, position)``, or a :class:`Fork` of continuations that share a
start, and is sent the raw logits after each token), so the serial engine
(:mod:`simworld.llm.providers.local_engine`) and the batched one
(:mod:`simworld.llm.providers.local_batch`) drive the same steps their own way:

* :func:`score_options`: after a JSON answer with an ``answer`` enum was *sampled*, every
  option is scored as a whole continuation of the tokens before the value, for the answer's
  log-probabilities. The model's top tokens at the value need not include every option, and
  an option may span several tokens, so scoring each option directly is what gives a complete
  distribution over them.
* :func:`drawn_answer`: when the answer *is* the option (a schema whose only property is an
  ``answer`` enum, as probes and stance extraction ask), the engine does not sample it token
  by token at all. Each option is scored as the continuation ``{"answer": <option>}`` of the
  prompt and the answer is drawn from those scores with the call's seed, under the same
  rules token sampling follows (see :func:`draw_option`). So the answer is drawn from exactly
  the distribution its log-probabilities report, and the tokens it would have taken to
  sample it (one decode each, with grammar checks) and to re-evaluate them for
  log-probabilities are not spent.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from simworld.llm.logprobs import answer_enum, token_entry
from simworld.llm.providers.local_sampler import MIN_P, TOP_K, TOP_P

MAX_TOP_LOGPROBS = 20
ANSWER_LEAD = '{"answer": '
"""What a drawn answer's text starts with; the option's JSON value follows."""
ANSWER_TAIL = "}"
"""What follows the value (it also tells ``1`` from ``10`` apart)."""

Tokens = list[int]


@dataclass(frozen=True)
class Fork:
    """Continuations that share a start: ``shared`` at ``pos``, then each of ``branches``
    after it, none of which sees another. Answered with the logits after every token of
    ``shared``, then after every token of each branch in turn (empty branches have none).

    Attributes:
        shared: The tokens every branch follows.
        branches: Each branch's own tokens.
        pos: Position of the first shared token.
    """

    shared: Tokens
    branches: list[Tokens]
    pos: int

    def asks(self) -> list[tuple[Tokens, int]]:
        """The same work as plain evaluations, one after another: ``shared``, then each
        non-empty branch from the position after it (each replacing the one before)."""
        after = self.pos + len(self.shared)
        head = [(self.shared, self.pos)] if self.shared else []
        return head + [(branch, after) for branch in self.branches if branch]


Evaluations = Generator[tuple[Tokens, int] | Fork, list[np.ndarray], Any]
"""Yields ``(tokens, position)`` or a :class:`Fork` to evaluate; is sent the logits after
each token."""
Evaluate = Callable[[Tokens, int], list[np.ndarray]]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the vocabulary from one row of logits."""
    shifted = logits.astype(np.float64) - float(np.max(logits))
    return shifted - np.log(np.sum(np.exp(shifted)))


def top_count(top_logprobs: int | None) -> int:
    """How many alternatives to report per token (0 to :data:`MAX_TOP_LOGPROBS`)."""
    return max(0, min(int(top_logprobs or 0), MAX_TOP_LOGPROBS))


def logprob_entry(
    row: np.ndarray, token: int, k: int, detok: Callable[[Sequence[int]], str]
) -> dict[str, Any]:
    """The OpenAI-format entry of ``token`` from a log-softmax ``row``, with ``k`` alternatives.

    Args:
        row: Log-probabilities over the vocabulary at the token's position.
        token: The generated token.
        k: Alternatives to list (most likely first, ties by token id).
        detok: Token ids to text.
    """
    top = np.argpartition(-row, k)[:k] if k else np.array([], dtype=np.int64)
    top = top[np.lexsort((top, -row[top]))]
    alts = [(detok([t]), float(row[t])) for t in top]
    return token_entry(detok([token]), float(row[token]), alts)


def in_turn(fork: Fork, evaluate: Evaluate) -> list[np.ndarray]:
    """Answer ``fork`` by evaluating its parts one after another (:meth:`Fork.asks`)."""
    return [row for ask in fork.asks() for row in evaluate(*ask)]


def drive(
    steps: Evaluations, evaluate: Evaluate, fork: Callable[[Fork], list[np.ndarray]] | None = None
) -> Any:
    """Run ``steps`` to the end, evaluating what it asks with ``evaluate`` (a :class:`Fork`
    with ``fork``, else :func:`in_turn`); its result."""
    try:
        ask = next(steps)
        while True:
            if isinstance(ask, Fork):
                rows = fork(ask) if fork is not None else in_turn(ask, evaluate)
            else:
                rows = evaluate(*ask)
            ask = steps.send(rows)
    except StopIteration as stop:
        return stop.value


def _logprob(cont: Tokens, first: np.ndarray, follow: list[np.ndarray]) -> float:
    """Log-probability of ``cont``: ``first`` (log-softmax) predicts its first token, the raw
    logits ``follow`` the rest."""
    lp = float(first[cont[0]])
    return lp + sum(float(log_softmax(r)[t]) for t, r in zip(cont[1:], follow, strict=True))


def continuation_logprob(cont: Tokens, first: np.ndarray, pos: int) -> Evaluations:
    """Log-probability of the tokens ``cont`` at ``pos``; ``first``: the log-softmax row
    that predicts ``cont[0]``."""
    follow = (yield cont[:-1], pos) if len(cont) > 1 else []
    return _logprob(cont, first, follow)


def _answer_span(text: str) -> tuple[int, int, Any] | None:
    """Character span and value of the ``"answer"`` value in generated JSON text."""
    key = text.find('"answer"')
    if key < 0:
        return None
    colon = text.find(":", key + len('"answer"'))
    if colon < 0:
        return None
    start = colon + 1
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    return start, end, value


@dataclass(frozen=True)
class OptionLayout:
    """Where the ``answer`` value sits in generated JSON tokens, for scoring every option.

    Attributes:
        first: Index of the token holding the value's first character.
        lead: Text of that token before the value.
        tail: Text after the value (e.g. ``}``).
        text: The whole generated text.
        begin: Character offset of token ``first`` in ``text``.
        generated: The value that was generated.
    """

    first: int
    lead: str
    tail: str
    text: str
    begin: int
    generated: Any

    @classmethod
    def of(cls, out: Tokens, detok: Callable[[Sequence[int]], str]) -> OptionLayout | None:
        """The layout of generated tokens ``out``; ``None`` when no answer value is found."""
        pieces = [detok([t]) for t in out]
        text = "".join(pieces)
        span = _answer_span(text)
        if span is None:
            return None
        start, end, generated = span
        offsets = np.cumsum([len(p) for p in pieces])
        first = int(np.searchsorted(offsets, start, side="right"))
        begin = int(offsets[first - 1]) if first else 0
        return cls(first, text[begin:start], text[end:], text, begin, generated)

    def continuation(self, value: Any) -> str:
        """The text scored for option ``value``: ``lead + value + tail``."""
        return self.lead + json.dumps(value) + self.tail

    def entries(
        self, entries: list[dict[str, Any]], scored: list[tuple[str, float, bool]]
    ) -> list[dict[str, Any]]:
        """``entries`` with the answer's tokens replaced by one entry over every option.

        Args:
            entries: Per-token entries of the generated tokens.
            scored: ``(continuation, logprob, is_generated)`` for each option.
        """
        chosen = next((lp for _, lp, hit in scored if hit), max(lp for _, lp, _ in scored))
        alts = sorted(((t, lp) for t, lp, _ in scored), key=lambda a: -a[1])
        return [*entries[: self.first], token_entry(self.text[self.begin :], chosen, alts)]


def score_options(
    out: Tokens,
    n_prompt: int,
    rows: list[np.ndarray],
    entries: list[dict[str, Any]],
    schema: dict[str, Any] | None,
    tokenize: Callable[[str], Tokens],
    detok: Callable[[Sequence[int]], str],
) -> Evaluations:
    """The log-probability entries of sampled tokens ``out``, the ``answer`` value's tokens
    replaced by one entry whose alternatives are all the options (when ``schema`` has an
    ``answer`` enum and ``out`` holds its value).

    Each option's log-probability is that of the whole continuation ``lead + value + tail``
    (``lead``: text of the value's first token before the value, ``tail``: the text after
    the value, e.g. ``}``) after the generated tokens that precede the value, under the
    unconstrained model; the tail makes ``1`` and ``10`` distinguishable.

    Args:
        out: The generated tokens.
        n_prompt: Tokens in the prompt (``out`` starts at this position).
        rows: Log-softmax rows that predicted each token of ``out``.
        entries: Per-token entries of ``out``.
        schema: The answer's JSON Schema.
        tokenize: Text to tokens (no BOS).
        detok: Tokens to text.
    """
    enum = answer_enum(schema)
    layout = OptionLayout.of(out, detok) if enum is not None else None
    if enum is None or layout is None:
        return entries
    scored = []
    for value in enum:
        text = layout.continuation(value)
        cont = tokenize(text)
        lp = yield from continuation_logprob(cont, rows[layout.first], n_prompt + layout.first)
        scored.append((text, lp, value == layout.generated))
    return layout.entries(entries, scored)


@dataclass(frozen=True)
class AnswerOptions:
    """The token continuations of a drawn answer: ``{"answer": <option>}`` for each option.

    Attributes:
        shared: The tokens every option starts with, up to the value (``{"``, ``answer``,
            ``":``, `` `` for Gemma): evaluated once.
        own: Each option's remaining tokens, in the schema's order.
    """

    shared: Tokens
    own: list[Tokens]

    @classmethod
    def of(
        cls,
        drawn: bool,
        schema: dict[str, Any] | None,
        budget: int,
        tokenize: Callable[[str], Tokens],
        detok: Callable[[Sequence[int]], str],
    ) -> AnswerOptions | None:
        """The continuations of ``schema``'s options when answers are ``drawn`` (the engine's
        ``drawn_answers``), the schema's only property is an ``answer`` enum and the longest
        continuation fits ``budget`` tokens; else ``None`` (the answer is sampled)."""
        enum = answer_enum(schema) if drawn else None
        if enum is None or set((schema or {}).get("properties", {})) != {"answer"}:
            return None
        conts = [tokenize(ANSWER_LEAD + json.dumps(v) + ANSWER_TAIL) for v in enum]
        if max(len(c) for c in conts) > budget:
            return None
        # Shared tokens stop before the value's first character, so that the token holding
        # it is the answer's entry (where simworld.llm.logprobs reads the distribution).
        n, width = 0, 0
        for i, token in enumerate(conts[0]):
            width += len(detok([token]))
            if width > len(ANSWER_LEAD) or any(len(c) <= i or c[i] != token for c in conts):
                break
            n = i + 1
        return cls(conts[0][:n], [c[n:] for c in conts])


def draw_option(scores: Sequence[float], temperature: float, seed: int) -> int:
    """The index of the option drawn from log-probabilities ``scores`` with ``seed``.

    The rules of token sampling (:mod:`simworld.llm.providers.local_sampler`), applied to
    whole options: temperature 0 takes the most likely (the first of equals); otherwise the
    :data:`TOP_K` most likely, then the fewest whose probabilities reach :data:`TOP_P`, then
    those at least :data:`MIN_P` times as likely as the most likely, are kept, and one is
    drawn with probabilities proportional to ``exp(score / temperature)``, by one uniform
    number from :class:`random.Random` seeded with ``seed``.
    """
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    best = order[0]
    if temperature <= 0.0:
        return best
    probs = [math.exp(s - scores[best]) for s in scores]
    total = sum(probs)
    keep, mass = [], 0.0
    for i in order[:TOP_K]:
        keep.append(i)
        mass += probs[i] / total
        if mass >= TOP_P:
            break
    keep = [i for i in keep if probs[i] >= MIN_P * probs[best]]
    weights = [math.exp((scores[i] - scores[best]) / temperature) for i in keep]
    u = random.Random(seed).random() * sum(weights)
    for i, w in zip(keep, weights, strict=True):
        u -= w
        if u < 0.0:
            return i
    return keep[-1]


class DrawSettings(Protocol):
    """What a draw takes from a call's decoding settings
    (:class:`~simworld.llm.providers.local_engine.Sampling`)."""

    @property
    def temperature(self) -> float:
        """Sampling temperature (0: the most likely)."""

    @property
    def seed(self) -> int:
        """The call's seed."""

    @property
    def top_logprobs(self) -> int | None:
        """Alternatives per token to report; ``None`` for no log-probabilities."""


def drawn_answer(
    options: AnswerOptions,
    last: np.ndarray,
    n_prompt: int,
    settings: DrawSettings,
    detok: Callable[[Sequence[int]], str],
) -> Evaluations:
    """Score every option after the prompt and draw the answer (see the module docstring).

    Args:
        options: The options' continuations.
        last: Logits after the prompt's last token.
        n_prompt: Tokens in the prompt.
        settings: Temperature, seed and log-probabilities wanted.
        detok: Tokens to text.

    Returns:
        ``(tokens, text, logprobs)`` of the answer; ``logprobs``: an entry per shared token,
        then one for the option whose alternatives are every option, or ``None``.
    """
    shared = options.shared
    evaluated = yield Fork(shared, [own[:-1] for own in options.own], n_prompt)
    rows = [last, *evaluated[: len(shared)]]  # rows[i] predicts shared[i], the last: options
    first = log_softmax(rows[-1])
    scores = []
    at = len(shared)
    for own in options.own:
        scores.append(_logprob(own, first, evaluated[at : at + len(own) - 1]))
        at += len(own) - 1
    pick = draw_option(scores, settings.temperature, settings.seed)
    out = shared + options.own[pick]
    logprobs = None
    if settings.top_logprobs is not None:  # only then the shared tokens' rows are normalised
        k = top_count(settings.top_logprobs)
        logprobs = [
            logprob_entry(log_softmax(row), t, k, detok)
            for t, row in zip(shared, rows, strict=False)
        ]
        alts = sorted(
            ((detok(o), lp) for o, lp in zip(options.own, scores, strict=True)),
            key=lambda a: -a[1],
        )
        logprobs.append(token_entry(detok(options.own[pick]), scores[pick], alts))
    return out, detok(out), logprobs
