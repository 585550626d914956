"""The ``fake/...`` provider: deterministic, persona-aware answers for tests and dry runs.

Model strings take options after ``?``:
``fake/default?latency_ms=100&latency_jitter_ms=50&failure_rate=0.3&failures=rate_limit,timeout,malformed``.
``failures`` may also name ``auth``, ``not_found`` and ``bad_request``: errors that no retry
fixes (they stop a run).
Latency jitter is drawn from the call's seed, so calls finish in a scrambled but repeatable
order; injected timeouts are raised at once (no waiting). Injected failures are drawn from the
call's seed and the number of transient failures it has had (the request parameter
``transient_failures``, sent by simworld on a retry), so a retried call can succeed even though
its seed is unchanged. ``position_bias=b`` (0..1) makes
a structured answer pick the option shown first with probability b (drawn from the call's
seed) whatever its content, the position effect the signal checks must catch
(docs/metrics.md §8); with b = 0 (the default) answers follow content only.

The fake reads the conventions of simworld's prompt templates (pinned in
:mod:`simworld.llm.providers.prompt_format`): the ``Topic:`` line, option lines
``  <value> = <label>`` and the persona's ``- <statement>: <label>`` start views. Its
position on a topic is the weighted average (Likert) or weighted mode (choice) of the labels
in its context: its start view counts twice, every position it has heard counts once. A
structured answer with a ``message`` text field (a speech call with an inline stance) gets
the same message a free-text call would, and its position as the answer; a questionnaire of
several ``Topic:`` items (``protocol.probe_batch``) gets each item answered on its own. All
randomness comes from the ``seed`` simworld derives from each call's identity.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

import litellm
from litellm import CustomLLM
from litellm.types.utils import ModelResponse

from simworld.llm.logprobs import token_entry
from simworld.llm.providers.prompt_format import OPTION_LINE as _OPTION
from simworld.llm.providers.prompt_format import TOPIC_LINE as _TOPIC
from simworld.llm.types import TRANSIENT_OPTION

FAILURE_KINDS = ("rate_limit", "timeout", "malformed")
"""The failures injected when ``failures`` is not given."""
# Failures that no retry fixes, injected only when named in ``failures``.
FATAL_FAILURE_KINDS = ("auth", "not_found", "bad_request")
PARSED_MODELS = 256  # model strings whose options are kept parsed
SELF_WEIGHT = 2.0
# Log-probabilities (only when asked): ordinal options get weight exp(-SHARPNESS * distance
# from the answer); categorical ones CHOSEN_PROB for the answer, the rest shared evenly.
LOGPROB_SHARPNESS = 1.0
CHOSEN_PROB = 0.6
_SAYINGS = (
    "Speaking for myself, my position is {label}.",
    "Having listened to everyone, I land on {label}.",
    "Where do I stand? {label}, and I have my reasons.",
    "For me it is {label}; that is how I see it today.",
)


@dataclass(frozen=True)
class FakeOptions:
    """Options parsed from a fake model string."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    failure_rate: float = 0.0
    failures: tuple[str, ...] = FAILURE_KINDS
    position_bias: float = 0.0

    def latency_s(self, seed: int) -> float:
        """This call's latency: the base plus a seeded share of the jitter."""
        return (self.latency_ms + _unit(seed, "latency") * self.latency_jitter_ms) / 1000

    @classmethod
    @lru_cache(maxsize=PARSED_MODELS)
    def parse(cls, model: str) -> FakeOptions:
        """Parse ``name?key=value&...`` (the part after ``fake/``); remembered per string."""
        _, _, query = model.partition("?")
        q = {k: v[-1] for k, v in parse_qs(query).items()}
        known = {"latency_ms", "latency_jitter_ms", "failure_rate", "failures", "position_bias"}
        unknown_keys = set(q) - known
        if unknown_keys:
            raise ValueError(f"fake provider: unknown option(s) {sorted(unknown_keys)}")
        kinds = tuple(k for k in q.get("failures", ",".join(FAILURE_KINDS)).split(",") if k)
        unknown = set(kinds) - set(FAILURE_KINDS) - set(FATAL_FAILURE_KINDS)
        if unknown:
            raise ValueError(f"fake provider: unknown failure kind(s) {sorted(unknown)}")
        return cls(
            latency_ms=_number(q.get("latency_ms", "0"), "latency_ms"),
            latency_jitter_ms=_number(q.get("latency_jitter_ms", "0"), "latency_jitter_ms"),
            failure_rate=_share(q.get("failure_rate", "0"), "failure_rate"),
            failures=kinds,
            position_bias=_share(q.get("position_bias", "0"), "position_bias"),
        )


