"""Model failures: runs stop early and fail loudly, cached failures are retried in record
mode (and reproduced in replay mode), and parameters a provider rejects are not sent."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import litellm
import pytest

from simworld.cli import main
from simworld.config.scenario import LLMConfig
from simworld.errors import ModelFailureError
from simworld.llm.cache import ResponseCache
from simworld.llm.gateway import Gateway, commonest_cause, error_kind, is_transient
from simworld.llm.litellm_backend import (
    CallIdentity,
    Completion,
    LanguageModel,
    LiteLLMModel,
    LLMRequest,
    dropped_params,
)

ANTHROPIC = "anthropic/claude-3-5-haiku-20241022"


def _run(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    run_dir = tmp_path / "run"
    code = main(
        ["run", str(path), "--out", str(run_dir), "--cache", str(tmp_path / "c.db"), "--quiet"]
    )
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    return code, manifest


def test_unfixable_error_stops_the_run_at_once(make_scenario, tmp_path, capsys):
    """An authentication error is not retried: the run stops failed, exit 1, one line."""
    path = make_scenario({"llm.model": "fake/default?failure_rate=1&failures=auth"})
    code, manifest = _run(path, tmp_path, capsys)
    err = capsys.readouterr().err
    assert code == 1
    assert manifest["status"] == "failed"
    assert "auth" in manifest["error"] and "retrying cannot fix" in manifest["error"]
    assert err.count("\n") == 1 and "run failed" in err
    # stopped in the first batch of calls (step 0's probes), each tried once
    assert manifest["totals"]["model_calls"] <= 16
    assert manifest["steps_completed"] == 0
    lines = (tmp_path / "run" / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["run_start"]


@pytest.mark.parametrize("kind", ["not_found", "bad_request"])
def test_other_unfixable_kinds_stop_the_run(make_scenario, tmp_path, capsys, kind):
    path = make_scenario({"llm.model": f"fake/default?failure_rate=1&failures={kind}"})
    code, manifest = _run(path, tmp_path, capsys)
    assert code == 1 and manifest["status"] == "failed" and kind in manifest["error"]


def test_failures_past_the_threshold_stop_the_run(make_scenario, tmp_path, capsys):
    """Retryable failures on every call: the run fails after its first step, not at the end."""
    path = make_scenario(
        {"llm.model": "fake/default?failure_rate=1&failures=rate_limit", "llm.max_retries": 1}
    )
    code, manifest = _run(path, tmp_path, capsys)
    assert code == 1
    assert manifest["status"] == "failed"
    assert "llm.max_failure_rate 0.5" in manifest["error"]
    # and says why: every call's last error was a rate limit
    calls = manifest["totals"]["calls"]
    assert f"; {calls} of them ended in a rate_limit error, such as: " in manifest["error"]
    assert manifest["steps_completed"] == 0
    assert manifest["totals"]["model_calls"] == 2 * calls


def test_threshold_is_settable(make_scenario, tmp_path, capsys):
    """``llm.max_failure_rate: 1.0`` lets a run of failed calls finish (recorded failures)."""
    path = make_scenario(
        {
            "llm.model": "fake/default?failure_rate=1&failures=rate_limit",
            "llm.max_retries": 0,
            "llm.max_failure_rate": 1.0,
        }
    )
    code, manifest = _run(path, tmp_path, capsys)
    assert code == 0 and manifest["status"] == "completed"
    assert manifest["totals"]["failures"] == manifest["totals"]["calls"] > 0
    # a topic none of whose probes was answered has no measures, and the run says so
    printed = capsys.readouterr().out
    for topic, checks in manifest["signal"].items():
        assert checks["n"] == 0 and "none of its" in checks["warning"], topic
        assert f"WARNING    topic {topic}: none of its" in printed
    assert main(["report", str(tmp_path / "run")]) == 0
    page = (tmp_path / "run" / "report" / "report.html").read_text(encoding="utf-8")
    assert "so it has no measures" in page and "look degenerate" not in page


def test_the_commonest_cause_does_not_depend_on_the_order_of_failures():
    """Most calls' kind wins, then its most frequent message; ties go alphabetically."""
    failures = [("timeout", "slow b")] * 2 + [("server", "down")] * 3 + [("timeout", "slow a")] * 2
    for order in (failures, failures[::-1], sorted(failures)):
        assert commonest_cause(Counter(order)) == ("timeout", 4, "slow a")
    assert commonest_cause(Counter([("server", "down")] * 5 + [("timeout", "t")] * 4)) == (
        "server",
        5,
        "down",
    )
    assert commonest_cause(Counter()) is None


