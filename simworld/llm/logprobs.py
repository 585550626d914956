"""Opinion distributions from token log-probabilities of a structured probe answer."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

Value = int | float | str
TokenLogprob = dict[str, Any]
_ANSWER_KEY = re.compile(r'"answer"\s*:\s*')
# Characters that may follow a complete JSON value.
_TERMINATORS = frozenset('"},] \t\r\n')


@dataclass(frozen=True)
class OptionDistribution:
    """The model's distribution over the allowed answers at the answer position.

    Attributes:
        probs: Normalised probability of each allowed value, in the order given.
        expected: Probability-weighted mean when every value is a number, else ``None``.
        position: Index of the token entry the distribution was read from.
    """

    probs: dict[Value, float]
    expected: float | None
    position: int


def answer_enum(schema: dict[str, Any] | None) -> list[Value] | None:
    """The allowed values of a schema's ``answer`` property, or ``None``."""
    if not schema:
        return None
    enum = schema.get("properties", {}).get("answer", {}).get("enum")
    return list(enum) if enum else None


def logprob_content(logprobs: Any) -> list[TokenLogprob] | None:
    """Plain-dict copy of an OpenAI-format ``choices[i].logprobs`` (object or dict).

    Log-probabilities are an extra of an answer: a server's that are not in this format, or
    not finite numbers, are taken as none (the answer stands; no distribution is read from
    them), never as a failed call.

    Returns:
        ``[{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]``, or ``None``
        when there are no usable log-probabilities.
    """
    if logprobs is None:
        return None
    content = (
        logprobs.get("content")
        if isinstance(logprobs, dict)
        else getattr(logprobs, "content", None)
    )
    if not content or not isinstance(content, list):
        return None
    try:
        out = [_token_logprob(entry) for entry in content]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    numbers = [e["logprob"] for e in out] + [a["logprob"] for e in out for a in e["top_logprobs"]]
    return out if all(math.isfinite(n) for n in numbers) else None


def _token_logprob(entry: Any) -> TokenLogprob:
    item = entry if isinstance(entry, dict) else entry.model_dump()
    alternatives = [
        {"token": str(alt["token"]), "logprob": float(alt["logprob"])}
        for alt in (item.get("top_logprobs") or [])
    ]
    return {
        "token": str(item["token"]),
        "logprob": float(item["logprob"]),
        # an alternative of probability 0 (log-probability -inf) is as good as absent
        "top_logprobs": [a for a in alternatives if a["logprob"] != -math.inf],
    }


def token_entry(token: str, logprob: float, alts: list[tuple[str, float]]) -> dict[str, Any]:
    """One generated token in OpenAI's log-probability format, with its alternatives."""
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode("utf-8")),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))} for t, lp in alts
        ],
    }


def expected_value(probs: dict[Value, float]) -> float | None:
    """Probability-weighted mean of numeric values (``None`` if any value is not a number)."""
    if not probs or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in probs):
        return None
    return float(sum(float(v) * p for v, p in probs.items()))


def _match(rest: str, values: list[Value]) -> list[Value]:
    """Values a token's text ``rest`` (starting at the value's first character) points to.

    A complete match (the value followed by nothing or a JSON terminator) wins; otherwise
    every value that ``rest`` is a proper prefix of.
    """
    full, partial = [], []
    for value in values:
        text = str(value)
        if rest.startswith(text) and (len(rest) == len(text) or rest[len(text)] in _TERMINATORS):
            full.append(value)
        elif text.startswith(rest):
            partial.append(value)
    return full or partial


def option_distribution(
    content: list[TokenLogprob], values: list[Value]
) -> OptionDistribution | None:
    """Distribution over ``values`` read from the token where the answer value is emitted.

    The generated tokens are joined; the answer value starts after ``"answer":`` (or at the
    first non-blank character when there is no such key) and its first significant
    character is the one after an opening quote for string values. The token covering that
    character is the answer position. Each of its ``top_logprobs`` alternatives whose text
    begins like the chosen token up to that character is mapped to the values it spells
    (see :func:`_match`); its probability goes to that value, split evenly when a token is
    a prefix of several values (e.g. ``Str`` for ``Strongly agree``/``Strongly disagree``).
    Alternatives spelling no allowed value are dropped and the rest renormalised, giving
    the distribution conditional on answering with one of ``values``. Values absent from
    the alternatives get probability 0.

    Args:
        content: Per-token entries ``{"token", "logprob", "top_logprobs": [...]}``.
        values: The allowed answers.

    Returns:
        The distribution, or ``None`` when no answer position or no matching alternative
        is found.
    """
    if not content or not values:
        return None
    tokens = [str(e["token"]) for e in content]
    text = "".join(tokens)
    key = _ANSWER_KEY.search(text)
    start = key.end() if key else len(text) - len(text.lstrip())
    if start >= len(text):
        return None
    if text[start] == '"':
        start += 1
    begin, position = 0, -1
    for i, token in enumerate(tokens):
        if begin + len(token) > start:
            position = i
            break
        begin += len(token)
    if position < 0:
        return None
    lead = text[begin:start]
    entry = content[position]
    alternatives = entry.get("top_logprobs") or [
        {"token": entry["token"], "logprob": entry["logprob"]}
    ]
    mass = dict.fromkeys(values, 0.0)
    for alt in alternatives:
        token = str(alt["token"])
        if not token.startswith(lead) or len(token) == len(lead):
            continue
        matched = _match(token[len(lead) :], values)
        for value in matched:
            mass[value] += math.exp(float(alt["logprob"])) / len(matched)
    total = sum(mass.values())
    if total <= 0.0:
        return None
    probs = {v: m / total for v, m in mass.items()}
    return OptionDistribution(probs, expected_value(probs), position)
