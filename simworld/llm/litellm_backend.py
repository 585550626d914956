"""The litellm backend: every provider litellm knows, in this process or in worker processes.

The request and answer types it implements live in :mod:`simworld.llm.types`; they are
re-exported here for callers that reach them through the backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import time
import weakref
from collections.abc import Callable, Collection
from functools import cache
from typing import TYPE_CHECKING, Any

import litellm
import openai

from simworld.llm.endpoints import endpoint_kwargs
from simworld.llm.logprobs import answer_enum, logprob_content, option_distribution
from simworld.llm.slots import current_slot, take_current_slot
from simworld.llm.types import (
    TOP_LOGPROBS,
    TRANSIENT_OPTION,
    CallIdentity,
    Completion,
    LanguageModel,
    LLMRequest,
    Message,
    RemoteModelError,
    json_schema,
)
from simworld.support.hashing import canonical_json, sha256_hex
from simworld.support.turns import Turns

if TYPE_CHECKING:  # a worker process answers calls without loading the scenario schema
    from simworld.config.scenario import PriceConfig

FREE_PROVIDERS = ("fake/", "local/")
PRICED_SIDES = ("input", "output")
# Providers never handed to LLM workers: the embedded model is loaded once, by this process
# (in a child of its own, see simworld.llm.providers.local_child); each worker would load
# another.
IN_PROCESS_PROVIDERS = ("local/",)
# Providers told how many transient failures a call has had (``TRANSIENT_OPTION``, an extra
# request parameter): the fake draws its injected failures from it. Never sent elsewhere: a
# real server would receive it as an unknown parameter.
FAILURE_INJECTING_PROVIDERS = ("fake/",)
# litellm's per-call success logging (``litellm.utils``): a task per call that builds a standard
# logging payload and recomputes the cost for whatever callbacks are registered.
SUCCESS_LOGGING_DISPATCH = "_dispatch_success_logging"
_SKIPS_UNOBSERVED = "_simworld_skips_unobserved"
# litellm's per-call diagnosis of a zero cost (``Logging._record_zero_cost_diagnostic``): it
# looks the model's pricing up again for every call that cost nothing (every call to simworld's
# own free providers) and stores its finding for the callbacks' logging payload.
ZERO_COST_DIAGNOSTIC = "_record_zero_cost_diagnostic"
# litellm's global callback lists (anything registered there observes every call).
CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
    "_async_input_callback",
)

# Request parameters simworld may send that some providers reject (``seed`` on Anthropic):
# they are left out for providers that litellm says do not support them.
OPTIONAL_PARAMS = ("temperature", "max_tokens", "seed", "response_format")

log = logging.getLogger(__name__)


@cache
def dropped_params(model: str) -> tuple[str, ...]:
    """The parameters of :data:`OPTIONAL_PARAMS` that ``model``'s provider does not take.

    Asked of litellm (``get_supported_openai_params``); simworld's own providers and models
    litellm cannot place take every parameter.
    """
    if model.startswith(FREE_PROVIDERS):
        return ()
    try:
        name, provider, _, _ = litellm.get_llm_provider(model)
    except (litellm.BadRequestError, ValueError):
        return ()
    supported = litellm.get_supported_openai_params(model=name, custom_llm_provider=provider)
    if supported is None:
        return ()
    return tuple(p for p in OPTIONAL_PARAMS if p not in supported)


def success_callbacks_registered(logging_obj: Any) -> bool:
    """Whether anything listens to litellm's success events: global callbacks (any kind,
    including ``litellm.callbacks``) or the call's own dynamic success callbacks."""
    return bool(
        litellm.callbacks
        or litellm.success_callback
        or litellm._async_success_callback
        or getattr(logging_obj, "dynamic_success_callbacks", None)
        or getattr(logging_obj, "dynamic_async_success_callbacks", None)
    )