def _number(text: str, name: str) -> float:
    """A finite, non-negative option (a latency in milliseconds)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"fake provider: {name} must be a number, got {text!r}") from None
    if not 0.0 <= value < math.inf:
        raise ValueError(f"fake provider: {name} must be a number from 0 up, got {text}")
    return value


def _share(text: str, name: str) -> float:
    """A probability option, checked to lie in [0, 1]."""
    value = _number(text, name)
    if value > 1.0:
        raise ValueError(f"fake provider: {name} must be between 0 and 1, got {text}")
    return value


def _unit(seed: int, salt: str) -> float:
    digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _label_pattern(labels: list[str]) -> re.Pattern[str]:
    ordered = sorted(labels, key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(lab) for lab in ordered) + r")\b", re.IGNORECASE)


def infer_position(
    messages: list[dict[str, str]], seed: int, temperature: float
) -> tuple[str, str] | None:
    """The fake's position as ``(value, label)``, or ``None`` when the prompt has no options."""
    user = messages[-1]["content"] if messages else ""
    options = _OPTION.findall(user)
    topic = _TOPIC.search(user)
    if not options or topic is None:
        return None
    by_label = {label.casefold(): value for value, label in options}
    pattern = _label_pattern([label for _, label in options])
    weights: dict[str, float] = {}
    statement = topic.group(1)
    for msg in messages[:-1]:
        for line in msg["content"].splitlines():
            if line.startswith("- ") and statement in line:
                for m in pattern.finditer(line.split(statement, 1)[1]):
                    value = by_label[m.group(1).casefold()]
                    weights[value] = weights.get(value, 0.0) + SELF_WEIGHT
    body = _OPTION.sub("", user).replace(statement, "")
    for m in pattern.finditer(body):
        value = by_label[m.group(1).casefold()]
        weights[value] = weights.get(value, 0.0) + 1.0
    values = [v for v, _ in options]
    if not weights:
        choice = values[int(_unit(seed, "blank") * len(values))]
    elif all(v.lstrip("-").isdigit() for v in values):
        mean = sum(int(v) * w for v, w in weights.items()) / sum(weights.values())
        noise = (_unit(seed, "noise") - 0.5) * temperature
        nums = [int(v) for v in values]
        choice = str(min(max(round(mean + noise), min(nums)), max(nums)))
    else:
        best = max(weights.values())
        tied = sorted(v for v, w in weights.items() if w == best)
        choice = tied[int(_unit(seed, "tie") * len(tied))]
    label = next(lab for v, lab in options if v == choice)
    return choice, label


def first_option(messages: list[dict[str, str]]) -> tuple[str, str] | None:
    """The ``(value, label)`` shown first in the last message's option lines, if any."""
    options = _OPTION.findall(messages[-1]["content"] if messages else "")
    return (options[0][0], options[0][1]) if options else None


def _fill(schema: dict[str, Any], position: tuple[str, str] | None, seed: int) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        enum = schema["enum"]
        if position is not None:
            for item in enum:
                if str(item) == position[0]:
                    return item
        return enum[int(_unit(seed, "enum") * len(enum))]
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _fill(v, position, seed) for k, v in props.items()}
    if kind == "array":
        return [_fill(schema.get("items", {}), position, seed)]
    if kind == "integer":
        lo, hi = int(schema.get("minimum", 0)), int(schema.get("maximum", 10))
        return lo + int(_unit(seed, "int") * (hi - lo + 1))
    if kind == "number":
        low, high = float(schema.get("minimum", 0.0)), float(schema.get("maximum", 1.0))
        return low + _unit(seed, "num") * (high - low)
    if kind == "boolean":
        return _unit(seed, "bool") < 0.5
    return "fake text"


def _option_logprobs(enum: list[Any], chosen: Any) -> list[tuple[str, float]]:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in enum)
    if numeric:
        weights = [math.exp(-LOGPROB_SHARPNESS * abs(v - chosen)) for v in enum]
    elif len(enum) == 1:
        weights = [1.0]
    else:
        rest = (1.0 - CHOSEN_PROB) / (len(enum) - 1)
        weights = [CHOSEN_PROB if v == chosen else rest for v in enum]
    total = sum(weights)
    alts = [(json.dumps(v), math.log(w / total)) for v, w in zip(enum, weights, strict=True)]
    return sorted(alts, key=lambda a: -a[1])


def fake_logprobs(text: str, schema: dict[str, Any] | None, seed: int) -> list[dict[str, Any]]:
    """Deterministic OpenAI-format ``logprobs.content`` for a fake answer.

    A JSON answer with an ``answer`` enum becomes three entries (text before the value, the
    value with every option as an alternative, text after it); other text one entry per
    whitespace-led word with a seeded log-probability in ``(log 0.5, 0]``.
    """
    enum = (schema or {}).get("properties", {}).get("answer", {}).get("enum")
    try:
        data = json.loads(text) if enum else None
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and data.get("answer") in enum:
        value = json.dumps(data["answer"])
        at = text.index(value, text.index(":") + 1)
        head, tail = text[:at], text[at + len(value) :]
        alts = _option_logprobs(enum, data["answer"])
        chosen = next(lp for t, lp in alts if t == value)
        parts = [token_entry(head, 0.0, [(head, 0.0)]), token_entry(value, chosen, alts)]
        return parts + ([token_entry(tail, 0.0, [(tail, 0.0)])] if tail else [])
    words = re.findall(r"\s*\S+", text)
    out = []
    for i, word in enumerate(words):
        lp = math.log(0.5 + 0.5 * _unit(seed, f"logprob:{i}"))
        out.append(token_entry(word, lp, [(word, lp)]))
    return out


