"""The LLM gateway: concurrency cap, retries, structured output, accounting and record/replay."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import openai
from pydantic import BaseModel, ValidationError

from simworld.config.scenario import LLMConfig
from simworld.errors import ModelFailureError, ReplayMissError
from simworld.llm.cache import ResponseCache
from simworld.llm.errors import (
    FATAL_KINDS,
    MAX_ERROR_CHARS,
    error_kind,
    is_transient,
    retry_after_s,
)
from simworld.llm.errors import TRANSIENT_ERRORS as TRANSIENT_ERRORS  # moved; kept importable
from simworld.llm.prefix import PrefixCount, PrefixMeter, prefix_share
from simworld.llm.slots import Slot, calling_with
from simworld.llm.types import (
    CallIdentity,
    Completion,
    LanguageModel,
    LLMRequest,
)
from simworld.support.progress import CallProgress
from simworld.support.redact import Redactor

TRACEBACK = "Traceback (most recent call last)"
"""Where a recorded error message is cut: the traceback (of this machine's files) that
litellm appends to some messages tells nothing about the call."""
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+\b")
"""An object's memory address in a message (``<ssl.SSLContext object at 0x7f...>``):
dropped, so that the same failure is recorded alike in every run."""
# The longest ``Retry-After`` honoured: a server asking for more gets this (then the retry).
RETRY_AFTER_MAX_S = 300.0
# Provider extras kept in call records; raw token log-probabilities would swell transcripts.
RECORDED_EXTRAS = ("option_probs",)
# Attempts under way per slot of the cap: with a backend that takes its slot when the request
# leaves, one call set up and waiting for every call out.
AHEAD_PER_SLOT = 2


@dataclass
class CallOutcome:
    """The result of one logical call: a validated answer or a recorded failure.

    ``cached``, ``latency_s``, ``prompt_tokens_est``, ``prefix_tokens`` and
    ``cacheable_tokens`` describe this execution only (the last two depend on the run's earlier
    prompts); everything else is the deterministic record that goes to the transcript and the
    cache.
    """

    key: str
    identity: CallIdentity
    model: str
    status: Literal["ok", "failed"]
    text: str | None
    parsed: dict[str, Any] | None
    attempts: int
    errors: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    latency_s: float = 0.0
    prompt_tokens_est: int = 0
    """Estimated prompt tokens (characters / 4, :mod:`simworld.llm.prefix`); set by the gateway,
    not part of the cached record."""
    prefix_tokens: int = 0
    """Of those, the ones repeating the agent's previous prompt (:mod:`simworld.llm.prefix`);
    set by the gateway for this run, not part of the cached record."""
    cacheable_tokens: int = 0
    """Of those, the ones in leading blocks an earlier prompt of the run to the same model
    (any agent) also started with (:class:`~simworld.llm.prefix.BlockCache`); set by the
    gateway for this run, not part of the cached record."""
    cached_prompt_tokens: int = 0
    """Prompt tokens the provider took from its prefix cache in this execution, summed over
    the call's attempts (:attr:`~simworld.llm.types.Completion.cached_prompt_tokens`); 0 for
    an answer from simworld's cache; not part of the cached record."""

    @property
    def ok(self) -> bool:
        """Whether the call produced a valid answer."""
        return self.status == "ok"

    @property
    def fatal(self) -> dict[str, Any] | None:
        """The error that no retry can fix, when the call failed with one (see
        :data:`FATAL_KINDS`)."""
        if self.ok:
            return None
        return next((e for e in self.errors if e.get("kind") in FATAL_KINDS), None)

    def record(self) -> dict[str, Any]:
        """The deterministic record (no timing, no cache flag).

        Built field by field: ``dataclasses.asdict`` deep-copies, which costs more than a
        replayed call. Nested values are shared with the outcome (neither is ever changed).
        """
        out = {name: getattr(self, name) for name in _RECORDED}
        out["identity"] = {name: getattr(self.identity, name) for name in _IDENTITY}
        return out

    @classmethod
    def from_record(cls, data: dict[str, Any], *, cached: bool) -> CallOutcome:
        """Rebuild an outcome stored by :meth:`record`."""
        data = dict(data)
        data["identity"] = CallIdentity(**data["identity"])
        return cls(**data, cached=cached)


_RUNTIME = (
    "cached",
    "latency_s",
    "prompt_tokens_est",
    "prefix_tokens",
    "cacheable_tokens",
    "cached_prompt_tokens",
)
_RECORDED = tuple(f.name for f in fields(CallOutcome) if f.name not in _RUNTIME)
_IDENTITY = tuple(f.name for f in fields(CallIdentity))
_MASKED = ("model", "text", "parsed", "errors", "extra")
"""The recorded fields besides ``identity`` that can hold text (:meth:`Gateway._mask`)."""


@dataclass
class Accounting:
    """Totals over a gateway's life.

    Attributes:
        calls: Logical calls answered (from the model or the cache).
        model_calls: Requests actually sent to a model (attempts included).
        cache_hits: Logical calls served from the cache.
        failures: Logical calls that ended in failure.
        prompt_tokens: Input tokens of all logical calls.
        completion_tokens: Output tokens of all logical calls.
        cost_usd: Recorded cost of all logical calls (unknown prices count as 0; what the
            budget limits).
        spent_usd: Cost of the requests sent in this process.
        unpriced_calls: Calls whose price litellm does not know.
        prompt_tokens_est: Estimated prompt tokens of all logical calls (characters / 4,
            :mod:`simworld.llm.prefix`).
        prefix_tokens_est: Of those, the estimated tokens that repeat the leading part of
            the same agent's previous prompt (what a provider prefix cache can reuse).
        cacheable_tokens_est: Of those, the estimated tokens in leading blocks that an
            earlier prompt of the run to the same model, of any agent, also started with
            (what a provider's shared block cache can reuse;
            :class:`~simworld.llm.prefix.BlockCache`).
        cached_prompt_tokens: Prompt tokens of the requests sent in this process that the
            provider reported as taken from its prefix cache, not evaluated again (the
            embedded model's prefix reuse; OpenAI's ``cached_tokens``). Depends on what ran
            before each call, so it varies with concurrency, unlike every other total.
    """

    calls: int = 0
    model_calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    spent_usd: float = 0.0
    unpriced_calls: int = 0
    prompt_tokens_est: int = 0
    prefix_tokens_est: int = 0
    cacheable_tokens_est: int = 0
    cached_prompt_tokens: int = 0

    @property
    def prefix_share(self) -> float | None:
        """Share of estimated prompt tokens repeating the agent's previous prompt's prefix."""
        return prefix_share(self.prefix_tokens_est, self.prompt_tokens_est)

    @property
    def cacheable_share(self) -> float | None:
        """Share of estimated prompt tokens in blocks an earlier prompt of the run began with."""
        return prefix_share(self.cacheable_tokens_est, self.prompt_tokens_est)

    def add_prefix(self, count: PrefixCount) -> None:
        """Count one logical call's prefix estimates."""
        self.prompt_tokens_est += count.prompt_tokens
        self.prefix_tokens_est += count.prefix_tokens
        self.cacheable_tokens_est += count.cacheable_tokens

    def add(self, outcome: CallOutcome) -> None:
        """Count one logical call."""
        self.calls += 1
        self.cache_hits += int(outcome.cached)
        self.failures += int(not outcome.ok)
        self.prompt_tokens += outcome.prompt_tokens
        self.completion_tokens += outcome.completion_tokens
        self.cached_prompt_tokens += outcome.cached_prompt_tokens
        if outcome.cost_usd is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += outcome.cost_usd
            if not outcome.cached:
                self.spent_usd += outcome.cost_usd


class Gateway:
    """The only path from simworld to a model.

    Args:
        model: The backend (normally :class:`~simworld.llm.litellm_backend.LiteLLMModel`).
        config: The scenario's LLM settings.
        cache: The record/replay store (required unless ``config.cache == "off"``).
        redactor: Masks secrets in recorded error messages.
        jitter: Random source for backoff jitter (timing only, never results).
    """

    def __init__(
        self,
        model: LanguageModel,
        *,
        config: LLMConfig,
        cache: ResponseCache | None,
        redactor: Redactor | None = None,
        jitter: random.Random | None = None,
    ) -> None:
        self._model = model
        self._store = cache
        self._redactor = redactor or Redactor()
        self._jitter = jitter or random.Random()
        self.accounting = Accounting()
        self.prefix = PrefixMeter()
        self.progress = CallProgress()
        self.fatal: str | None = None
        """Set by the first error no retry can fix; later calls are not sent."""
        self.failure_causes: Counter[tuple[str, str]] = Counter()
        """Failed calls counted in this process by the kind and message of their last error
        (:meth:`check_failures` names the commonest)."""
        self.keep_failures_through = -1
        """Recorded failures of steps up to this one are reused in record mode (a resumed
        run sets it to its last completed step)."""
        self.reconfigure(config)

    def _cap(self, config: LLMConfig) -> int:
        """The concurrency cap: the scenario's, lowered to what the backend can run at once.

        Queueing happens here, before the timeout clock starts, so a call waiting for an
        in-process model is never timed out (and retried with another seed) for waiting.
        """
        limit = self._model.parallelism(config.model)
        return config.concurrency if limit is None else min(config.concurrency, limit)

    def reconfigure(self, config: LLMConfig) -> None:
        """Apply settings (at start, and mid-run for a branched run); the cap follows."""
        if config.cache != "off" and self._store is None:
            raise ValueError(f"cache mode {config.cache!r} needs a cache")
        self.config = config
        cap = self._cap(config)
        self._slots = asyncio.Semaphore(cap)
        # Attempts under way, set up or out: a backend that takes its slot late
        # (LanguageModel.takes_slots) sets up at most this many calls ahead of their slots.
        self._ahead = asyncio.Semaphore(AHEAD_PER_SLOT * cap)

    def plan(self, calls_per_step: int) -> None:
        """Tell the backend, before the first step, how many calls a step of the run makes
        (:meth:`LanguageModel.plan`): a large run starts its LLM worker processes now.

        Replayed runs read every answer from the cache, and calls over ``llm.deployments``
        stay in this process (one router sees them all), so neither plans anything.
        """
        if self.config.cache == "replay" or self.config.deployments:
            return
        self._model.plan(self.config.model, calls_per_step=calls_per_step)

    async def ready(self) -> None:
        """Wait until the backend's chosen way of running calls can take them."""
        await self._model.ready()

    @property
    def _cache(self) -> ResponseCache | None:
        """The store, when the cache mode uses one."""
        return self._store if self.config.cache != "off" else None

    @property
    def budget_exhausted(self) -> bool:
        """Whether the run's recorded cost has reached the configured budget.

        The recorded cost (cached calls included) is used rather than this process's
        spending, so a resumed or replayed run stops at exactly the same step.
        """
        budget = self.config.budget_usd
        return budget is not None and self.accounting.cost_usd >= budget

    async def call(
        self, request: LLMRequest, output_type: type[BaseModel] | None = None
    ) -> CallOutcome:
        """Answer one logical call: from the cache, or from the model with retries.

        Args:
            request: The call.
            output_type: Pydantic model the answer must parse into (structured output).

        Returns:
            The outcome; failures are returned, never raised. A failure no retry can fix
            (:data:`FATAL_KINDS`) is not recorded in the cache; it sets :attr:`fatal`, after
            which calls are not sent (:meth:`check_failures` then stops the run).

        Raises:
            ReplayMissError: Replay mode and the cache lacks this call.
        """
        # measured before the first await: in call order, whatever returns first (both the
        # agent's previous prompt and the run's block cache; simworld.llm.prefix)
        prefix = self.prefix.measure(request)
        self.accounting.add_prefix(prefix)
        key = request.cache_key()
        if self.fatal is not None:
            outcome = self._not_sent(request, key)
            _stamp(outcome, prefix)
            return outcome
        retrying = False
        if self._cache is not None:
            stored = self._cache.get(key)
            if stored is not None:
                if self._reuse(stored, request.identity):
                    outcome = CallOutcome.from_record(stored, cached=True)
                    _stamp(outcome, prefix)
                    self.progress.call_started()
                    self._count(outcome)
                    return outcome
                # a failure of this run's limits is tried again and replaced; another run's
                # record (made under other limits) is left to that run
                retrying = self._within_limits(stored)
            elif self.config.cache == "replay":
                raise ReplayMissError(
                    f"replay: no recorded answer for {request.identity} (key {key[:12]})"
                )
        self.progress.call_started()
        started = time.perf_counter()
        outcome = await self._live(request, key, output_type)
        latency = time.perf_counter() - started
        cached_tokens = outcome.cached_prompt_tokens
        record = outcome.record()
        masked = self._mask(record)
        if masked != record:  # the run goes on with what is recorded, so replay matches it
            outcome = CallOutcome.from_record(masked, cached=False)
        outcome.latency_s = latency
        outcome.cached_prompt_tokens = cached_tokens
        _stamp(outcome, prefix)
        self._count(outcome)
        fatal = outcome.fatal
        if fatal is not None:  # not recorded: once the cause is fixed, the call is made again
            self.fatal = (
                f"{request.model}: {fatal['kind']} error that retrying cannot fix: "
                f"{fatal['message']}"
            )
            return outcome
        if self._cache is not None:
            self._cache.put(key, self._redactor.text(request.model), masked, replace=retrying)
        return outcome

    def _mask(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` (:meth:`CallOutcome.record`) with every credential masked: in each string
        value, nested ones included (:meth:`Redactor.deep`).

        Only values are looked at, and only those that can hold text: the field names are
        simworld's own, and the key (a hex digest), the status and the counts cannot.
        """
        out = dict(record)
        deep = self._redactor.deep
        for name in _MASKED:
            out[name] = deep(record[name])
        identity = record["identity"]
        out["identity"] = {name: deep(value) for name, value in identity.items()}
        return out

    def _count(self, outcome: CallOutcome) -> None:
        """Add a finished call to the run's totals and to the progress of its step."""
        self.accounting.add(outcome)
        if not outcome.ok and outcome.errors:
            last = outcome.errors[-1]
            self.failure_causes[str(last.get("kind")), str(last.get("message", ""))] += 1
        self.progress.call_finished(
            ok=outcome.ok,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
        )

    def _reuse(self, stored: dict[str, Any], identity: CallIdentity) -> bool:
        """Whether a recorded outcome answers the call: always in replay mode; in record mode
        a recorded failure is tried again, except in the steps a resumed run re-executes
        (:attr:`keep_failures_through`), which must reproduce what was written.

        Never one that took more retries than this run's limits allow (:meth:`_within_limits`):
        the cache key leaves the limits out, so a shared cache may hold a call as a run with
        other limits recorded it, and this run would have ended that call sooner.

        Raises:
            ReplayMissError: Replay mode, and the record took more retries than allowed.
        """
        if not self._within_limits(stored):
            if self.config.cache == "replay":
                raise ReplayMissError(
                    f"replay: the answer recorded for {identity} took more retries than "
                    "llm.max_retries / llm.max_invalid_retries allow (a run with other limits "
                    "recorded it into this cache)"
                )
            return False
        return (
            stored.get("status") == "ok"
            or self.config.cache == "replay"
            or identity.step <= self.keep_failures_through
        )

    def _within_limits(self, stored: dict[str, Any]) -> bool:
        """Whether a recorded outcome took no more retries than this run allows: the errors
        before an answer, or before a failure's last error, are the retries (invalid answers
        against ``llm.max_invalid_retries``, the rest against ``llm.max_retries``)."""
        errors = stored.get("errors") or []
        retried = errors if stored.get("status") == "ok" else errors[:-1]
        invalid = sum(e.get("kind") == "invalid_output" for e in retried)
        cfg = self.config
        return invalid <= cfg.max_invalid_retries and len(retried) - invalid <= cfg.max_retries

    def _not_sent(self, request: LLMRequest, key: str) -> CallOutcome:
        """The outcome of a call not sent because the run is stopping (never recorded)."""
        error = {"attempt": 0, "kind": "not_sent", "message": "the run is stopping"}
        return CallOutcome(
            key, request.identity, request.model, "failed", None, None, 0, [error], 0, 0, 0.0
        )

    def check_failures(self) -> None:
        """Stop the run after an error no retry can fix, or when too many of its calls have
        failed (``llm.max_failure_rate``); called at the end of every step.

        Raises:
            ModelFailureError: A call failed with an error kind in :data:`FATAL_KINDS`, or
                the share of failed logical calls so far is above the limit (the message
                then names the commonest cause, :func:`commonest_cause`).
        """
        if self.fatal is not None:
            raise ModelFailureError(self.fatal)
        acc, limit = self.accounting, self.config.max_failure_rate
        if acc.calls and acc.failures / acc.calls > limit:
            message = (
                f"{acc.failures} of {acc.calls} model calls failed "
                f"({acc.failures / acc.calls:.0%}), more than llm.max_failure_rate {limit:g}"
            )
            cause = commonest_cause(self.failure_causes)
            if cause is not None:
                kind, count, example = cause
                article = "an" if kind[:1] in "aeiou" else "a"
                message += f"; {count} of them ended in {article} {kind} error, such as: {example}"
            raise ModelFailureError(message)

    async def _attempt(self, request: LLMRequest, attempt: int, transient: int) -> Completion:
        """Send ``request`` once, holding a slot of the cap while it is out
        (:mod:`simworld.llm.slots`), timed out ``llm.timeout_s`` after the slot was taken."""
        timeout_s = self.config.timeout_s
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as clock:
            slot = Slot(self._slots, on_taken=lambda: clock.reschedule(loop.time() + timeout_s))
            try:
                if not self._model.takes_slots:
                    await slot.take()
                with calling_with(slot):
                    return await self._model.complete(
                        request, attempt=attempt, timeout_s=timeout_s, transient=transient
                    )
            finally:
                slot.give_back()

    async def _live(
        self, request: LLMRequest, key: str, output_type: type[BaseModel] | None
    ) -> CallOutcome:
        """Send ``request`` until it gives a valid answer or its retries run out.

        The sampling seed depends only on the number of invalid answers so far (the
        ``attempt`` passed to the model), never on transient failures: a call that timed out
        on a busy host, hit a rate limit or lost its connection is asked again for the same
        sample, so such failures change what is recorded about the call (its ``attempts``
        and ``errors``) but never its answer. The ``attempt`` of a recorded error counts
        every request sent for the call.

        A timeout cancels the request. The embedded ``local/`` model then stops the
        abandoned call before its next prefill chunk or generated token (in its child
        process too), so the retry does not wait behind it, and starts from the chunks the
        abandoned call evaluated. Being seeded alike, the retry gives the answer the
        abandoned request would have.
        """
        cfg = self.config
        errors: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = cached_tokens = 0
        cost: float | None = 0.0
        transient_left, invalid_left = cfg.max_retries, cfg.max_invalid_retries
        sent = invalid = transient = 0
        while True:
            completion: Completion | None = None
            retry = False
            asked: float | None = None
            async with self._ahead:
                self.accounting.model_calls += 1
                try:
                    completion = await self._attempt(request, invalid, transient)
                except (TimeoutError, openai.OpenAIError) as exc:
                    kind = error_kind(exc)
                    errors.append(self._error(sent, kind, exc))
                    retry = is_transient(exc) and transient_left > 0
                    transient_left -= int(retry)
                    asked = retry_after_s(exc)
            sent += 1
            if completion is None:
                if not retry:
                    break
                transient += 1
                await asyncio.sleep(self._backoff(transient, asked))
                continue
            prompt_tokens += completion.prompt_tokens
            completion_tokens += completion.completion_tokens
            cached_tokens += completion.cached_prompt_tokens
            cost = (
                None if cost is None or completion.cost_usd is None else cost + completion.cost_usd
            )
            parsed, problem = _validate(completion.text, output_type)
            if problem is None:
                outcome = CallOutcome(
                    key,
                    request.identity,
                    request.model,
                    "ok",
                    completion.text,
                    parsed,
                    sent,
                    errors,
                    prompt_tokens,
                    completion_tokens,
                    cost,
                    {k: v for k, v in completion.extra.items() if k in RECORDED_EXTRAS},
                )
                outcome.cached_prompt_tokens = cached_tokens
                return outcome
            errors.append(
                {
                    "attempt": sent - 1,
                    "kind": "invalid_output",
                    "message": self._redactor.text(problem)[:MAX_ERROR_CHARS],
                    "text": self._redactor.text(completion.text)[:MAX_ERROR_CHARS],
                }
            )
            if invalid_left == 0:
                break
            invalid_left -= 1
            invalid += 1
        outcome = CallOutcome(
            key,
            request.identity,
            request.model,
            "failed",
            None,
            None,
            sent,
            errors,
            prompt_tokens,
            completion_tokens,
            cost,
        )
        outcome.cached_prompt_tokens = cached_tokens
        return outcome

    def _error(self, attempt: int, kind: str, exc: BaseException) -> dict[str, Any]:
        text = _ADDRESS.sub("", str(exc).split(TRACEBACK, 1)[0])
        message = self._redactor.text(" ".join(text.split()))[:MAX_ERROR_CHARS]
        if not message:  # asyncio's own timeout has none; the failure summary quotes it
            message = (
                f"no answer within llm.timeout_s ({self.config.timeout_s:g} s)"
                if kind == "timeout"
                else f"{type(exc).__name__} (no message)"
            )
        return {"attempt": attempt, "kind": kind, "message": message}

    def _backoff(self, attempt: int, asked: float | None = None) -> float:
        """Exponential backoff with full jitter before retry number ``attempt``, and at least
        the server's ``Retry-After`` (``asked``, up to :data:`RETRY_AFTER_MAX_S`)."""
        cap = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        wait = self._jitter.uniform(0.0, cap)
        return wait if asked is None else max(wait, min(asked, RETRY_AFTER_MAX_S))


def commonest_cause(causes: Counter[tuple[str, str]]) -> tuple[str, int, str] | None:
    """The error kind most failed calls ended in, how many did, and its commonest message.

    Ties go to the alphabetically first kind and message, so the answer depends only on the
    counts, never on the order in which calls failed.

    Args:
        causes: Failed calls counted by the ``(kind, message)`` of their last error.

    Returns:
        ``(kind, calls, message)``, or ``None`` when no failure is counted.
    """
    kinds: Counter[str] = Counter()
    for (kind, _), count in causes.items():
        kinds[kind] += count
    if not kinds:
        return None
    kind = min(kinds, key=lambda k: (-kinds[k], k))
    messages = [(-count, message) for (k, message), count in causes.items() if k == kind]
    return kind, kinds[kind], min(messages)[1]


def _stamp(outcome: CallOutcome, count: PrefixCount) -> None:
    """Set a call's prefix estimates, measured when it started (:mod:`simworld.llm.prefix`)."""
    outcome.prompt_tokens_est = count.prompt_tokens
    outcome.prefix_tokens = count.prefix_tokens
    outcome.cacheable_tokens = count.cacheable_tokens


def _validate(
    text: str, output_type: type[BaseModel] | None
) -> tuple[dict[str, Any] | None, str | None]:
    """Parse and validate an answer; returns ``(parsed, None)`` or ``(None, problem)``."""
    if output_type is None:
        return (None, None) if text.strip() else (None, "empty answer")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg}"
    try:
        return output_type.model_validate(data).model_dump(mode="json"), None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        return None, f"schema: {'.'.join(map(str, first['loc']))}: {first['msg']}"