def _skip_unobserved_success_logging() -> bool:
    """Make litellm skip its success logging for calls no callback listens to.

    litellm 1.106 schedules, after every successful call, a logging task that rebuilds the
    request's standard logging payload and its cost (about 0.4 ms of CPU on the event loop)
    even when no callback is registered; simworld registers none and records calls itself.
    The dispatch is wrapped so that it runs unchanged as soon as any callback is registered.

    Returns:
        Whether the fast path is in place (``False`` when this litellm lacks the hook).
    """
    return _run_only_when_observed(
        litellm.utils,
        SUCCESS_LOGGING_DISPATCH,
        lambda args, kwargs: kwargs["logging_obj"],
        "success logging",
    )


def _skip_unobserved_zero_cost_diagnostic() -> bool:
    """Make litellm skip its zero-cost diagnosis for calls no callback listens to.

    litellm 1.106 diagnoses every call that cost nothing: it looks the model's pricing up
    again (about 0.3 ms of CPU per call of the fake or embedded model) to store a finding
    that only the standard logging payload of its callbacks reads. The method is wrapped so
    that it runs unchanged as soon as any success callback is registered (as
    :func:`_skip_unobserved_success_logging`).

    Returns:
        Whether the fast path is in place (``False`` when this litellm lacks the method).
    """
    from litellm.litellm_core_utils.litellm_logging import Logging

    return _run_only_when_observed(
        Logging, ZERO_COST_DIAGNOSTIC, lambda args, kwargs: args[0], "the zero-cost diagnosis"
    )


def _run_only_when_observed(
    owner: Any,
    name: str,
    logging_obj_of: Callable[[tuple[Any, ...], dict[str, Any]], Any],
    what: str,
) -> bool:
    """Replace ``owner.name`` by a wrapper that calls it only while a success callback
    listens (:func:`success_callbacks_registered` on the call's logging object, which
    ``logging_obj_of(args, kwargs)`` picks out); idempotent.

    Returns:
        Whether the wrapper is in place (``False``, with a warning naming ``what``, when this
        litellm lacks ``owner.name``).
    """
    original = getattr(owner, name, None)
    if original is None:
        log.warning("litellm %s: %s cannot be skipped", litellm_version(), what)
        return False
    if getattr(original, _SKIPS_UNOBSERVED, False):
        return True

    @functools.wraps(original)
    def when_observed(*args: Any, **kwargs: Any) -> None:
        if success_callbacks_registered(logging_obj_of(args, kwargs)):
            original(*args, **kwargs)

    setattr(when_observed, _SKIPS_UNOBSERVED, True)
    setattr(owner, name, when_observed)
    return True


def litellm_version() -> str:
    """The installed litellm's version."""
    from importlib.metadata import version

    return version("litellm")


def configure_litellm() -> None:
    """Every process-wide litellm setting simworld relies on, applied in this one place.

    Runs when :mod:`simworld.llm.litellm_backend` is imported (every model call goes through
    this module); idempotent. ``LITELLM_LOCAL_MODEL_COST_MAP`` is set earlier, in
    ``simworld/__init__.py``, because litellm reads it on import.

    - ``telemetry`` off and ``suppress_debug_info`` on: no network, no debug banners.
    - success logging only when a callback listens (:func:`_skip_unobserved_success_logging`).
    - the zero-cost diagnosis only when a callback listens
      (:func:`_skip_unobserved_zero_cost_diagnostic`).
    """
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    _skip_unobserved_success_logging()
    _skip_unobserved_zero_cost_diagnostic()


configure_litellm()


def first_choice(response: Any) -> Any:
    """The first choice of a chat completion response.

    Raises:
        RemoteModelError: The response holds no choice with a message (what a content
            filter or a proxy may send with status 200): kind ``empty_response``, retried
            like a server error and then recorded as the call's failure.
    """
    choices = getattr(response, "choices", None)
    if not choices or getattr(choices[0], "message", None) is None:
        raise RemoteModelError(
            "the server's response holds no answer (no choice with a message)",
            kind="empty_response",
            transient=True,
        )
    return choices[0]


