"""Runs against real OpenAI-compatible servers on 127.0.0.1, through litellm as a user runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import litellm
import openai
import pytest
from server_fixtures import KEY, KEY_ENV, all_bytes, server, server_key, servers

from simworld.cli import main
from simworld.config.scenario import LLMConfig
from simworld.errors import ConfigError
from simworld.llm.cache import ResponseCache
from simworld.llm.credentials import KEY_VARIABLES, missing_key
from simworld.llm.fake_server import FakeServer, chat_completion, free_port
from simworld.llm.gateway import Gateway, error_kind, retry_after_s
from simworld.llm.litellm_backend import CallIdentity, LiteLLMModel, LLMRequest
from simworld.runs.replay import verify_replay
from simworld.runs.run import run_scenario
from simworld.sweeps.driver import run_sweep

__all__ = ["server", "server_key", "servers"]  # fixtures, used by name

MODEL = "openai/fake"
SAME = ("transcript.jsonl", "opinions.parquet")


def http_llm(url: str, **extra: object) -> dict[str, object]:
    """Scenario changes that send calls to the server at ``url``."""
    return {"llm.model": MODEL, "llm.api_base": url, "llm.api_key_env": KEY_ENV, **extra}


def request(config: LLMConfig, index: int = 0, **extra: object) -> LLMRequest:
    return LLMRequest(
        model=config.model,
        messages=({"role": "user", "content": "Say something."},),
        identity=CallIdentity(seed=1, agent="a", step=0, purpose="post", index=index),
        temperature=0.7,
        max_tokens=16,
        params=config.params or None,
        route=config.route(),
        **extra,  # type: ignore[arg-type]
    )


def gateway(config: LLMConfig, cache: ResponseCache | None = None) -> Gateway:
    return Gateway(LiteLLMModel(workers=0), config=config, cache=cache)


def http_config(url: str, **extra: object) -> LLMConfig:
    return LLMConfig(
        model=MODEL,
        api_base=url,
        api_key_env=KEY_ENV,
        cache="off",
        backoff_base_s=0.0,
        **extra,  # type: ignore[arg-type]
    )


def call(gw: Gateway, req: LLMRequest):  # type: ignore[no-untyped-def]
    import asyncio

    return asyncio.run(gw.call(req))


def opinions(run_dir: Path) -> list[tuple[object, ...]]:
    """The opinion table without its cache keys (the model string differs between runs)."""
    import pandas as pd

    frame = pd.read_parquet(run_dir / "opinions.parquet")
    frame = frame.drop(columns=["call"])
    return sorted(map(tuple, frame.astype(str).to_numpy().tolist()))


# --- scenario settings -------------------------------------------------------------------


def test_provider_params_enter_the_cache_key_endpoint_and_key_do_not():
    plain = request(LLMConfig(model=MODEL))
    endpoint = request(LLMConfig(model=MODEL, api_base="http://127.0.0.1:1/v1", api_key_env="K"))
    top_p = request(LLMConfig(model=MODEL, params={"top_p": 0.9}))
    stop = request(LLMConfig(model=MODEL, params={"top_p": 0.9, "stop": ["\n"]}))
    neutral = request(LLMConfig(model=MODEL, params={"user": "lab-7"}))
    assert endpoint.cache_key() == plain.cache_key() == neutral.cache_key()
    assert len({plain.cache_key(), top_p.cache_key(), stop.cache_key()}) == 3
    assert request(LLMConfig(model=MODEL, params={})).cache_key() == plain.cache_key()


@pytest.mark.parametrize(
    ("llm", "field", "words"),
    [
        ({"api_key_env": "sk-abc123"}, "llm.api_key_env", "never the key itself"),
        ({"params": {"api_key": "x"}}, "llm.params", "llm.api_key_env"),
        ({"params": {"aws_secret_access_key": "x"}}, "llm.params", "aws_secret_access_key"),
        ({"params": {"azure_ad_token": "x"}}, "llm.params", "azure_ad_token: keys never"),
        ({"params": {"vertex_credentials": "x"}}, "llm.params", "vertex_credentials"),
        ({"params": {"default_headers": {"a": "b"}}}, "llm.params", "default_headers"),
        ({"params": {"extra_body": {"api_key": "x"}}}, "llm.params", "extra_body.api_key"),
        ({"api_base": "https://me:pw@h/v1"}, "llm.api_base", "user name or password"),
        ({"deployments": [{"api_base": "http://tok@b"}]}, "llm.deployments", "user name"),
        ({"params": {"seed": 3}}, "llm.params", "set by simworld"),
        ({"params": {"base_url": "http://h"}}, "llm.params", "llm.api_base"),
        ({"api_base": "http://a", "deployments": [{"api_base": "http://b"}]}, "llm", "not both"),
        ({"deployments": [{"api_base": "http://b", "fallback": True}]}, "llm", "fallback"),
        ({"deployments": [{"api_base": "http://b", "rpm": 0}]}, "llm.deployments", "rpm"),
    ],
)
def test_bad_endpoint_settings_are_one_line_exit_2(make_scenario, capsys, llm, field, words):
    path = make_scenario({f"llm.{k}": v for k, v in llm.items()})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and field in err and words in err


def test_a_key_variable_that_is_not_set_stops_the_run_before_anything_is_written(
    make_scenario, tmp_path, monkeypatch
):
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = make_scenario(http_llm("http://127.0.0.1:9/v1"))
    with pytest.raises(ConfigError, match=f"{KEY_ENV} is not set"):
        run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    assert not (tmp_path / "run").exists()


def test_a_provider_key_that_is_not_set_stops_a_run_or_sweep_before_anything_is_written(
    make_scenario, tmp_path, monkeypatch, capsys
):
    """Without ``OPENAI_API_KEY`` an ``openai/...`` model (no endpoint of its own) cannot be
    called at all: one line, exit 2, no run directory; a sweep of it is refused too."""
    for name in KEY_VARIABLES["openai"]:
        monkeypatch.delenv(name, raising=False)
    path = make_scenario({"llm.model": "openai/gpt-4o-mini"})
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"simworld: error: {path}: llm.model: environment variable OPENAI_API_KEY is not set"
    ]
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        run_sweep(path, seeds=[1, 2], out_dir=tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    ("model", "environ", "needed"),
    [
        ("openai/gpt-4o-mini", {}, "OPENAI_API_KEY"),
        ("gpt-4o-mini", {"HOME": "/home/x"}, "OPENAI_API_KEY"),
        ("openai/gpt-4o-mini", {"OPENAI_API_KEY": "k"}, None),
        ("openai/gpt-4o-mini", {"OPENAI_ADMIN_KEY": "k"}, None),
        ("openai/gpt-4o-mini", {"OPENAI_API_KEY": ""}, "OPENAI_API_KEY"),
        ("gemini/gemini-2.0-flash", {}, "GEMINI_API_KEY"),
        ("gemini/gemini-2.0-flash", {"GOOGLE_API_KEY": "k"}, None),
        ("gemini/gemini-2.0-flash", {"GEMINI_API_KEY": "k"}, None),
        ("anthropic/claude-3-5-haiku-20241022", {}, None),  # not known to need one variable
        ("fake/default", {}, None),
        ("local/gemma3-270m", {}, None),
    ],
)
def test_the_key_a_provider_cannot_do_without(model, environ, needed):
    assert missing_key(model, environ) == needed


@pytest.mark.parametrize("provider", sorted(KEY_VARIABLES))
def test_litellm_refuses_these_providers_without_their_variables(provider, monkeypatch):
    """The pre-check's table agrees with litellm: with none of a provider's variables set,
    its first call fails for want of a key (before any request is sent)."""
    for name in KEY_VARIABLES[provider]:
        monkeypatch.delenv(name, raising=False)
    model = {"openai": "openai/gpt-4o-mini", "gemini": "gemini/gemini-2.0-flash"}[provider]
    with pytest.raises(openai.OpenAIError) as caught:
        litellm.completion(
            model=model, messages=[{"role": "user", "content": "hi"}], num_retries=0, timeout=5
        )
    assert error_kind(caught.value) == "auth"


def test_a_key_given_to_litellm_in_the_program_is_enough(monkeypatch):
    monkeypatch.setattr(litellm, "api_key", "sk-given-in-code")
    assert missing_key("openai/gpt-4o-mini", {}) is None


# --- the server itself ---------------------------------------------------------------------


def test_server_answers_like_the_fake_provider_deterministically():
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "Topic: X\n  1 = Low\n  2 = High\nPick."}],
        "seed": 5,
        "temperature": 0.7,
        "logprobs": True,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "Answer",
                "schema": {"type": "object", "properties": {"answer": {"enum": [1, 2]}}},
            },
        },
    }
    first, again = chat_completion(body), chat_completion(dict(body))
    assert first == again
    assert json.loads(first["choices"][0]["message"]["content"])["answer"] in (1, 2)
    assert first["choices"][0]["logprobs"]["content"]
    assert chat_completion({**body, "seed": 6})["id"] != first["id"]


def test_server_binds_loopback_only_and_stops(server: FakeServer):
    import socket

    assert server.url.startswith("http://127.0.0.1:")
    port = server.port
    server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


# --- the HTTP path through the gateway -----------------------------------------------------


def test_retry_honours_retry_after(server, server_key):
    server.inject("rate_limit", retry_after_s=1.0)
    outcome = call(gateway(http_config(server.url)), request(http_config(server.url)))
    assert outcome.ok and outcome.attempts == 2
    assert [e["kind"] for e in outcome.errors] == ["rate_limit"]
    first, second = server.received
    assert first.fault == "rate_limit" and second.fault is None
    assert second.at - first.at >= 0.95  # backoff_base_s is 0: only Retry-After made it wait


def test_retry_after_is_read_from_the_litellm_error(server, server_key):
    import asyncio

    import litellm

    server.inject("rate_limit", retry_after_s=7)
    with pytest.raises(litellm.RateLimitError) as info:
        asyncio.run(
            litellm.acompletion(
                model=MODEL,
                api_base=server.url,
                api_key=KEY,
                max_retries=0,
                messages=[{"role": "user", "content": "hi"}],
            )
        )
    assert retry_after_s(info.value) == 7.0
    assert len(server.received) == 1  # the provider's client did not retry behind our back


@pytest.mark.parametrize("fault", ["server_error", "drop"])
def test_transient_faults_are_retried_with_the_error_recorded(server, server_key, fault):
    server.inject(fault)
    outcome = call(gateway(http_config(server.url)), request(http_config(server.url)))
    assert outcome.ok and outcome.attempts == 2 and len(server.received) == 2
    assert outcome.errors[0]["kind"] in {"server", "connection"}


def test_a_slow_answer_times_out_and_is_retried(server, server_key):
    server.inject("slow", delay_s=6.0)
    config = http_config(server.url, timeout_s=0.5)
    started = time.perf_counter()
    outcome = call(gateway(config), request(config))
    assert outcome.ok and [e["kind"] for e in outcome.errors] == ["timeout"]
    assert time.perf_counter() - started < 5.0  # did not wait for the slow answer


def test_a_server_that_keeps_failing_gives_a_recorded_failure_nothing_invented(server, server_key):
    server.inject("server_error", count=10)
    config = http_config(server.url, max_retries=2)
    outcome = call(gateway(config), request(config))
    assert not outcome.ok and outcome.text is None and outcome.parsed is None
    assert outcome.attempts == 3 and len(server.received) == 3
    assert all(e["kind"] == "server" for e in outcome.errors)


def test_params_logprobs_schema_and_seed_reach_the_server(server, server_key):
    config = http_config(server.url, params={"top_p": 0.9, "stop": ["\n\n"]})
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": [1, 2, 3]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    req = request(config, schema=schema, schema_name="Probe", logprobs=True)
    outcome = call(gateway(config), req)
    assert outcome.ok
    body = server.received[0].body
    assert body["top_p"] == 0.9 and body["stop"] == ["\n\n"]
    assert body["seed"] == req.identity.derived_seed(0)
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert server.received[0].authorization == f"Bearer {KEY}"
    assert set(outcome.extra["option_probs"]) == {"1", "2", "3"}


# --- whole scenarios over HTTP -------------------------------------------------------------


def test_scenario_over_http_matches_the_in_process_fake_and_leaks_no_key(
    make_scenario, tmp_path, server, server_key
):
    fake = run_scenario(make_scenario(), out_dir=tmp_path / "fake", cache_path=tmp_path / "f.db")
    server.inject("rate_limit", retry_after_s=0.2)
    server.inject("drop")
    path = make_scenario(http_llm(server.url))
    http = run_scenario(path, out_dir=tmp_path / "http", cache_path=tmp_path / "h.db")
    assert fake.status == http.status == "completed"
    assert opinions(fake.run_dir) == opinions(http.run_dir)
    assert len(server.received) == http.accounting.model_calls
    assert http.accounting.failures == 0
    assert all(r.authorization == f"Bearer {KEY}" for r in server.received)
    written = all_bytes(tmp_path / "http") + all_bytes(tmp_path / "h.db")
    assert KEY.encode() not in written
    assert KEY_ENV.encode() in all_bytes(tmp_path / "http" / "manifest.json")


def test_record_then_replay_without_the_server(make_scenario, tmp_path, server, server_key):
    path = make_scenario(http_llm(server.url))
    run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    sent = len(server.received)
    server.stop()
    report = verify_replay(tmp_path / "run", out_dir=tmp_path / "again")
    assert report.identical and report.result.accounting.model_calls == 0
    assert sent > 0


def test_the_named_key_variable_is_masked_whatever_its_name():
    from simworld.support.redact import MASK, Redactor

    env = {KEY_ENV: KEY}
    # not a variable the provider reads by itself
    assert Redactor.for_providers(["openai"], env).text(f"key {KEY}") == f"key {KEY}"
    named = Redactor.for_providers(["openai"], env, names=[KEY_ENV])
    assert named.text(f"key {KEY}") == f"key {MASK}"


# --- several servers -----------------------------------------------------------------------


def deployments_llm(*urls: str, **extra: object) -> dict[str, object]:
    """Scenario changes that spread calls over servers at ``urls``."""
    return {
        "llm.model": MODEL,
        "llm.api_key_env": KEY_ENV,
        "llm.deployments": [{"api_base": url} for url in urls],
        **extra,
    }


def test_two_servers_share_the_calls_and_outputs_are_byte_identical_to_one(
    make_scenario, tmp_path, servers, server_key
):
    one = servers()
    single = run_scenario(
        make_scenario(http_llm(one.url)), out_dir=tmp_path / "one", cache_path=tmp_path / "1.db"
    )
    a, b = servers(), servers()
    spread = run_scenario(
        make_scenario(deployments_llm(a.url, b.url)),
        out_dir=tmp_path / "two",
        cache_path=tmp_path / "2.db",
    )
    assert single.status == spread.status == "completed"
    assert a.received and b.received
    assert len(a.received) + len(b.received) == len(one.received)
    for name in SAME:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert KEY.encode() not in all_bytes(tmp_path / "two") + all_bytes(tmp_path / "2.db")


@pytest.mark.parametrize("strategy", ["balanced", "simple-shuffle", "least-busy"])
def test_a_dead_server_is_routed_around_without_changing_anything(
    make_scenario, tmp_path, servers, server_key, strategy
):
    one = servers()
    run_scenario(
        make_scenario(http_llm(one.url)), out_dir=tmp_path / "one", cache_path=tmp_path / "1.db"
    )
    live = servers()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    result = run_scenario(
        make_scenario(deployments_llm(dead, live.url, **{"llm.routing.strategy": strategy})),
        out_dir=tmp_path / "two",
        cache_path=tmp_path / "2.db",
    )
    assert result.status == "completed" and result.accounting.failures == 0
    assert len(live.received) == len(one.received)  # every call answered, each once
    for name in SAME:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_a_server_dying_mid_run_is_routed_around(servers, server_key):
    import asyncio

    a, b = servers(), servers()
    config = LLMConfig(
        model=MODEL,
        api_key_env=KEY_ENV,
        deployments=[{"api_base": a.url}, {"api_base": b.url}],
        cache="off",
        backoff_base_s=0.0,
    )
    gw = gateway(config)

    async def calls(first: int) -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(gw.call(request(config, i)) for i in range(first, first + 8)))

    async def scenario() -> tuple[list, list]:  # type: ignore[type-arg]
        before = await calls(0)
        a.stop()
        return before, await calls(8)

    before, after = asyncio.run(scenario())
    assert all(o.ok and o.attempts == 1 and not o.errors for o in before + after)
    served_by_a = len(a.received)
    assert served_by_a > 0 and len(b.received) >= 8  # b took every call after a died


def test_fallback_deployments_serve_only_when_the_primaries_fail(servers, server_key):
    primary, backup = servers(), servers()
    config = LLMConfig(
        model=MODEL,
        api_key_env=KEY_ENV,
        deployments=[{"api_base": primary.url}, {"api_base": backup.url, "fallback": True}],
        cache="off",
        backoff_base_s=0.0,
    )
    gw = gateway(config)
    assert call(gw, request(config, 0)).ok and len(backup.received) == 0
    primary.inject("server_error")
    outcome = call(gw, request(config, 1))
    assert outcome.ok and outcome.attempts == 1 and len(backup.received) == 1


def test_per_deployment_concurrency_is_kept(servers, server_key):
    import asyncio

    a, b = servers(latency_ms=50), servers(latency_ms=50)
    config = LLMConfig(
        model=MODEL,
        deployments=[{"api_base": a.url, "concurrency": 2}, {"api_base": b.url, "concurrency": 2}],
        concurrency=16,
        cache="off",
    )
    gw = gateway(config)

    async def burst() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(gw.call(request(config, i)) for i in range(16)))

    assert all(o.ok for o in asyncio.run(burst()))
    assert a.max_in_flight <= 2 and b.max_in_flight <= 2
    assert len(a.received) + len(b.received) == 16


def test_balanced_routing_splits_a_burst_evenly(servers, server_key):
    import asyncio

    # answers slow enough that the whole burst is in flight before the first returns, even on
    # a busy machine (a call that returns early frees its server and shifts the split by one)
    a, b = servers(latency_ms=1000), servers(latency_ms=1000)
    config = LLMConfig(
        model=MODEL, deployments=[{"api_base": a.url}, {"api_base": b.url}], cache="off"
    )
    gw = gateway(config)

    async def burst() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(gw.call(request(config, i)) for i in range(32)))

    assert all(o.ok for o in asyncio.run(burst()))
    assert len(a.received) + len(b.received) == 32
    # near-even: litellm's own stateful strategies sent whole bursts to one server
    assert abs(len(a.received) - len(b.received)) <= 2


def test_deployment_rpm_is_kept_and_the_excess_is_a_rate_limit(servers, server_key):
    import asyncio

    from simworld.llm.gateway import retry_after_s as wait_of
    from simworld.llm.router import no_deployment

    a, b = servers(), servers()
    config = LLMConfig(
        model=MODEL,
        deployments=[{"api_base": a.url, "rpm": 2}, {"api_base": b.url, "rpm": 2}],
        cache="off",
        max_retries=0,
    )
    gw = gateway(config)

    async def one_by_one() -> list:  # type: ignore[type-arg]
        return [await gw.call(request(config, i)) for i in range(6)]

    if time.time() % 60 > 50:  # litellm counts usage per clock minute: start in a fresh one
        time.sleep(60.5 - time.time() % 60)
    outcomes = asyncio.run(one_by_one())
    assert [o.ok for o in outcomes] == [True] * 4 + [False] * 2
    assert len(a.received) == len(b.received) == 2
    assert outcomes[-1].errors[0]["kind"] == "rate_limit"
    from litellm.types.router import RouterRateLimitErrorBasic

    assert 0 < wait_of(no_deployment(RouterRateLimitErrorBasic("m"), MODEL)) <= 60


@pytest.mark.slow
def test_calls_through_llm_worker_processes_match_and_honour_retry_after(server, server_key):
    import asyncio

    from simworld.llm import workers as llm_workers

    llm_workers.close_pools()  # a worker started now inherits the key variable
    try:
        config = http_config(server.url)
        requests = [request(config, i) for i in range(4)]

        async def one_by_one(gw: Gateway) -> list:  # type: ignore[type-arg]
            return [await gw.call(r) for r in requests]

        outcomes = {}
        for name, model in (
            ("workers", LiteLLMModel(workers=1)),
            ("here", LiteLLMModel(workers=0)),
        ):
            server.received.clear()
            server.inject("rate_limit", retry_after_s=0.5)
            outcomes[name] = asyncio.run(one_by_one(Gateway(model, config=config, cache=None)))
            first, second = server.received[:2]
            assert second.at - first.at >= 0.45, name
        assert llm_workers.shared_pool(1).calls > 0  # the calls really went to the worker
        for there, here in zip(outcomes["workers"], outcomes["here"], strict=True):
            assert (there.text, there.attempts, there.errors) == (
                here.text,
                here.attempts,
                here.errors,
            )
        assert outcomes["here"][0].errors[0]["kind"] == "rate_limit"
    finally:
        llm_workers.close_pools()


def test_server_command_prints_its_url_serves_and_stops_on_sigterm():
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "simworld.llm.fake_server", "--latency-ms", "10", "--capacity", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        with urllib.request.urlopen(f"{url}/models", timeout=10) as resp:
            assert json.load(resp)["data"][0]["id"] == "fake"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_retry_after_survives_the_trip_from_a_worker_process():
    import pickle

    import litellm
    from litellm.types.router import RouterRateLimitError

    from simworld.llm.litellm_backend import RemoteModelError
    from simworld.llm.router import no_deployment
    from simworld.llm.worker import remote_error

    cooling = RouterRateLimitError("m", 12.0, False, [])
    sent = remote_error(no_deployment(cooling, MODEL))
    back = pickle.loads(pickle.dumps(sent))
    assert isinstance(back, RemoteModelError) and back.kind == "rate_limit" and back.transient
    assert retry_after_s(back) == 12.0
    plain = pickle.loads(pickle.dumps(remote_error(litellm.Timeout("t", "m", "p"))))
    assert retry_after_s(plain) is None


def test_a_missing_deployment_key_is_named_under_deployments(make_scenario, tmp_path, monkeypatch):
    monkeypatch.delenv("SIMWORLD_TEST_OTHER_KEY", raising=False)
    path = make_scenario(
        {
            "llm.model": MODEL,
            "llm.deployments": [
                {"api_base": "http://127.0.0.1:9/v1", "api_key_env": "SIMWORLD_TEST_OTHER_KEY"}
            ],
        }
    )
    with pytest.raises(ConfigError) as info:
        run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    assert info.value.field == "llm.deployments" and "SIMWORLD_TEST_OTHER_KEY" in str(info.value)
