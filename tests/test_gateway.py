"""The gateway: retries, structured output, accounting, cache keys and the concurrency cap."""

from __future__ import annotations

import asyncio
import json
import random

import litellm
import pytest
from pydantic import BaseModel

from simworld.config.scenario import LLMConfig
from simworld.errors import ReplayMissError
from simworld.llm.cache import ResponseCache
from simworld.llm.gateway import Gateway
from simworld.llm.litellm_backend import CallIdentity, Completion, LanguageModel, LLMRequest


class Answer(BaseModel):
    answer: int


class Scripted(LanguageModel):
    """Answers from a script: each item is a text or an exception to raise."""

    def __init__(self, script: list[str | BaseException], delay: float = 0.0) -> None:
        self.script = list(script)
        self.calls: list[int] = []
        self.transients: list[int] = []
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0

    async def complete(self, request, *, attempt, timeout_s, transient=0):
        self.calls.append(attempt)
        self.transients.append(transient)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            item = self.script.pop(0) if self.script else '{"answer": 1}'
            if isinstance(item, BaseException):
                raise item
            return Completion(text=item, prompt_tokens=10, completion_tokens=2, cost_usd=0.5)
        finally:
            self.in_flight -= 1


def request(agent: str = "a", step: int = 1, content: str = "hi") -> LLMRequest:
    return LLMRequest(
        model="test/model",
        messages=({"role": "user", "content": content},),
        identity=CallIdentity(seed=1, agent=agent, step=step, purpose="probe:x"),
        temperature=0.7,
        max_tokens=20,
        schema=Answer.model_json_schema(),
        schema_name="Answer",
    )


def gateway(model: LanguageModel, cache: ResponseCache | None = None, **cfg) -> Gateway:
    mode = "off" if cache is None else "record"
    config = LLMConfig(cache=mode, backoff_base_s=0.0, **cfg)
    return Gateway(model, config=config, cache=cache, jitter=random.Random(0))


def run(coro):
    return asyncio.run(coro)


def rate_limited() -> BaseException:
    return litellm.RateLimitError("slow down", llm_provider="test", model="m")


def test_transient_errors_are_retried_then_succeed():
    model = Scripted(
        [rate_limited(), litellm.Timeout("t", model="m", llm_provider="test"), '{"answer": 3}']
    )
    out = run(gateway(model).call(request(), Answer))
    assert out.ok and out.parsed == {"answer": 3}
    # the seed's attempt stays 0: transient failures never change the sample asked for
    assert model.calls == [0, 0, 0]
    assert model.transients == [0, 1, 2]
    assert [e["kind"] for e in out.errors] == ["rate_limit", "timeout"]
    assert [e["attempt"] for e in out.errors] == [0, 1]
    assert out.attempts == 3


def test_an_error_without_a_message_is_recorded_with_one():
    """The asyncio timeout says nothing: the record (and the failure summary quoting it)
    says what happened instead of ending in "such as: "."""
    model = Scripted([TimeoutError(), '{"answer": 3}'])
    out = run(gateway(model, timeout_s=7.5).call(request(), Answer))
    assert [(e["kind"], e["message"]) for e in out.errors] == [
        ("timeout", "no answer within llm.timeout_s (7.5 s)")
    ]


def test_only_invalid_answers_move_the_seed_attempt():
    timeout = litellm.Timeout("t", model="m", llm_provider="test")
    model = Scripted([timeout, "not json", rate_limited(), '{"answer": "x"}', '{"answer": 2}'])
    out = run(gateway(model, max_invalid_retries=2).call(request(), Answer))
    assert out.ok and out.parsed == {"answer": 2}
    assert model.calls == [0, 0, 1, 1, 2]
    assert model.transients == [0, 1, 1, 2, 2]
    assert [(e["attempt"], e["kind"]) for e in out.errors] == [
        (0, "timeout"),
        (1, "invalid_output"),
        (2, "rate_limit"),
        (3, "invalid_output"),
    ]
    assert out.attempts == 5


def test_transient_errors_exhaust_retries_into_recorded_failure():
    model = Scripted([rate_limited()] * 10)
    gw = gateway(model, max_retries=2)
    out = run(gw.call(request(), Answer))
    assert out.status == "failed" and out.parsed is None and out.text is None
    assert len(model.calls) == 3 and len(out.errors) == 3
    assert gw.accounting.failures == 1