def test_recorded_messages_drop_tracebacks_and_addresses(tmp_path):
    """What litellm appends to some messages (a traceback of this machine's files, an
    object's address) would make the same failure differ between runs: it is dropped."""

    class Unreachable(LanguageModel):
        async def complete(self, request, *, attempt, timeout_s, transient=0):  # type: ignore[no-untyped-def]
            raise litellm.APIConnectionError(
                "Cannot connect ssl:<ssl.SSLContext object at 0x7f27f98f5370> [refused]\n"
                'Traceback (most recent call last):\n  File "/x/litellm/main.py", line 1',
                "hosted_vllm",
                request.model,
            )

    gateway = _gateway(Unreachable(), ResponseCache(tmp_path / "c.db"), "record")
    outcome = asyncio.run(gateway.call(_request()))
    message = outcome.errors[0]["message"]
    assert message.endswith("Cannot connect ssl:<ssl.SSLContext object> [refused]")
    assert "0x7f" not in message and "Traceback" not in message
    with pytest.raises(ModelFailureError, match=r"1 of them ended in a connection error"):
        gateway.check_failures()


@pytest.mark.parametrize(
    "message",
    [
        "Missing Gemini API key. Set the GEMINI_API_KEY or GOOGLE_API_KEY environment variable.",
        "Missing API key for DashScope. Set DASHSCOPE_API_KEY environment variable",
        "Missing Azure AI credentials - set an API key",
    ],
)
def test_a_provider_without_its_key_stops_the_run(message):
    """Some providers' clients say they have no key by a connection error (Gemini's): that is
    an auth error, not retried, and the run stops at once."""
    exc = litellm.APIConnectionError(message, "gemini", "gemini/gemini-2.0-flash")
    assert error_kind(exc) == "auth" and not is_transient(exc)
    unrelated = litellm.APIConnectionError(
        "missing field answer in the reply; the api key was accepted", "fake", "fake/default"
    )
    assert error_kind(unrelated) == "connection" and is_transient(unrelated)


def test_missing_credentials_is_an_auth_error():
    """The litellm call wraps the OpenAI client's "Missing credentials" as a server error."""
    exc = litellm.InternalServerError(
        "OpenAIException - Missing credentials. Please pass an `api_key`",
        llm_provider="openai",
        model="gpt-4o-mini",
    )
    assert error_kind(exc) == "auth" and not is_transient(exc)
    assert error_kind(litellm.RateLimitError("slow down", "openai", "gpt-4o-mini")) == (
        "rate_limit"
    )


class Flaky(LanguageModel):
    """Fails (retryably) until ``fixed``; counts the requests it receives."""

    def __init__(self) -> None:
        self.fixed = False
        self.requests = 0

    async def complete(
        self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
    ) -> Completion:
        self.requests += 1
        if not self.fixed:
            raise litellm.ServiceUnavailableError("down for now", "fake", request.model)
        return Completion(text="hello")


def _request(step: int = 1) -> LLMRequest:
    return LLMRequest(
        model="fake/default",
        messages=({"role": "user", "content": "hi"},),
        identity=CallIdentity(seed=1, agent="a", step=step, purpose="post"),
        temperature=0.0,
        max_tokens=8,
    )


def _gateway(model: LanguageModel, cache: ResponseCache, mode: str) -> Gateway:
    config = LLMConfig(model="fake/default", cache=mode, max_retries=0, backoff_base_s=0.0)
    return Gateway(model, config=config, cache=cache)


def test_record_mode_retries_a_cached_failure_and_replay_reproduces_it(tmp_path):
    model, cache = Flaky(), ResponseCache(tmp_path / "c.db")
    first = asyncio.run(_gateway(model, cache, "record").call(_request()))
    assert first.status == "failed" and model.requests == 1

    replayed = asyncio.run(_gateway(model, cache, "replay").call(_request()))
    assert replayed.status == "failed" and replayed.cached and model.requests == 1

    model.fixed = True
    again = asyncio.run(_gateway(model, cache, "record").call(_request()))
    assert again.ok and not again.cached and model.requests == 2
    # the answer replaced the failure in the cache
    assert cache.get(_request().cache_key())["status"] == "ok"
    later = asyncio.run(_gateway(model, cache, "replay").call(_request()))
    assert later.ok and later.cached and model.requests == 2


