"""The litellm backend: simworld's litellm settings, per-call work, cost and identities."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger
from litellm.litellm_core_utils import litellm_logging

from simworld.config.scenario import PriceConfig
from simworld.llm import litellm_backend as llm
from simworld.llm.litellm_backend import (
    CallIdentity,
    LiteLLMModel,
    LLMRequest,
    call_cost,
    configure_litellm,
)

CALLBACK_WAIT_S = 5.0


def request(agent: str = "a") -> LLMRequest:
    return LLMRequest(
        model="fake/default",
        messages=({"role": "user", "content": "Say something."},),
        identity=CallIdentity(seed=1, agent=agent, step=1, purpose="post"),
        temperature=0.7,
        max_tokens=20,
    )


class Recorder(CustomLogger):
    """A litellm callback that records the calls it hears about."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time, end_time):
        self.events.append(kwargs["model"])


@pytest.fixture
def success_handler_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts runs of litellm's per-call async success handler."""
    calls: list[int] = []
    original = litellm_logging.Logging.async_success_handler

    async def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        await original(self, *args, **kwargs)

    monkeypatch.setattr(litellm_logging.Logging, "async_success_handler", spy)
    return calls


@pytest.fixture
def fresh_callback_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """Callbacks move between litellm's global lists; restore them all after."""
    for name in (
        "callbacks",
        "input_callback",
        "success_callback",
        "failure_callback",
        "_async_input_callback",
        "_async_success_callback",
        "_async_failure_callback",
    ):
        monkeypatch.setattr(litellm, name, [])
    monkeypatch.setattr(litellm.utils, "callback_list", [])


async def complete_then_settle(model: LiteLLMModel, req: LLMRequest) -> None:
    await model.complete(req, attempt=0, timeout_s=10)
    await asyncio.sleep(0.05)  # let any logging task litellm scheduled run


def test_settings_are_applied_on_import() -> None:
    assert litellm.telemetry is False and litellm.suppress_debug_info is True
    dispatch = getattr(litellm.utils, llm.SUCCESS_LOGGING_DISPATCH)
    assert getattr(dispatch, llm._SKIPS_UNOBSERVED, False)


def test_configure_is_idempotent() -> None:
    before = getattr(litellm.utils, llm.SUCCESS_LOGGING_DISPATCH)
    diagnosis = getattr(litellm_logging.Logging, llm.ZERO_COST_DIAGNOSTIC)
    configure_litellm()
    assert getattr(litellm.utils, llm.SUCCESS_LOGGING_DISPATCH) is before
    assert getattr(litellm_logging.Logging, llm.ZERO_COST_DIAGNOSTIC) is diagnosis
    assert getattr(diagnosis, llm._SKIPS_UNOBSERVED, False)


@pytest.fixture
def zero_cost_findings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts litellm's zero-cost diagnoses (the pricing look-up behind each)."""
    calls: list[int] = []
    original = litellm_logging.Logging._zero_cost_finding

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(litellm_logging.Logging, "_zero_cost_finding", spy)
    return calls


def test_no_zero_cost_diagnosis_runs_per_call_unobserved(
    zero_cost_findings: list[int], fresh_callback_lists: None
) -> None:
    model = LiteLLMModel(workers=0)
    asyncio.run(complete_then_settle(model, request()))
    assert zero_cost_findings == []


def test_a_registered_callback_gets_the_zero_cost_diagnosis(
    zero_cost_findings: list[int], fresh_callback_lists: None
) -> None:
    litellm.callbacks = [Recorder()]
    model = LiteLLMModel(workers=0)
    asyncio.run(complete_then_settle(model, request()))
    assert zero_cost_findings  # the fake costs nothing: litellm diagnoses it, as unwrapped


def test_no_success_logging_runs_per_call(
    success_handler_calls: list[int], fresh_callback_lists: None
) -> None:
    model = LiteLLMModel(workers=0)
    asyncio.run(complete_then_settle(model, request()))
    assert success_handler_calls == []


def test_registered_callbacks_still_hear_every_call(
    success_handler_calls: list[int], fresh_callback_lists: None
) -> None:
    recorder = Recorder()
    litellm.callbacks = [recorder]
    model = LiteLLMModel(workers=0)

    async def two_calls() -> None:
        for agent in ("a", "b"):
            await model.complete(request(agent), attempt=0, timeout_s=10)
        async with asyncio.timeout(CALLBACK_WAIT_S):
            while len(recorder.events) < 2:
                await asyncio.sleep(0.01)

    asyncio.run(two_calls())
    assert recorder.events == ["default", "default"]
    assert len(success_handler_calls) == 2


def test_identity_as_dict_is_asdict() -> None:
    identity = CallIdentity(seed=3, agent="x", step=2, purpose="probe:t", index=4)
    assert identity.as_dict() == dataclasses.asdict(identity)
    assert [f.name for f in dataclasses.fields(identity)] == list(identity.as_dict())


def test_call_cost_uses_the_price_then_free_providers_then_litellm() -> None:
    price = PriceConfig(input_per_million=2.0, output_per_million=8.0)
    cost = call_cost("openai/gpt-4o-mini", price, prompt_tokens=1000, completion_tokens=500)
    assert cost == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert call_cost("fake/default", None, prompt_tokens=10, completion_tokens=5) == 0.0
    assert call_cost("nobody/knows-this", None, prompt_tokens=10, completion_tokens=5) is None
    known = call_cost("openai/gpt-4o-mini", None, prompt_tokens=1000, completion_tokens=500)
    prompt, completion = litellm.cost_per_token(
        model="openai/gpt-4o-mini", prompt_tokens=1000, completion_tokens=500
    )
    assert known == pytest.approx(prompt + completion) and known > 0


def test_completion_cost_follows_the_price() -> None:
    price = PriceConfig(input_per_million=1e6, output_per_million=0.0)
    done = asyncio.run(
        LiteLLMModel(price=price, workers=0).complete(request(), attempt=0, timeout_s=10)
    )
    assert done.prompt_tokens > 0 and done.cost_usd == pytest.approx(done.prompt_tokens)
