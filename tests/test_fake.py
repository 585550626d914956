"""The fake provider: option parsing, and its blocking path's timeout."""

from __future__ import annotations

import dataclasses

import litellm
import pytest

from simworld.fake import FAILURE_KINDS, FakeOptions
from simworld.llm import CallIdentity, LiteLLMModel, LLMRequest


def test_options_are_parsed_once_per_model_string() -> None:
    first = FakeOptions.parse("fake/default?latency_ms=100&failures=timeout")
    assert first == FakeOptions(latency_ms=100.0, failures=("timeout",))
    assert FakeOptions.parse("fake/default?latency_ms=100&failures=timeout") is first
    assert FakeOptions.parse("fake/default").failures == FAILURE_KINDS


@pytest.mark.parametrize("model", ["fake/default?speed=3", "fake/default?failures=crash"])
def test_bad_options_raise_every_time(model: str) -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="fake provider"):
            FakeOptions.parse(model)


def test_blocking_call_longer_than_its_timeout_times_out() -> None:
    """Like a provider's HTTP client, the blocking path gives up after ``timeout``."""
    model = LiteLLMModel(workers=0)
    req = LLMRequest(
        model="fake/default?latency_ms=60000",
        messages=({"role": "user", "content": "Say something."},),
        identity=CallIdentity(seed=1, agent="a", step=1, purpose="post"),
        temperature=0.7,
        max_tokens=20,
    )
    with pytest.raises(litellm.Timeout, match=r"no answer within 0\.2 s"):
        model.complete_blocking(req, attempt=0, timeout_s=0.2)
    quick = dataclasses.replace(req, model="fake/default?latency_ms=50")
    assert model.complete_blocking(quick, attempt=0, timeout_s=0.2).text