def test_non_transient_error_is_not_retried():
    model = Scripted([litellm.AuthenticationError("bad key", llm_provider="test", model="m")])
    out = run(gateway(model, max_retries=5).call(request(), Answer))
    assert out.status == "failed" and len(model.calls) == 1
    assert out.errors[0]["kind"] == "auth"


def test_invalid_output_is_retried_a_bounded_number_of_times():
    model = Scripted(["not json", '{"answer": "x"}', '{"answer": 4}'])
    out = run(gateway(model, max_invalid_retries=2).call(request(), Answer))
    assert out.ok and out.parsed == {"answer": 4}
    assert [e["kind"] for e in out.errors] == ["invalid_output", "invalid_output"]
    # every attempt's tokens and cost are counted
    assert out.prompt_tokens == 30 and out.cost_usd == pytest.approx(1.5)

    model = Scripted(["nope", "nope", "nope", '{"answer": 4}'])
    out = run(gateway(model, max_invalid_retries=1).call(request(), Answer))
    assert out.status == "failed" and len(model.calls) == 2


def test_backoff_grows_exponentially_and_is_capped():
    gw = Gateway(
        Scripted([]),
        config=LLMConfig(cache="off", backoff_base_s=1.0, backoff_max_s=5.0),
        cache=None,
        jitter=random.Random(0),
    )
    samples = {attempt: [gw._backoff(attempt) for _ in range(200)] for attempt in (1, 2, 3, 6)}
    assert max(samples[1]) <= 1.0 and max(samples[2]) <= 2.0 and max(samples[3]) <= 4.0
    assert max(samples[6]) <= 5.0 and max(samples[6]) > 4.0
    assert min(samples[3]) >= 0.0 and len(set(samples[3])) > 100  # jittered


def test_concurrency_cap_is_respected():
    model = Scripted([], delay=0.01)
    gw = gateway(model, concurrency=3)

    async def many():
        return await asyncio.gather(*(gw.call(request(agent=f"a{i}"), Answer) for i in range(20)))

    outs = run(many())
    assert all(o.ok for o in outs)
    assert model.max_in_flight == 3


def test_cache_key_covers_identity_and_content():
    base = request()
    assert base.cache_key() == request().cache_key()
    assert base.cache_key() != request(agent="b").cache_key()
    assert base.cache_key() != request(step=2).cache_key()
    assert base.cache_key() != request(content="hi!").cache_key()
    other_temp = LLMRequest(**{**base.__dict__, "temperature": 0.1})
    assert base.cache_key() != other_temp.cache_key()
    assert base.identity.derived_seed(0) != base.identity.derived_seed(1)


