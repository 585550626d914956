"""LLM worker processes: same answers, errors and records as in-process calls."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Iterator

import pytest
from pydantic import BaseModel
from test_run import DETERMINISTIC_FILES

from simworld.cli import main
from simworld.config.scenario import LLMConfig, PriceConfig
from simworld.errors import ConfigError
from simworld.llm import workers as llm_workers
from simworld.llm.gateway import Gateway
from simworld.llm.litellm_backend import CallIdentity, LiteLLMModel, LLMRequest, RemoteModelError
from simworld.llm.workers import WorkerPolicy, WorkerPool, _Worker, shared_pool
from simworld.runs.run import run_scenario

WORKERS = 1
USER = "Topic: Cities should ban cars.\n  1 = Disagree\n  2 = Neutral\n  3 = Agree\nYour view?"
SLOW_MODEL = "fake/default?latency_ms=5000"


class Answer(BaseModel):
    answer: int


def request(agent: str, *, model: str = "fake/default", schema: bool = False) -> LLMRequest:
    enum_schema = {
        "type": "object",
        "properties": {"answer": {"enum": [1, 2, 3]}},
        "required": ["answer"],
    }
    return LLMRequest(
        model=model,
        messages=(
            {"role": "system", "content": "- Cities should ban cars.: Agree"},
            {"role": "user", "content": USER},
        ),
        identity=CallIdentity(seed=5, agent=agent, step=1, purpose="probe:t" if schema else "post"),
        temperature=0.7,
        max_tokens=40,
        schema=enum_schema if schema else None,
        schema_name="Answer" if schema else None,
        logprobs=schema,
    )


def gateway(workers: int, model: str, **cfg: object) -> Gateway:
    config = LLMConfig(model=model, cache="off", concurrency=16, backoff_base_s=0.0, **cfg)
    price = PriceConfig(input_per_million=3.0, output_per_million=7.0)
    backend = LiteLLMModel(price=price, workers=workers)
    return Gateway(backend, config=config, cache=None, jitter=random.Random(0))


@pytest.fixture
def own_pool() -> Iterator[WorkerPool]:
    pool = WorkerPool(1)
    yield pool
    pool.close()


def test_worker_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(llm_workers.WORKERS_ENV, raising=False)
    auto = WorkerPolicy.resolve()
    assert 0 <= auto.workers <= llm_workers.MAX_AUTO_WORKERS and not auto.wait
    monkeypatch.setenv(llm_workers.WORKERS_ENV, "0")
    assert WorkerPolicy.resolve() == WorkerPolicy(0)
    monkeypatch.setenv(llm_workers.WORKERS_ENV, " 3 ")
    assert WorkerPolicy.resolve() == WorkerPolicy(3) and WorkerPolicy(3).due(1, 0.0)
    assert WorkerPolicy.resolve(2) == WorkerPolicy(2)
    assert not WorkerPolicy(0).due(10**6, 1.0)
    monkeypatch.setenv(llm_workers.WORKERS_ENV, "many")
    with pytest.raises(ConfigError, match=llm_workers.WORKERS_ENV):
        WorkerPolicy.resolve()


def test_a_bad_workers_variable_is_one_line_and_writes_nothing(
    make_scenario, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv(llm_workers.WORKERS_ENV, "-1")
    out = tmp_path / "run"
    assert main(["run", str(make_scenario({})), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"simworld: error: {llm_workers.WORKERS_ENV}: -1: expected 'auto' or a number"]
    assert not out.exists()


def test_auto_policy_waits_for_a_large_fast_run() -> None:
    policy = WorkerPolicy(1, after_calls=500, min_calls_per_s=200.0, wait=False)
    assert not policy.due(500, 0.1)  # too few calls yet
    assert policy.due(501, 1.0)  # 501 calls/s
    assert not policy.due(501, 10.0)  # 50 calls/s: latency-bound, litellm is no burden


@pytest.mark.parametrize("model", ["fake/default?failure_rate=0.4", "fake/default"])
def test_outcomes_identical_in_workers(model: str) -> None:
    """Answers, failures, retries, tokens, cost and option probabilities are the same."""

    async def calls(gw: Gateway) -> list[dict[str, object]]:
        reqs = [request(f"a{i}", model=model, schema=i % 2 == 0) for i in range(60)]
        outs = await asyncio.gather(*(gw.call(r, Answer if r.schema else None) for r in reqs))
        return [o.record() for o in outs]

    retries = {"max_retries": 1, "max_invalid_retries": 0}
    here = asyncio.run(calls(gateway(0, model, **retries)))
    there_gw = gateway(WORKERS, model, **retries)
    sent = shared_pool(WORKERS).calls
    there = asyncio.run(calls(there_gw))
    assert there == here
    assert shared_pool(WORKERS).calls - sent == there_gw.accounting.model_calls >= 60
    if "failure_rate" in model:
        assert any(r["errors"] for r in here) and any(r["status"] == "failed" for r in here)
    assert any(r["extra"].get("option_probs") for r in here)
    assert all(r["cost_usd"] > 0 for r in here if r["status"] == "ok")


def test_run_outputs_identical_with_workers(make_scenario, tmp_path, monkeypatch) -> None:
    path = make_scenario({"llm.cache": "off", "llm.model": "fake/default?failure_rate=0.2"})
    outs = []
    for workers in ("0", str(WORKERS)):
        monkeypatch.setenv(llm_workers.WORKERS_ENV, workers)
        out = tmp_path / f"run{workers}"
        run_scenario(path, out_dir=out)
        outs.append(out)
    for name in DETERMINISTIC_FILES:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_pool_serves_successive_event_loops() -> None:
    backend = LiteLLMModel(workers=WORKERS)
    first = asyncio.run(backend.complete(request("x"), attempt=0, timeout_s=10))
    second = asyncio.run(backend.complete(request("x"), attempt=0, timeout_s=10))
    assert first == second and first.text
    pool = shared_pool(WORKERS)
    assert all(not w.pending for w in pool._workers)
    assert pool.pids == [w.process.pid for w in pool._workers] and len(pool.pids) == WORKERS


class StartingWorker:
    """A worker as the pool sees it, without a process: it comes up when the test says.
    Waiting for it and waking its waiters are the real worker's own code."""

    wait_ready = _Worker.wait_ready
    _wake_ready_waiters = _Worker._wake_ready_waiters

    def __init__(self) -> None:
        self.ready = False
        self.alive = True
        self._ready_waiters: list[asyncio.Future[None]] = []

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def come_up(self, *, alive: bool = True) -> None:
        self.ready, self.alive = alive, alive
        self._wake_ready_waiters()


