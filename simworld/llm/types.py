"""The language-model contract: request and answer types and the abstract model.

A leaf of the LLM layer: the gateway, the litellm backend, the worker processes and the
providers all speak these types; none of them is needed to build a request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

import openai
from pydantic import BaseModel

from simworld.support.hashing import canonical_json, derive_seed, sha256_hex

if TYPE_CHECKING:  # a worker process answers requests without loading the scenario schema
    from simworld.config.servers import Route

Message = dict[str, str]
TOP_LOGPROBS = 20
TRANSIENT_OPTION = "transient_failures"
"""The request parameter telling a failure-injecting provider (the fake) how many transient
failures the call has had (see :meth:`LanguageModel.complete`)."""


@cache
def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of a pydantic model, built once per class (callers must not mutate it)."""
    return model.model_json_schema()


@dataclass(frozen=True)
class CallIdentity:
    """Deterministic identity of one logical model call.

    Two calls with identical prompts are still distinct samples when their identities differ.

    Attributes:
        seed: The run's seed.
        agent: The calling agent's id.
        step: The simulation step.
        purpose: What the call is for (``post``, ``probe:<topic>`` …).
        index: Distinguishes several calls with the same other fields (turn number).
    """

    seed: int
    agent: str
    step: int
    purpose: str
    index: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (what ``dataclasses.asdict`` gives, without its deep copy)."""
        return {
            "seed": self.seed,
            "agent": self.agent,
            "step": self.step,
            "purpose": self.purpose,
            "index": self.index,
        }

    def derived_seed(self, attempt: int) -> int:
        """A sampling seed derived from the identity and ``attempt``, the number of invalid
        answers the call has had so far (see :meth:`LanguageModel.complete`)."""
        return derive_seed({**self.as_dict(), "attempt": attempt})


@dataclass(frozen=True)
class LLMRequest:
    """Everything that determines one logical model call.

    Attributes:
        model: litellm model string (``provider/name``).
        messages: Chat messages.
        identity: The call's deterministic identity.
        temperature: Sampling temperature.
        max_tokens: Output limit.
        schema: JSON Schema the answer must satisfy (structured output), if any.
        schema_name: Name of that schema.
        logprobs: Ask for token log-probabilities (``top_logprobs=TOP_LOGPROBS``); with an
            ``answer`` enum schema the option distribution lands in
            ``Completion.extra["option_probs"]``.
        params: Extra provider parameters passed through (``llm.params``: ``top_p``,
            ``stop`` …).
        route: Where the call goes (``llm.api_base`` / ``llm.deployments``); ``None``: the
            provider's default endpoint.
    """

    model: str
    messages: tuple[Message, ...]
    identity: CallIdentity
    temperature: float
    max_tokens: int
    schema: dict[str, Any] | None = None
    schema_name: str | None = None
    logprobs: bool = False
    params: dict[str, Any] | None = None
    route: Route | None = None

    def cache_key(self) -> str:
        """Content address: hash of model, messages, sampling parameters, schema and identity.

        ``logprobs`` and the provider parameters that can change an answer
        (:func:`~simworld.config.servers.answer_params`) enter the key only when set, so keys
        of plain requests are unchanged. The route never does: which server answers does not
        change the answer (deployments must serve the same weights).
        """
        data: dict[str, Any] = {
            "model": self.model,
            "messages": list(self.messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "schema": self.schema,
            "schema_name": self.schema_name,
            "identity": self.identity.as_dict(),
        }
        if self.logprobs:
            data["logprobs"] = True
        from simworld.config.servers import answer_params  # not needed by a worker process

        params = answer_params(self.params)
        if params:
            data["params"] = params
        return sha256_hex(canonical_json(data))


@dataclass
class Completion:
    """One raw answer of a model.

    Attributes:
        text: The generated text.
        prompt_tokens: Input tokens billed.
        completion_tokens: Output tokens billed.
        cost_usd: Cost of the call, or ``None`` when the model's price is unknown.
        extra: Provider extras worth keeping (e.g. log-probabilities).
        cached_prompt_tokens: Of the prompt tokens, those the provider says it did not
            evaluate again but took from its prefix (key/value) cache (OpenAI's
            ``usage.prompt_tokens_details.cached_tokens``; the embedded model's prefix
            reuse). Depends on what ran before, so it is never part of a call's record.
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cached_prompt_tokens: int = 0


class LanguageModel(ABC):
    """A model that answers one request; wrappers add retry, caching and accounting."""

    takes_slots: ClassVar[bool] = False
    """Whether :meth:`complete` takes the call's slot of the gateway's concurrency cap
    itself, when its request leaves (:mod:`simworld.llm.slots`); otherwise the gateway takes
    it before calling :meth:`complete`."""

    @abstractmethod
    async def complete(
        self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
    ) -> Completion:
        """Answer ``request``.

        Args:
            request: The call.
            attempt: How many invalid answers (unparsable or off-schema output) the call has
                had so far: 0, then 1, 2 … The sampling seed derives from it
                (:meth:`CallIdentity.derived_seed`), so a retry after an invalid answer
                draws a new sample, while a retry after a transient failure asks for the
                same sample again: a busy host (timeouts), a rate limit or a dropped
                connection never changes a run's outputs.
            timeout_s: Seconds before the provider should give up.
            transient: How many transient failures (timeouts, rate limits, connection and
                server errors) the call has had so far. Never part of the seed; a provider
                that injects failures (``fake/...?failure_rate=``) draws them from it, so a
                retried call does not fail again the same way.

        Returns:
            The model's answer.
        """

    def parallelism(self, model: str) -> int | None:
        """How many calls to ``model`` can really run at once (``None``: no limit known)."""
        return None

    def plan(self, model: str, *, calls_per_step: int) -> None:
        """Hear, before a run's first step, how many calls to ``model`` a step makes, to
        choose how to run them (see :meth:`ready`); by default there is nothing to choose."""
        return None

    async def ready(self) -> None:
        """Return once the way of running calls chosen in :meth:`plan` can take them (the
        simulation awaits this before its first step); by default at once."""
        return None


class RemoteModelError(openai.OpenAIError):
    """A model call's error raised in an LLM worker process, classified there (or a
    response that is no answer, classified where it is read).

    The gateway treats it as the original error: same kind, same retry class, same message.

    Args:
        message: ``str()`` of the original error.
        kind: Its :func:`simworld.llm.gateway.error_kind`.
        transient: Whether the gateway retries it.
        retry_after_s: The server's ``Retry-After``, if it sent one.
    """

    def __init__(
        self, message: str, *, kind: str, transient: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.transient = transient
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:
        return _remote_model_error, (str(self), self.kind, self.transient, self.retry_after_s)


def _remote_model_error(
    message: str, kind: str, transient: bool, retry_after_s: float | None = None
) -> RemoteModelError:
    return RemoteModelError(message, kind=kind, transient=transient, retry_after_s=retry_after_s)