def test_record_then_serve_from_cache_including_failures(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    model = Scripted(['{"answer": 2}', rate_limited()])
    gw = gateway(model, cache=cache, max_retries=0)
    ok = run(gw.call(request(agent="x"), Answer))
    failed = run(gw.call(request(agent="y"), Answer))
    assert ok.ok and failed.status == "failed"
    replay = Gateway(Scripted([]), config=LLMConfig(cache="replay"), cache=cache)
    again_ok = run(replay.call(request(agent="x"), Answer))
    again_failed = run(replay.call(request(agent="y"), Answer))
    assert again_ok.record() == ok.record() and again_ok.cached
    assert again_failed.record() == failed.record()
    assert replay.accounting.model_calls == 0 and replay.accounting.cache_hits == 2
    with pytest.raises(ReplayMissError):
        run(replay.call(request(agent="z"), Answer))
    stored = cache.get(ok.key)
    assert json.dumps(stored)  # plain JSON, never pickled


def test_a_record_that_took_more_retries_than_the_run_allows_is_not_reused(tmp_path):
    """The cache key leaves the retry limits out: a run allowing no retry, sharing a cache
    with one that retried, must not take an answer it could not have got, nor overwrite
    the other run's record; in replay mode it says so instead of answering."""
    cache = ResponseCache(tmp_path / "c.sqlite")
    patient = gateway(Scripted([rate_limited(), '{"answer": 2}']), cache=cache, max_retries=4)
    recorded = run(patient.call(request(), Answer))
    assert recorded.ok and len(recorded.errors) == 1
    hasty = gateway(Scripted([rate_limited()]), cache=cache, max_retries=0)
    own = run(hasty.call(request(), Answer))
    assert own.status == "failed" and not own.cached  # as with a cache of its own
    assert hasty.accounting.model_calls == 1
    assert cache.get(recorded.key) == recorded.record()  # the other run's record stands
    strict = Gateway(Scripted([]), config=LLMConfig(cache="replay", max_retries=0), cache=cache)
    with pytest.raises(ReplayMissError, match=r"took more retries than llm\.max_retries"):
        run(strict.call(request(), Answer))
    same = Gateway(Scripted([]), config=LLMConfig(cache="replay", max_retries=4), cache=cache)
    assert run(same.call(request(), Answer)).record() == recorded.record()


def test_budget_is_tracked_on_spending():
    gw = gateway(Scripted([]), budget_usd=1.0)
    run(gw.call(request(agent="a"), Answer))
    assert not gw.budget_exhausted
    run(gw.call(request(agent="b"), Answer))
    assert gw.budget_exhausted and gw.accounting.cost_usd == pytest.approx(1.0)


def test_prompt_tokens_from_the_provider_cache_are_counted_but_never_recorded():
    class Cached(Scripted):
        async def complete(self, request, *, attempt, timeout_s, transient=0):
            done = await super().complete(
                request, attempt=attempt, timeout_s=timeout_s, transient=transient
            )
            done.cached_prompt_tokens = 6
            return done

    gw = gateway(Cached(["not json", '{"answer": 2}']))
    out = run(gw.call(request(), Answer))
    assert out.ok and out.cached_prompt_tokens == 12  # both attempts
    assert gw.accounting.cached_prompt_tokens == 12
    assert "cached_prompt_tokens" not in out.record()


def test_cached_prompt_tokens_are_read_from_the_usage():
    from simworld.llm.litellm_backend import cached_prompt_tokens

    usage = litellm.Usage(
        prompt_tokens=10, completion_tokens=1, prompt_tokens_details={"cached_tokens": 8}
    )
    assert cached_prompt_tokens(usage) == 8
    assert cached_prompt_tokens({"prompt_tokens_details": {"cached_tokens": 3}}) == 3
    assert cached_prompt_tokens(litellm.Usage(prompt_tokens=10, completion_tokens=1)) == 0
    assert cached_prompt_tokens(None) == 0


SECRET = "s3cr3t-value-of-a-credential"


def test_masking_covers_every_recorded_string_as_a_deep_redaction_does() -> None:
    """The gateway masks only values (field names are its own), with the same result as
    masking the whole record: a secret in any recorded text, nested or not, is masked."""
    from simworld.llm.gateway import CallOutcome
    from simworld.support.redact import MASK, Redactor

    redactor = Redactor([SECRET])
    gw = Gateway(Scripted([]), config=LLMConfig(cache="off"), cache=None, redactor=redactor)
    outcome = CallOutcome(
        "ab" * 32,
        CallIdentity(seed=1, agent=f"agent-{SECRET}", step=2, purpose="post", index=3),
        f"test/{SECRET}",
        "ok",
        f"says {SECRET}",
        {"answer": 1, "why": [f"because {SECRET}"], SECRET: 2},
        2,
        [{"attempt": 0, "kind": "invalid_output", "message": "m", "text": SECRET}],
        10,
        2,
        0.5,
        {"option_probs": {SECRET: 1.0}},
    )
    record = outcome.record()
    masked = gw._mask(record)
    assert masked == redactor.deep(record)
    assert SECRET not in json.dumps(masked) and MASK in json.dumps(masked)
    assert record["text"] == f"says {SECRET}"  # the outcome's own record is left as it was


def test_an_answer_holding_a_secret_is_recorded_masked() -> None:
    from simworld.support.redact import MASK, Redactor

    gw = Gateway(
        Scripted([f"here is {SECRET}"]),
        config=LLMConfig(cache="off", backoff_base_s=0.0),
        cache=None,
        redactor=Redactor([SECRET]),
    )
    outcome = run(gw.call(request()))
    assert outcome.ok and outcome.text == f"here is {MASK}"