def cached_prompt_tokens(usage: Any) -> int:
    """The prompt tokens a response's usage says came from the provider's prefix cache
    (``prompt_tokens_details.cached_tokens``, a dict or an object; 0 when absent)."""
    details = getattr(usage, "prompt_tokens_details", None)
    if details is None and isinstance(usage, dict):
        details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None:
        cached = getattr(details, "cached_tokens", None)
    return int(cached or 0)


def call_cost(
    model: str, price: PriceConfig | None, *, prompt_tokens: int, completion_tokens: int
) -> float | None:
    """Cost in USD: the scenario's ``price``, 0 for simworld's own providers, else litellm's
    price list; ``None`` when litellm does not know the model."""
    if price is not None:
        return (
            prompt_tokens * price.input_per_million + completion_tokens * price.output_per_million
        ) / 1e6
    if model.startswith(FREE_PROVIDERS):
        return 0.0
    entry = litellm.model_cost.get(model) or litellm.model_cost.get(model.split("/", 1)[-1])
    if not entry or all(entry.get(f"{side}_cost_per_token") is None for side in PRICED_SIDES):
        return None  # unknown, or an entry without prices (litellm's Router adds those)
    prompt_cost, completion_cost = litellm.cost_per_token(
        model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )
    return float(prompt_cost + completion_cost)


class InPlaceExecutor(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that runs some functions at once, in the submitting thread, instead.

    litellm runs the synchronous half of every call (``litellm.main.completion``) in the
    event loop's default executor. That half only sets the call up (with ``acompletion`` it
    returns the coroutine that makes the request), so the hop to a thread and back only adds
    a wait for the GIL and a thread switch, and splits a call's set-up in two. Everything
    else (name resolution, ``asyncio.to_thread``) still goes to a thread, so blocking I/O
    does not hold up the loop. See :func:`in_place_executor`.

    Args:
        in_place: The functions to run in place, recognised through ``functools.partial``
            and ``contextvars.Context.run`` (how litellm submits them).
    """

    def __init__(self, *, in_place: Collection[Callable[..., Any]]) -> None:
        super().__init__()
        self._in_place = tuple(in_place)

    def runs_in_place(self, fn: Callable[..., Any], /, *args: Any) -> bool:
        """Whether :meth:`submit` runs ``fn(*args)`` in place."""
        while True:
            if isinstance(fn, functools.partial):
                partial = fn
                fn, args = partial.func, partial.args + args
            elif isinstance(getattr(fn, "__self__", None), contextvars.Context) and args:
                fn, args = args[0], args[1:]  # Context.run(f, ...)
            else:  # by identity: a callable object need not be hashable
                return any(fn is chosen for chosen in self._in_place)

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` in place or in a thread; the future holds the result.

        Run in place from an event loop, the future is one of that loop's, already done:
        ``loop.run_in_executor`` hands such a future back as it is, and awaiting it does not
        yield to the loop. So litellm's call goes on from its set-up to its request without
        a turn of the loop in between, in which a cancelled call would drop the request's
        coroutine unawaited. Elsewhere it is a finished ``concurrent.futures.Future``.
        """
        if not self.runs_in_place(fn, *args):
            return super().submit(fn, *args, **kwargs)
        future: concurrent.futures.Future[Any] | asyncio.Future[Any]
        try:
            future = asyncio.get_running_loop().create_future()
        except RuntimeError:  # no running loop
            future = concurrent.futures.Future()
        try:
            future.set_result(_out_under_slot(fn(*args, **kwargs)))
        except Exception as exc:  # the caller receives it from the future, as from a thread
            future.set_exception(exc)
        return future  # type: ignore[return-value]  # run_in_executor takes either