def _fill_batch(
    messages: list[dict[str, str]], schema: dict[str, Any], seed: int, temperature: float
) -> dict[str, Any] | None:
    """A questionnaire's answers (``protocol.probe_batch``), or None for any other prompt.

    When the last message has one ``Topic:`` item per answer field, each field is answered
    like a single probe of its own item (the text from its ``Topic:`` line to the next), with
    a seed drawn from the call's seed and the field name.
    """
    props = schema.get("properties", {})
    user = messages[-1]["content"] if messages else ""
    starts = [m.start() for m in _TOPIC.finditer(user)]
    if len(starts) < 2 or len(starts) != len(props):
        return None
    ends = [*starts[1:], len(user)]
    out: dict[str, Any] = {}
    for (name, sub), start, end in zip(props.items(), starts, ends, strict=True):
        item_seed = int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16)
        item = [*messages[:-1], {"role": "user", "content": user[start:end]}]
        out[name] = _fill(sub, infer_position(item, item_seed, temperature), item_seed)
    return out


def _injected_failure(opts: FakeOptions, seed: int, transient: int) -> str | None:
    """The failure injected into this request, if any: drawn from the call's seed and the
    number of transient failures it has had (a retry after one keeps the seed, see
    :meth:`simworld.llm.types.LanguageModel.complete`, and draws again)."""
    salt = f":{transient}" if transient else ""
    if not opts.failures or _unit(seed, "fail" + salt) >= opts.failure_rate:
        return None
    return opts.failures[int(_unit(seed, "kind" + salt) * len(opts.failures))]


def _saying(position: tuple[str, str] | None, seed: int) -> str:
    """A free-text message stating ``position`` (a seeded phrasing), or a neutral line."""
    if position is None:
        return "I have nothing to add."
    saying = _SAYINGS[int(_unit(seed, "saying") * len(_SAYINGS))]
    return saying.format(label=position[1])


def _says_message(schema: dict[str, Any]) -> bool:
    """Whether a structured answer carries a ``message`` text (``trackers.stance: inline``):
    it is filled with the message the fake would have written as free text."""
    return schema.get("properties", {}).get("message", {}).get("type") == "string"


class FakeLLM(CustomLLM):
    """litellm custom provider behind ``fake/...`` model strings."""

    def _answer(
        self, model: str, messages: list[dict[str, str]], params: dict[str, Any]
    ) -> ModelResponse:
        opts = FakeOptions.parse(model)
        seed = int(params.get("seed") or 0)
        temperature = float(params.get("temperature") or 0.0)
        failure = _injected_failure(opts, seed, int(params.get(TRANSIENT_OPTION) or 0))
        if failure == "rate_limit":
            raise litellm.RateLimitError(
                "fake: injected rate limit", llm_provider="fake", model=model
            )
        if failure == "timeout":
            raise litellm.Timeout("fake: injected timeout", model=model, llm_provider="fake")
        if failure == "auth":
            raise litellm.AuthenticationError(
                "fake: injected authentication error", llm_provider="fake", model=model
            )
        if failure == "not_found":
            raise litellm.NotFoundError(
                "fake: injected unknown model", llm_provider="fake", model=model
            )
        if failure == "bad_request":
            raise litellm.BadRequestError(
                "fake: injected bad request", llm_provider="fake", model=model
            )
        position = infer_position(messages, seed, temperature)
        fmt = params.get("response_format")
        if fmt and opts.position_bias and _unit(seed, "position") < opts.position_bias:
            position = first_option(messages) or position
        if failure == "malformed":
            text = '{"answer": ' if fmt else ""
        elif fmt:
            schema = fmt.get("json_schema", {}).get("schema", {})
            batch = _fill_batch(messages, schema, seed, temperature)
            data = batch if batch is not None else _fill(schema, position, seed)
            if _says_message(schema):  # a speech call with an inline stance
                data["message"] = _saying(position, seed)
            text = json.dumps(data)
        else:
            text = _saying(position, seed)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        choice: dict[str, Any] = {
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        if params.get("logprobs"):
            schema = fmt.get("json_schema", {}).get("schema") if fmt else None
            choice["logprobs"] = {"content": fake_logprobs(text, schema, seed)}
        response = litellm.ModelResponse(
            model=model,
            choices=[choice],
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(text.split()),
                "total_tokens": prompt_tokens + len(text.split()),
            },
        )
        # A free provider: telling litellm the cost spares it a slow cost-map search.
        response._hidden_params["response_cost"] = 0.0
        return response

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
        """Synchronous answer (sleeps for the configured latency)."""
        params = kwargs.get("optional_params") or {}
        latency = FakeOptions.parse(model).latency_s(int(params.get("seed") or 0))
        if latency:
            time.sleep(latency)
        return self._answer(model, messages, params)

    async def acompletion(
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        """Asynchronous answer (awaits the configured latency)."""
        params = kwargs.get("optional_params") or {}
        latency = FakeOptions.parse(model).latency_s(int(params.get("seed") or 0))
        if latency:
            await asyncio.sleep(latency)
        return self._answer(model, messages, params)
