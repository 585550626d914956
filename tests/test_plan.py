"""The execution path chosen from the run's plan, before the first step, and the probe order."""

from __future__ import annotations

import pytest
from conftest import build_model

from simworld.config.scenario import load_scenario
from simworld.engine.model import planned_calls_per_step
from simworld.llm import litellm_backend
from simworld.llm import workers as llm_workers
from simworld.llm.gateway import Gateway
from simworld.llm.workers import WorkerPolicy, shared_pool

AGENTS = 8  # conftest's base scenario: 2 topics, broadcast, stances and probes at every step


def test_planned_calls_per_step_counts_speech_stances_and_probes(make_scenario) -> None:
    plan = planned_calls_per_step(load_scenario(make_scenario()))
    assert plan == AGENTS + AGENTS + AGENTS * 2  # posts, stance calls, two probes each
    inline = load_scenario(
        make_scenario({"trackers.stance": "inline", "protocol.probe_batch": True})
    )
    assert planned_calls_per_step(inline) == AGENTS + AGENTS
    pairs = load_scenario(make_scenario({"protocol.mode": "pairs", "trackers.stance": False}))
    assert planned_calls_per_step(pairs) == AGENTS + AGENTS * 2


def test_policy_plans_workers_from_the_calls_per_step() -> None:
    auto = WorkerPolicy(2, 500, 200.0, wait=False, plan_calls=100)
    assert auto.planned(100) and not auto.planned(99)
    assert WorkerPolicy(1).planned(1)  # an explicit count: from the plan, whatever its size
    assert not WorkerPolicy(0).planned(10**6)


@pytest.mark.parametrize("planned", [True, False])
def test_the_plan_decides_the_path_before_the_first_step(
    make_scenario, monkeypatch: pytest.MonkeyPatch, planned: bool
) -> None:
    """Over the threshold every call of step 1 goes to the workers, started while the run
    was built; under it every call stays in this process, with litellm warmed up first."""
    path = make_scenario({"protocol.steps": 1})
    calls = planned_calls_per_step(load_scenario(path))
    monkeypatch.delenv(llm_workers.WORKERS_ENV, raising=False)
    monkeypatch.setattr(llm_workers, "MAX_AUTO_WORKERS", 1)
    monkeypatch.setattr(llm_workers, "PLAN_MIN_CALLS_PER_STEP", calls if planned else calls + 1)
    monkeypatch.setattr(litellm_backend, "_WARMED", [])
    warmed: list[bool] = []

    def warm_up() -> None:
        warmed.append(True)

    monkeypatch.setattr(litellm_backend, "warm_up_in_process", warm_up)
    pool = shared_pool(1)
    waited: list[bool] = []
    wait_ready = pool.wait_ready

    async def wait_for_every(*, every: bool = False) -> bool:
        waited.append(every)
        return await wait_ready(every=every)

    monkeypatch.setattr(pool, "wait_ready", wait_for_every)
    sent_before = pool.calls
    model = build_model(path)
    try:
        assert pool.started or not planned
        model.prepare()
        assert warmed == ([] if planned else [True])
        assert waited == ([True] if planned else [])  # step 1 has every worker
        assert all(w.ready for w in pool._workers) or not planned
        model.step()
        gateway: Gateway = model.gateway
        in_workers = pool.calls - sent_before
        assert gateway.accounting.model_calls > 0
        assert in_workers == (gateway.accounting.model_calls if planned else 0)
    finally:
        model.close()


def test_probes_are_sent_discussed_topic_first_and_recorded_in_topic_order(
    make_scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[int, str, str]] = []
    call = Gateway.call

    async def spy(self: Gateway, request, output_type=None):  # type: ignore[no-untyped-def]
        ident = request.identity
        if ident.purpose.startswith("probe:"):
            sent.append((ident.step, ident.agent, ident.purpose.split(":")[1]))
        return await call(self, request, output_type)

    monkeypatch.setattr(Gateway, "call", spy)
    model = build_model(make_scenario({"protocol.steps": 2}))
    try:
        model.step()
        model.step()
        first, second = (t.id for t in model.scenario.topics)
        agent = model.population[0].key
        order = {s: [t for st, a, t in sent if st == s and a == agent] for s in (0, 1, 2)}
        # step 0: the topic of step 1 last; step 1: its own topic first, that of step 2 last
        assert order == {0: [second, first], 1: [first, second], 2: [second, first]}
        rows = [r["topic"] for r in model.opinions if r["agent"] == agent and r["step"] == 2]
        assert rows == [first, second]
    finally:
        model.close()


def test_readme_states_the_plan_threshold() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    text = " ".join(readme.split())
    assert f"when a step makes {llm_workers.PLAN_MIN_CALLS_PER_STEP} model calls or more" in text
    assert f"made {llm_workers.AUTO_START_CALLS} calls at" in text


def test_no_in_process_warm_up_under_a_litellm_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered callback would see the warm-up calls: then there is none."""
    import litellm

    warmed: list[str] = []
    completion = litellm.completion

    def counting(**kwargs: object) -> object:
        warmed.append(str(kwargs["model"]))
        return completion(**kwargs)

    monkeypatch.setattr(litellm, "completion", counting)
    monkeypatch.setattr(litellm_backend, "_WARMED", [])
    monkeypatch.setattr(litellm, "success_callback", ["a_logger"])
    litellm_backend.warm_up_in_process()
    assert warmed == []
    monkeypatch.setattr(litellm, "success_callback", [])
    litellm_backend.warm_up_in_process()
    litellm_backend.warm_up_in_process()
    assert warmed == [litellm_backend.WARM_UP_MODEL] * litellm_backend.WARM_UP_CALLS