_LOOPS_TAKING_SLOTS_LATE: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
"""Event loops on which litellm's set-up of a call has been seen to hand its request over
through :func:`_out_under_slot`: their calls can leave taking their slot to it."""


def _out_under_slot(result: Any) -> Any:
    """The result of litellm's set-up of a call, holding the call's slot while out.

    The set-up returns the coroutine that sends the request. When the call has a slot of the
    gateway's cap (:func:`~simworld.llm.slots.current_slot`), the request goes out only once
    the slot is taken, and gives it back as the answer arrives.
    """
    slot = current_slot()
    if slot is None or not asyncio.iscoroutine(result):
        return result
    with contextlib.suppress(RuntimeError):  # no running loop: nothing to remember
        _LOOPS_TAKING_SLOTS_LATE.add(asyncio.get_running_loop())
    return slot.around(result)


def in_place_executor() -> InPlaceExecutor:
    """The default executor for an event loop that makes litellm calls: litellm's call set-up
    (``litellm.main.completion``) runs in place, anything else in a thread.

    Set by the loops simworld owns: an LLM worker's (:mod:`simworld.llm.worker`) and a
    simulation's (:class:`~simworld.engine.model.SocialSimulation`).
    """
    return InPlaceExecutor(in_place=(litellm.main.completion,))


# Before a run's first step, a process that makes its calls itself sends this many calls to
# the fake provider through litellm, as an LLM worker does before it reports ready
# (simworld.llm.worker): the first calls import and cache what the call path needs.
WARM_UP_CALLS = 8
WARM_UP_MODEL = "fake/default"
_WARMED: list[bool] = []


def warm_up_in_process() -> None:
    """Warm litellm up in this process, once per process: :data:`WARM_UP_CALLS` fake calls
    through the blocking ``litellm.completion``, one after the other.

    Blocking calls leave nothing behind when the run is interrupted meanwhile (concurrent
    ones would leave coroutines that were never awaited); they build the same pydantic
    schemas, logging objects and provider lookups as the calls that follow. Skipped when a
    litellm callback is registered: it would see the warm-up calls.
    """
    if _WARMED or any(getattr(litellm, name, None) for name in CALLBACK_LISTS):
        return
    _WARMED.append(True)
    LiteLLMModel(workers=0)._ensure_priced(WARM_UP_MODEL)
    for i in range(WARM_UP_CALLS):
        litellm.completion(
            model=WARM_UP_MODEL,
            messages=[{"role": "user", "content": "Say something."}],
            temperature=0.0,
            max_tokens=8,
            seed=i,
            num_retries=0,
        )