def test_resume_keeps_the_failures_of_the_steps_it_re_executes(tmp_path):
    model, cache = Flaky(), ResponseCache(tmp_path / "c.db")
    for step in (1, 2):
        asyncio.run(_gateway(model, cache, "record").call(_request(step)))
    model.fixed = True
    gateway = _gateway(model, cache, "record")
    gateway.keep_failures_through = 1  # a resumed run whose transcript ends with step 1
    assert asyncio.run(gateway.call(_request(1))).status == "failed"
    assert asyncio.run(gateway.call(_request(2))).ok


def test_unfixable_failures_are_not_cached(tmp_path):
    class Unauthorised(LanguageModel):
        async def complete(self, request, *, attempt, timeout_s, transient=0):  # type: ignore[no-untyped-def]
            raise litellm.AuthenticationError("no key", "openai", request.model)

    cache = ResponseCache(tmp_path / "c.db")
    gateway = _gateway(Unauthorised(), cache, "record")
    assert asyncio.run(gateway.call(_request())).status == "failed"
    with pytest.raises(ModelFailureError, match="auth"):
        gateway.check_failures()
    assert len(cache) == 0
    # later calls are not sent
    later = asyncio.run(gateway.call(_request(2)))
    assert later.errors[0]["kind"] == "not_sent" and gateway.accounting.model_calls == 1


def test_parameters_a_provider_rejects_are_dropped():
    assert dropped_params(ANTHROPIC) == ("seed",)
    assert dropped_params("openai/gpt-4o-mini") == ()
    assert dropped_params("fake/default") == ()


def test_anthropic_run_sends_no_seed_and_records_the_drop(
    make_scenario, tmp_path, capsys, monkeypatch
):
    """An Anthropic model string, answered offline: litellm's call is intercepted, checked
    for the parameters sent, and answered by the fake provider."""
    sent: list[dict[str, Any]] = []
    real = litellm.acompletion

    async def intercepted(**kwargs: Any) -> Any:
        sent.append(kwargs)
        return await real(**{**kwargs, "model": "fake/default", "seed": 7})

    monkeypatch.setenv("SIMWORLD_LLM_WORKERS", "0")
    monkeypatch.setattr(litellm, "acompletion", intercepted)
    path = make_scenario({"llm.model": ANTHROPIC, "protocol.steps": 1})
    code, manifest = _run(path, tmp_path, capsys)
    assert code == 0, capsys.readouterr().err
    assert sent and all("seed" not in kw and kw["model"] == ANTHROPIC for kw in sent)
    assert all("temperature" in kw and "max_tokens" in kw for kw in sent)
    assert manifest["dropped_params"] == {ANTHROPIC: ["seed"]}


def test_openai_run_keeps_the_seed(monkeypatch):
    sent: list[dict[str, Any]] = []

    async def intercepted(**kwargs: Any) -> Any:
        sent.append(kwargs)
        raise litellm.RateLimitError("stop here", "openai", kwargs["model"])

    monkeypatch.setattr(litellm, "acompletion", intercepted)
    request = LLMRequest(
        model="openai/gpt-4o-mini",
        messages=({"role": "user", "content": "hi"},),
        identity=CallIdentity(seed=1, agent="a", step=1, purpose="post"),
        temperature=0.0,
        max_tokens=8,
    )
    with pytest.raises(litellm.RateLimitError):
        asyncio.run(LiteLLMModel(workers=0).complete(request, attempt=0, timeout_s=5))
    assert sent[0]["seed"] == request.identity.derived_seed(0)


def test_an_embedding_model_that_fails_stops_the_run_in_one_line(
    make_scenario, tmp_path, capsys, monkeypatch
):
    """memory.embedding through litellm: a request no retry fixes ends the run ``failed``
    with one line naming the embedding model, and the manifest records it (no traceback, no
    run left ``running``). A missing key is refused before anything is written."""
    path = make_scenario(
        {
            "memory.store": "chroma",
            "memory.embedding": {"provider": "litellm", "model": "openai/text-embedding-3-small"},
        }
    )
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["run", str(path), "--out", str(tmp_path / "nokey"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("memory.embedding.model: environment variable OPENAI_API_KEY is not set\n")
    assert not (tmp_path / "nokey").exists()

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-0123456789")

    def refused(model: str, input: list[str]) -> object:
        raise litellm.AuthenticationError("Incorrect API key provided", "openai", model)

    monkeypatch.setattr(litellm, "embedding", refused)
    code, manifest = _run(path, tmp_path, capsys)
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "memory.embedding.model openai/text-embedding-3-small: auth error" in err[0]
    assert manifest["status"] == "failed"
    assert manifest["error"].startswith("memory.embedding.model openai/text-embedding-3-small")
