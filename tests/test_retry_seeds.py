"""Transient failures never change outputs: the seed moves only after an invalid answer.

A call that times out on a busy host (or hits a rate limit) is sent again with the same seed,
so it gets the answer it would have got without the failure; only its ``attempts`` and
``errors`` say what happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from pathlib import Path

import pandas as pd
import pytest
from pydantic import BaseModel

from simworld.config.scenario import LLMConfig
from simworld.llm.gateway import Gateway
from simworld.llm.litellm_backend import (
    CallIdentity,
    Completion,
    LanguageModel,
    LiteLLMModel,
    LLMRequest,
)
from simworld.runs.replay import verify_replay
from simworld.runs.run import run_scenario

OPTIONS = "  1 = Disagree\n  2 = Neutral\n  3 = Agree"
TIMEOUT_S = 0.2
ENUM_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer", "enum": [1, 2, 3]}},
    "required": ["answer"],
}


class Answer(BaseModel):
    answer: int


class SlowOnce(LanguageModel):
    """Delegates to ``inner``, but the first request of every call outlives the timeout
    (or, with ``instant``, raises the timeout at once)."""

    def __init__(self, inner: LanguageModel, *, instant: bool = False) -> None:
        self.inner = inner
        self.instant = instant
        self.seen: set[CallIdentity] = set()
        self.sent: list[tuple[int, int]] = []

    async def complete(
        self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
    ) -> Completion:
        self.sent.append((attempt, transient))
        if request.identity not in self.seen:
            self.seen.add(request.identity)
            if self.instant:
                raise TimeoutError("stub: timed out")
            await asyncio.sleep(timeout_s * 2)  # the gateway's timeout fires first
        return await self.inner.complete(
            request, attempt=attempt, timeout_s=timeout_s, transient=transient
        )


def requests(model: str, count: int = 12) -> list[LLMRequest]:
    """Posts and probes of ``count`` agents (the fake's answers vary with the seed)."""
    out = []
    for i in range(count):
        probe = i % 2 == 1
        content = f"Topic: Cities are better\n{OPTIONS}" if probe else "Say something."
        out.append(
            LLMRequest(
                model=model,
                messages=({"role": "user", "content": content},),
                identity=CallIdentity(
                    seed=5, agent=f"a{i}", step=1, purpose="probe" if probe else "post"
                ),
                temperature=1.0,
                max_tokens=32,
                schema=Answer.model_json_schema() if probe else None,
                schema_name="Answer" if probe else None,
            )
        )
    return out


def answers(model: LanguageModel, reqs: list[LLMRequest], **cfg) -> list[tuple[str, int]]:
    config = LLMConfig(cache="off", backoff_base_s=0.0, concurrency=4, **cfg)
    gateway = Gateway(model, config=config, cache=None, jitter=random.Random(0))

    async def all_calls():
        return await asyncio.gather(*(gateway.call(r, Answer if r.schema else None) for r in reqs))

    outcomes = asyncio.run(all_calls())
    assert [o.errors for o in outcomes if not o.ok] == []
    return [(o.text, o.attempts) for o in outcomes]


def test_a_call_that_times_out_once_answers_as_without_the_timeout():
    reqs = requests("fake/default")
    plain = answers(LiteLLMModel(workers=0), reqs)
    slow = SlowOnce(LiteLLMModel(workers=0))
    retried = answers(slow, reqs, timeout_s=TIMEOUT_S)
    assert [text for text, _ in retried] == [text for text, _ in plain]
    assert {attempts for _, attempts in retried} == {2}  # every call timed out once
    assert sorted(slow.sent) == [(0, 0)] * len(reqs) + [(0, 1)] * len(reqs)
    # the check could fail: a new seed (what a timeout used to cost) changes answers
    moved = [
        asyncio.run(LiteLLMModel(workers=0).complete(r, attempt=1, timeout_s=10)).text for r in reqs
    ]
    assert moved != [text for text, _ in plain]


def test_fake_injected_transient_failures_do_not_change_answers():
    reqs = requests("fake/default", count=24)
    model = "fake/default?failure_rate=0.5&failures=timeout,rate_limit"
    flaky = [dataclasses.replace(r, model=model) for r in reqs]
    plain = answers(LiteLLMModel(workers=0), reqs)
    retried = answers(LiteLLMModel(workers=0), flaky, max_retries=12)
    assert [text for text, _ in retried] == [text for text, _ in plain]
    assert any(attempts > 1 for _, attempts in retried)  # failures were injected and retried


def _spoken(run: Path) -> list[tuple]:
    events = [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]
    return [
        (e["type"], e["agent"], e.get("text"), e.get("answer"))
        for e in events
        if e["type"] in {"message", "probe"}
    ]


@pytest.mark.parametrize("failures", ["timeout", "rate_limit,timeout"])
def test_a_run_with_transient_failures_has_the_outputs_of_one_without(
    make_scenario, tmp_path, failures
):
    changes = {"population.size": 8, "protocol.steps": 2, "llm.max_retries": 12}
    clean = make_scenario({**changes, "llm.model": "fake/default"})
    flaky = make_scenario(
        {**changes, "llm.model": f"fake/default?failure_rate=0.4&failures={failures}"}
    )
    run_scenario(clean, out_dir=tmp_path / "clean", cache_path=tmp_path / "c1.db")
    result = run_scenario(flaky, out_dir=tmp_path / "flaky", cache_path=tmp_path / "c2.db")
    assert result.status == "completed" and result.accounting.failures == 0
    calls = pd.read_parquet(tmp_path / "flaky" / "llm_calls.parquet")
    assert (calls.attempts > 1).any()
    assert _spoken(tmp_path / "flaky") == _spoken(tmp_path / "clean")
    columns = ["step", "agent", "topic", "value", "answer", "raw", "ok"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "flaky" / "opinions.parquet")[columns],
        pd.read_parquet(tmp_path / "clean" / "opinions.parquet")[columns],
    )
    # and the cache replays the run with its recorded retries
    report = verify_replay(tmp_path / "flaky", out_dir=tmp_path / "again")
    assert report.identical and report.result.accounting.model_calls == 0


@pytest.mark.slow
def test_the_embedded_model_retried_after_a_timeout_answers_as_without_it():
    reqs = [
        dataclasses.replace(
            r,
            model="local/gemma3-270m",
            max_tokens=16,
            schema=ENUM_SCHEMA if r.schema else None,
        )
        for r in requests("x", 4)
    ]
    plain = answers(LiteLLMModel(workers=0), reqs, timeout_s=600)
    # the timeout is raised by the stub: a real one would leave the engine busy meanwhile
    retried = answers(SlowOnce(LiteLLMModel(workers=0), instant=True), reqs, timeout_s=600)
    assert [text for text, _ in retried] == [text for text, _ in plain]
    assert {attempts for _, attempts in retried} == {2}