def test_pool_waits_for_one_worker_or_for_every_one() -> None:
    pool = WorkerPool(3)
    first, second, third = workers = [StartingWorker() for _ in range(3)]
    pool._workers = workers  # type: ignore[assignment]

    async def waits() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, first.come_up)
        loop.call_later(0.05, second.come_up)
        loop.call_later(0.1, lambda: third.come_up(alive=False))  # died starting
        assert await pool.wait_ready()
        assert first.ready and not second.ready
        assert await pool.wait_ready(every=True)
        assert second.ready and not third.alive  # a worker gone counts as done waiting

    asyncio.run(asyncio.wait_for(waits(), timeout=10))  # not the pool's own 120 s timeout


def test_timed_out_call_is_cancelled_in_the_worker() -> None:
    gw = gateway(WORKERS, SLOW_MODEL, timeout_s=0.3, max_retries=0)

    async def timed_out() -> None:
        out = await gw.call(request("slow", model=SLOW_MODEL))
        assert out.status == "failed" and out.errors[0]["kind"] == "timeout"
        assert all(not w.pending for w in shared_pool(WORKERS)._workers)

    asyncio.run(timed_out())


def test_worker_exit_fails_its_calls_as_transient(own_pool: WorkerPool) -> None:
    async def lost_call() -> None:
        assert await own_pool.wait_ready()
        call = asyncio.ensure_future(
            own_pool.complete(request("z", model=SLOW_MODEL), attempt=0, timeout_s=10)
        )
        await asyncio.sleep(0.2)
        own_pool._workers[0].process.kill()
        with pytest.raises(RemoteModelError) as caught:
            await call
        assert caught.value.kind == "connection" and caught.value.transient
        assert not own_pool.ready() and not own_pool.alive()

    asyncio.run(lost_call())


def test_ctrl_c_while_a_worker_starts_is_left_to_the_parent(
    own_pool: WorkerPool, stop_signals_deliverable: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C in a worker's first seconds, while it imports litellm and has not yet chosen
    to ignore Ctrl-C, neither kills it nor prints its traceback."""
    own_pool.start()
    os.kill(own_pool._workers[0].process.pid, signal.SIGINT)
    assert asyncio.run(own_pool.wait_ready())
    assert own_pool.alive()
    assert "Traceback" not in capfd.readouterr().err


def test_without_live_workers_calls_stay_in_process(
    own_pool: WorkerPool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    own_pool.start()
    own_pool._workers[0].process.kill()
    own_pool._workers[0].process.wait()
    monkeypatch.setitem(llm_workers._POOLS, 7, own_pool)
    backend = LiteLLMModel(workers=7)
    done = asyncio.run(backend.complete(request("w"), attempt=0, timeout_s=10))
    expected = asyncio.run(LiteLLMModel(workers=0).complete(request("w"), attempt=0, timeout_s=10))
    assert done == expected
    assert "no LLM worker process is running" in caplog.text


def test_a_second_ctrl_c_while_workers_close_at_exit_kills_them_quietly(monkeypatch):
    """The exit handler waits for the workers to leave; a Ctrl-C pressed again meanwhile
    printed a KeyboardInterrupt traceback after the command's own line."""
    from simworld.llm import workers as module

    killed: list[str] = []

    class Pool:
        def close(self):
            raise KeyboardInterrupt

        def kill(self):
            killed.append("pool")

    monkeypatch.setattr(module, "_POOLS", {2: Pool(), 3: Pool()})
    module.close_pools()  # no KeyboardInterrupt escapes
    assert killed == ["pool", "pool"] and module._POOLS == {}
