"""The fake provider's option parsing."""

from __future__ import annotations

import pytest

from simworld.llm.providers.fake import FAILURE_KINDS, FakeOptions


def test_options_are_parsed_once_per_model_string() -> None:
    first = FakeOptions.parse("fake/default?latency_ms=100&failures=timeout")
    assert first == FakeOptions(latency_ms=100.0, failures=("timeout",))
    assert FakeOptions.parse("fake/default?latency_ms=100&failures=timeout") is first
    assert FakeOptions.parse("fake/default").failures == FAILURE_KINDS


@pytest.mark.parametrize(
    "model",
    [
        "fake/default?speed=3",
        "fake/default?failures=crash",
        "fake/default?failure_rate=2",
        "fake/default?latency_ms=abc",
        "fake/default?latency_jitter_ms=-5",
        "fake/default?latency_ms=inf",
    ],
)
def test_bad_options_raise_every_time(model: str) -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="fake provider"):
            FakeOptions.parse(model)