class LiteLLMModel(LanguageModel):
    """Every provider litellm knows, including simworld's registered ``fake/`` provider.

    Calls go through ``litellm.acompletion`` in this process or, for large runs, in LLM worker
    processes (see :mod:`simworld.llm.workers`); the answer is the same either way. In this
    process they start in the order they came, one per turn of the event loop
    (:class:`~simworld.support.turns.Turns`): a burst of calls then reaches the provider one
    after another, each after its own set-up rather than after a share of everyone's.

    Args:
        price: Price per million tokens that overrides litellm's cost map.
        workers: LLM worker processes (0: always in-process); ``None`` follows
            ``SIMWORLD_LLM_WORKERS`` (default ``auto``).
    """

    takes_slots = True
    """A call in this process takes its slot when litellm's set-up of it is done and the
    request leaves, and gives it back before litellm's bookkeeping on the answer (see
    :func:`_out_under_slot`); a call to the LLM workers takes it before it is sent."""

    def __init__(self, *, price: PriceConfig | None = None, workers: int | None = None) -> None:
        from simworld.llm.providers.registry import register_providers
        from simworld.llm.workers import WorkerPolicy

        register_providers()
        self._price = price
        self._known: set[str] = set()
        self._checked: set[str] = set()
        self._policy = WorkerPolicy.resolve(workers)
        self._calls = 0
        self._first_call = 0.0
        self._due = False
        self._planned = False
        self._turns = Turns()
        """Lets this process's litellm calls start one per turn of the loop."""
        self._warm_up = False
        self._warned = False

    def parallelism(self, model: str) -> int | None:
        """For the embedded ``local/`` provider, how many calls its engine decodes together
        (the model's ``batch`` option, 1 for the serial engine); no limit otherwise."""
        if not model.startswith("local/"):
            return None
        from simworld.llm.providers.local import parallelism

        return parallelism(model)

    def plan(self, model: str, *, calls_per_step: int) -> None:
        """Start the LLM worker processes now when a run whose steps make ``calls_per_step``
        calls should use them from its first call (:meth:`WorkerPolicy.planned`); they import
        litellm while the run is being built, and :meth:`ready` waits for them. Otherwise
        the calls run in this process, and :meth:`ready` warms litellm up here."""
        policy = self._policy
        if model.startswith(IN_PROCESS_PROVIDERS):
            return
        if not policy.planned(calls_per_step):
            self._warm_up = True
            return
        from simworld.llm.workers import shared_pool

        shared_pool(policy.workers).start()
        self._due = self._planned = True

    async def ready(self) -> None:
        """Wait for the workers :meth:`plan` started (until each is ready or gone), or warm
        litellm up in this process for calls planned here.

        litellm builds much of what a call needs (pydantic schemas, its logging objects) on
        its first calls; a few fake calls before the first step, once per process, spare
        the first step that time (as an LLM worker does before it reports ready).
        """
        if self._planned:
            from simworld.llm.workers import shared_pool

            await shared_pool(self._policy.workers).wait_ready(every=True)
        elif self._warm_up:
            warm_up_in_process()

    def _ensure_priced(self, model: str) -> None:
        """Put simworld's free in-process models in litellm's cost map, once per model string.

        Without an entry litellm searches its whole cost map on every call, which costs more
        CPU than the fake provider's answer itself.
        """
        if model in self._known or not model.startswith(FREE_PROVIDERS):
            return
        entry = {
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "mode": "chat",
            "litellm_provider": model.split("/", 1)[0],
        }
        litellm_logger = logging.getLogger("LiteLLM")
        level = litellm_logger.level
        litellm_logger.setLevel(logging.ERROR)  # it warns that cache-token prices default to 0
        try:
            litellm.register_model({model: entry})
        finally:
            litellm_logger.setLevel(level)
        self._known.add(model)

    async def complete(
        self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
    ) -> Completion:
        """Call ``litellm.acompletion`` once (litellm's own retries are off), here or in a
        worker process.

        The seed sent is derived from the identity and ``attempt`` (see
        :meth:`~simworld.llm.types.LanguageModel.complete`); ``transient`` reaches only the
        providers that inject failures (:data:`FAILURE_INJECTING_PROVIDERS`), as the option
        ``transient_failures``, and no other provider.

        With ``request.logprobs`` the returned log-probabilities go to ``extra["logprobs"]``
        (``[{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]``) and, when the
        schema has an ``answer`` enum, the option distribution to ``extra["option_probs"]``
        (``{str(value): probability}``, see :mod:`simworld.llm.logprobs`).

        Raises:
            SimworldError: simworld's own provider cannot run the model (a bad ``local/``
                model string), or the embedded model's process crashed
                (:class:`~simworld.llm.providers.local_child.ModelCrashedError`); raised
                here because litellm would wrap it as retryable.
        """
        if request.model not in self._checked:
            from simworld.llm.providers.registry import check_model

            check_model(request.model)
            self._checked.add(request.model)
        routed = request.route is not None and bool(request.route.deployments)
        if await self._use_workers(request.model, routed=routed):
            from simworld.llm.workers import shared_pool

            await take_current_slot()
            done = await shared_pool(self._policy.workers).complete(
                request, attempt=attempt, timeout_s=timeout_s, transient=transient
            )
        else:
            await self._turns.wait()
            if routed or asyncio.get_running_loop() not in _LOOPS_TAKING_SLOTS_LATE:
                await take_current_slot()  # a Router may send more than once; an unseen loop
            try:
                done = await self._acompletion(
                    request, attempt=attempt, timeout_s=timeout_s, transient=transient
                )
            except openai.OpenAIError:
                from simworld.llm.providers.local import crash_of

                crash = crash_of(request.model)
                if crash is not None:
                    raise crash from None
                raise
        done.cost_usd = self._cost(request.model, done.prompt_tokens, done.completion_tokens)
        return done

    async def _use_workers(self, model: str, *, routed: bool = False) -> bool:
        """Whether this call goes to the worker processes, starting them when the policy
        says so (:class:`~simworld.llm.workers.WorkerPolicy`). Without a live worker calls
        stay in-process; so do calls over ``llm.deployments`` (``routed``): one Router must
        see them all to keep each deployment's limits and cooldowns.
        """
        policy = self._policy
        if policy.workers == 0 or model.startswith(IN_PROCESS_PROVIDERS) or routed:
            return False
        if not self._due:
            now = time.perf_counter()
            self._first_call = self._first_call or now
            self._calls += 1
            self._due = policy.due(self._calls, now - self._first_call)
            if not self._due:
                return False
        from simworld.llm.workers import shared_pool

        pool = shared_pool(policy.workers)
        if not pool.started:
            pool.start()
        usable = pool.ready() or (policy.wait and await pool.wait_ready())
        if not usable and not pool.alive() and not self._warned:
            self._warned = True
            log.warning("no LLM worker process is running; calls stay in this process")
        return usable

    async def _acompletion(
        self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
    ) -> Completion:
        """The litellm call itself (``cost_usd`` is left for :meth:`complete`)."""
        self._ensure_priced(request.model)
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": list(request.messages),
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.identity.derived_seed(attempt),
            "timeout": timeout_s,
            "num_retries": 0,
        }
        if request.schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name or "answer",
                    "schema": request.schema,
                    "strict": True,
                },
            }
        if request.logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = TOP_LOGPROBS
            kwargs["drop_params"] = True  # providers without log-probabilities just omit them
        if transient and request.model.startswith(FAILURE_INJECTING_PROVIDERS):
            kwargs[TRANSIENT_OPTION] = transient
        for name in dropped_params(request.model):
            kwargs.pop(name, None)
        if request.params:
            kwargs.update(request.params)
        route = request.route
        if route is not None and route.deployments:
            from simworld.llm.router import routed_completion

            response = await routed_completion(route, kwargs)
        else:
            if route is not None:
                kwargs.update(endpoint_kwargs(route.api_base, route.api_key_env))
            response = await litellm.acompletion(**kwargs)
        choice = first_choice(response)
        text = choice.message.content or ""
        extra: dict[str, Any] = {}
        if request.logprobs:
            content = logprob_content(getattr(choice, "logprobs", None))
            if content:
                extra["logprobs"] = content
                enum = answer_enum(request.schema)
                dist = option_distribution(content, enum) if enum else None
                if dist is not None:
                    extra["option_probs"] = {str(v): p for v, p in dist.probs.items()}
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            extra=extra,
            cached_prompt_tokens=cached_prompt_tokens(usage),
        )

    def _cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        return call_cost(
            model, self._price, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )


__all__ = [
    "TOP_LOGPROBS",
    "CallIdentity",
    "Completion",
    "InPlaceExecutor",
    "LLMRequest",
    "LanguageModel",
    "LiteLLMModel",
    "Message",
    "RemoteModelError",
    "cached_prompt_tokens",
    "call_cost",
    "canonical_json",
    "configure_litellm",
    "in_place_executor",
    "json_schema",
    "sha256_hex",
]
