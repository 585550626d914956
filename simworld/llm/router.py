"""One simulation over several servers: ``llm.deployments`` through litellm's Router.

Every deployment must serve the same weights: a call's answer is fixed by its request and
the seed derived from its identity, so it is the same whichever deployment serves it, and
the route is not part of the cache key.

Who serves a call (``llm.routing.strategy``):

- ``balanced`` (the default): simworld sends each call to the primary deployment with the
  fewest of its calls in flight (ties in turn). A simulation sends its calls in bursts (every
  agent posts, then every agent is probed), and litellm's stateful strategies (``least-busy``,
  ``usage-based-routing-v2``, ``latency-based-routing``) pick every call of a burst before
  any of them is counted, so a whole burst lands on one deployment; ``simple-shuffle``
  spreads a burst at random, unevenly.
- a litellm strategy: all primary deployments form one Router group.

Either way the Router keeps each deployment's ``rpm``/``tpm``/``concurrency``, cools down a
deployment that fails (``cooldown_s`` after more than ``allowed_fails`` failures in a
minute), and sends a failed call at once to another deployment with the *same* parameters
(same seed), so a dead server changes nothing in the outputs. The ``fallback: true``
deployments come last; when they fail too, the error goes to the gateway, which retries it
after its backoff (honouring ``Retry-After``) or records it.

One Router serves all calls of a process (calls over deployments stay out of the LLM worker
processes so that limits, counts and cooldowns are kept in one place).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import litellm
from litellm.types.router import RouterRateLimitError, RouterRateLimitErrorBasic

from simworld.config.servers import Deployment, Route
from simworld.llm.endpoints import endpoint_key

PRIMARY_GROUP = "simworld"
FALLBACK_GROUP = "simworld-fallback"

BALANCED: Final = "balanced"

_spreads: dict[Route, tuple[asyncio.AbstractEventLoop, Spread]] = {}


def deployment_params(deployment: Deployment, model: str) -> dict[str, Any]:
    """The Router's ``litellm_params`` for one deployment (its key read from the environment).

    Args:
        deployment: The deployment.
        model: ``llm.model``, used when the deployment names no model of its own.

    Raises:
        SimworldError: Its key variable is not set.
    """
    params: dict[str, Any] = {
        "model": deployment.model or model,
        "api_base": deployment.api_base,
        "api_key": endpoint_key(deployment.api_key_env, deployment.api_base),
        "max_retries": 0,  # the Router and the gateway retry; the client must not
    }
    if deployment.rpm is not None:
        params["rpm"] = deployment.rpm
    if deployment.tpm is not None:
        params["tpm"] = deployment.tpm
    if deployment.concurrency is not None:
        params["max_parallel_requests"] = deployment.concurrency
    return params


def failover_retries(route: Route) -> int:
    """Retries the Router makes, at once, on other deployments of a group before a call fails.

    With a litellm strategy: enough to get past every dead deployment of the group (each needs
    at most ``allowed_fails + 1`` failures to be cooled down and left out of the picks). With
    ``balanced`` every primary deployment is a group of its own, reached by fallbacks, and
    only the fallback group retries within itself.
    """
    primary = sum(not d.fallback for d in route.deployments)
    backup = len(route.deployments) - primary
    largest = backup if route.routing.strategy == BALANCED else max(primary, backup)
    return (route.routing.allowed_fails + 1) * max(largest - 1, 0)


@dataclass
class Spread:
    """A route's Router, and for ``balanced`` the calls in flight per primary deployment.

    Attributes:
        router: litellm's Router.
        groups: The model groups calls are sent to first (one per primary deployment with
            ``balanced``; else the one primary group).
        in_flight: Calls of this process in flight per group.
        failing_until: Per group, until when (``time.monotonic()``) it is passed over: a call
            sent to it was answered by another deployment, or not at all.
        cooldown_s: ``llm.routing.cooldown_s``.
        turn: Where the next tie-break starts (ties rotate over the groups).
    """

    router: litellm.Router
    groups: list[str]
    in_flight: list[int] = field(default_factory=list)
    failing_until: list[float] = field(default_factory=list)
    cooldown_s: float = 0.0
    turn: int = 0

    def __post_init__(self) -> None:
        self.in_flight = [0] * len(self.groups)
        self.failing_until = [0.0] * len(self.groups)

    def pick(self) -> int:
        """The group for the next call: among those not failing, the one with the fewest
        calls in flight, ties taken in turn."""
        n, now = len(self.groups), time.monotonic()
        order = [(self.turn + k) % n for k in range(n)]
        usable = [i for i in order if self.failing_until[i] <= now] or order
        chosen = min(usable, key=lambda i: self.in_flight[i])
        self.turn = (chosen + 1) % n
        return chosen

    async def acompletion(self, call: dict[str, Any]) -> Any:
        """One call: to the picked group, the Router failing over from there."""
        i = self.pick() if len(self.groups) > 1 else 0
        self.in_flight[i] += 1
        served = False
        try:
            response = await self.router.acompletion(model=self.groups[i], **call)
            served = _served_by(response) in {None, self.groups[i]}
            return response
        finally:
            self.in_flight[i] -= 1
            if not served and len(self.groups) > 1:
                self.failing_until[i] = time.monotonic() + self.cooldown_s


def _served_by(response: Any) -> str | None:
    """The id of the deployment that answered (``None`` when the Router did not say)."""
    hidden = getattr(response, "_hidden_params", None) or {}
    model_id = hidden.get("model_id")
    return str(model_id) if model_id is not None else None


def build_spread(route: Route, model: str) -> Spread:
    """The Router over the route's deployments.

    ``balanced``: every primary deployment is a model group of its own (its id the group's
    name); simworld picks the group (:meth:`Spread.pick`) and the Router falls back from it
    to the other primaries in turn, then to the fallback group. A litellm strategy: all
    primaries form one group, the fallback deployments a second group tried after it.

    Args:
        route: The route (with deployments).
        model: ``llm.model``.
    """
    primary = [d for d in route.deployments if not d.fallback]
    backup = [d for d in route.deployments if d.fallback]
    strategy = route.routing.strategy
    balanced = strategy == BALANCED
    groups = [f"{PRIMARY_GROUP}-{i}" for i in range(len(primary))] if balanced else [PRIMARY_GROUP]
    model_list = [
        {
            "model_name": groups[i] if balanced else PRIMARY_GROUP,
            "litellm_params": deployment_params(d, model),
            **({"model_info": {"id": groups[i]}} if balanced else {}),
        }
        for i, d in enumerate(primary)
    ] + [
        {"model_name": FALLBACK_GROUP, "litellm_params": deployment_params(d, model)}
        for d in backup
    ]
    tail = [FALLBACK_GROUP] if backup else []
    fallbacks = [{group: groups[i + 1 :] + groups[:i] + tail} for i, group in enumerate(groups)]
    router = litellm.Router(
        model_list=model_list,
        routing_strategy="simple-shuffle" if strategy == BALANCED else strategy,
        num_retries=failover_retries(route),
        enable_weighted_failover=True,  # simple-shuffle: retry on a deployment not yet tried
        retry_after=0,
        allowed_fails=route.routing.allowed_fails,
        cooldown_time=route.routing.cooldown_s,
        fallbacks=[f for f in fallbacks if next(iter(f.values()))],
        max_fallbacks=len(groups) + len(tail),
        enable_pre_call_checks=True,  # leave out deployments at their rpm/tpm
        set_verbose=False,
    )
    return Spread(router, groups, cooldown_s=route.routing.cooldown_s)


def spread_for(route: Route, model: str) -> Spread:
    """The Router of ``route`` for the running event loop (built on first use)."""
    loop = asyncio.get_running_loop()
    held = _spreads.get(route)
    if held is None or held[0] is not loop or held[0].is_closed():
        held = (loop, build_spread(route, model))
        _spreads[route] = held
    return held[1]


async def routed_completion(route: Route, kwargs: dict[str, Any]) -> Any:
    """One ``acompletion`` over the route's deployments.

    Args:
        route: The route (with deployments).
        kwargs: The call's ``litellm.acompletion`` arguments (``model`` is ``llm.model``).

    Returns:
        litellm's response.
    """
    call = dict(kwargs)
    model = call.pop("model")
    call.pop("num_retries", None)  # the Router's own setting applies
    try:
        return await spread_for(route, model).acompletion(call)
    except (RouterRateLimitError, RouterRateLimitErrorBasic) as exc:
        raise no_deployment(exc, model) from exc


def no_deployment(
    exc: RouterRateLimitError | RouterRateLimitErrorBasic, model: str
) -> litellm.RateLimitError:
    """The Router's "no deployment available" as the rate limit it is, so the gateway
    retries it after ``Retry-After`` (or records it): the cooldown when every deployment is
    cooling down, else the rest of the minute (every deployment is at its ``rpm``/``tpm``).
    """
    if isinstance(exc, RouterRateLimitError):
        wait = float(getattr(exc, "cooldown_time", 0.0) or 0.0)
    else:
        wait = 60.0 - time.time() % 60.0  # litellm counts usage per clock minute
    response = httpx.Response(
        429,
        headers={"retry-after": f"{wait:g}"},
        request=httpx.Request("POST", "http://router.invalid/chat/completions"),
    )
    return litellm.RateLimitError(
        f"no deployment available: {exc}",
        llm_provider="router",
        model=model,
        response=response,
    )
