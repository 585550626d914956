"""Call- and token-saving options (issue 20): inline stances, prompt-prefix accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from simworld.config.trackers import TrackersConfig
from simworld.llm.prefix import PrefixMeter, common_prefix_len, prompt_text
from simworld.llm.types import CallIdentity, LLMRequest
from simworld.runs.run import run_scenario


def read_events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def purposes(events: list[dict]) -> list[str]:
    return [e["identity"]["purpose"] for e in events if e["type"] == "llm_call"]


def turn(e: dict) -> tuple[int, str, int]:
    return e["step"], e["agent"], e["turn"]


def test_stance_setting_accepts_inline_only_besides_booleans():
    assert TrackersConfig(stance="inline").stance == "inline"
    assert TrackersConfig().stance is True
    with pytest.raises(ValueError, match="stance"):
        TrackersConfig(stance="sometimes")


@pytest.mark.parametrize("mode", ["broadcast", "pairs"])
def test_inline_stance_saves_one_call_per_message_and_keeps_messages(make_scenario, tmp_path, mode):
    base = {"llm.cache": "off", "protocol.steps": 2, "protocol.mode": mode}
    run_scenario(make_scenario(base), out_dir=tmp_path / "sep")
    run_scenario(make_scenario(base | {"trackers.stance": "inline"}), out_dir=tmp_path / "inl")
    sep, inl = read_events(tmp_path / "sep"), read_events(tmp_path / "inl")
    messages = [e for e in inl if e["type"] == "message"]
    assert messages
    # the fake writes the same message whether or not it also reports its position
    assert messages == [e for e in sep if e["type"] == "message"]
    assert not any(p.startswith("stance:") for p in purposes(inl))
    assert len(purposes(inl)) == len(purposes(sep)) - len(messages)
    # every message has a stance, recorded from its own speech call
    stances = {turn(e): e for e in inl if e["type"] == "stance"}
    assert set(stances) == {turn(m) for m in messages}
    speech = {(c["identity"]["step"], c["identity"]["agent"], c["identity"]["index"]): c
              for c in inl if c["type"] == "llm_call"
              and not c["identity"]["purpose"].startswith("probe:")}  # fmt: skip
    for key, stance in stances.items():
        assert stance["call"] == speech[key]["key"]
        assert stance["status"] == "stated"
        assert json.loads(speech[key]["text"])["message"] == next(
            m["text"] for m in messages if turn(m) == key
        )
    # the fake's self-report is what an annotator reads off the same message
    separate = {turn(e): (e["status"], e["answer"]) for e in sep if e["type"] == "stance"}
    assert {k: (s["status"], s["answer"]) for k, s in stances.items()} == separate
    # so every measure built on stances comes out the same
    for frame in ("statements", "conformity"):
        name = f"trackers/{frame}.parquet"
        assert (tmp_path / "sep" / name).read_bytes() == (tmp_path / "inl" / name).read_bytes()


def _request(agent: str, system: str, user: str) -> LLMRequest:
    return LLMRequest(
        model="fake/default",
        messages=({"role": "system", "content": system}, {"role": "user", "content": user}),
        identity=CallIdentity(1, agent, 1, "post:t", 0),
        temperature=0.0,
        max_tokens=10,
    )


def test_prefix_meter_measures_against_the_same_agents_previous_prompt():
    meter = PrefixMeter()
    system = "S" * 400
    first = meter.measure(_request("a", system, "Topic: one\n" + "x" * 100))
    assert first.prefix_tokens == 0
    assert (
        first.prompt_tokens
        == len(prompt_text(_request("a", system, "Topic: one\n" + "x" * 100))) // 4
    )
    # another agent has its own chain
    assert meter.measure(_request("b", system, "Topic: two")).prefix_tokens == 0
    second = meter.measure(_request("a", system, "Topic: two\n" + "x" * 100))
    shared = len("system\n" + system + "\nuser\nTopic: ")
    assert second.prefix_tokens == shared // 4
    # an annotator's call about agent a (another system message) does not break a's chain
    assert meter.measure(_request("a", "annotate", "Topic: two")).prefix_tokens == 0
    third = meter.measure(_request("a", system, "Topic: two\n" + "x" * 100))
    assert third.prefix_tokens == third.prompt_tokens
    assert common_prefix_len("abc", "abd") == 2 and common_prefix_len("ab", "abc") == 2


def test_prefix_share_is_recorded_per_call_and_per_run_whatever_the_concurrency(
    make_scenario, tmp_path
):
    tables = []
    for conc in (1, 16):
        path = make_scenario({"llm.model": "fake/default?latency_ms=1&latency_jitter_ms=10",
                              "llm.concurrency": conc, "llm.cache": "off",
                              "protocol.steps": 2, "protocol.mode": "pairs"})  # fmt: skip
        result = run_scenario(path, out_dir=tmp_path / f"c{conc}")
        assert "prefix" in result.summary()
        manifest = json.loads((tmp_path / f"c{conc}" / "manifest.json").read_text())
        totals = manifest["totals"]
        assert 0 < totals["prefix_tokens_est"] < totals["prompt_tokens_est"]
        assert manifest["prefix_share"] == totals["prefix_tokens_est"] / totals["prompt_tokens_est"]
        calls = pd.read_parquet(tmp_path / f"c{conc}" / "llm_calls.parquet")
        assert calls.prefix_tokens.sum() == totals["prefix_tokens_est"]
        assert calls.prompt_tokens_est.sum() == totals["prompt_tokens_est"]
        assert (calls.prefix_tokens <= calls.prompt_tokens_est).all()
        tables.append(calls.set_index("call").prefix_tokens.sort_index())
    assert tables[0].equals(tables[1])
    # a run answered from the cache measures the same prefixes
    path = make_scenario({"protocol.steps": 2, "protocol.mode": "pairs"})
    cache = tmp_path / "cache.sqlite"
    run_scenario(path, out_dir=tmp_path / "rec", cache_path=cache)
    replay = run_scenario(
        path, out_dir=tmp_path / "rep", cache_path=cache, overrides={"llm.cache": "replay"}
    )
    assert replay.accounting.model_calls == 0
    rec, rep = (pd.read_parquet(tmp_path / d / "llm_calls.parquet") for d in ("rec", "rep"))
    assert rec.prefix_tokens.tolist() == rep.prefix_tokens.tolist()
    assert rec.prefix_tokens.sum() > 0
    # an agent's first call (a step-0 probe; they are sent in probe_order) has nothing to reuse
    assert (calls[calls.step == 0].groupby("agent").prefix_tokens.min() == 0).all()


def test_probe_batch_asks_every_topic_in_one_call_with_per_topic_counterbalancing(
    make_scenario, tmp_path
):
    base = {"llm.cache": "off", "protocol.steps": 2, "llm.temperature": 0.0}
    run_scenario(make_scenario(base), out_dir=tmp_path / "one")
    run_scenario(make_scenario(base | {"protocol.probe_batch": True}), out_dir=tmp_path / "bat")
    one, bat = read_events(tmp_path / "one"), read_events(tmp_path / "bat")
    probes_one = [e for e in one if e["type"] == "probe"]
    probes_bat = [e for e in bat if e["type"] == "probe"]
    key = lambda e: (e["step"], e["agent"], e["topic"])  # noqa: E731
    assert sorted(map(key, probes_bat)) == sorted(map(key, probes_one))
    # one call per agent and probe step, each topic's row naming it
    calls = {c["key"]: c for c in bat if c["type"] == "llm_call"}
    batch_calls = [c for c in calls.values() if c["identity"]["purpose"].startswith("probes:")]
    assert len(batch_calls) == len(probes_bat) // 2
    assert not any(c["identity"]["purpose"].startswith("probe:") for c in calls.values())
    assert all(calls[p["call"]]["identity"]["purpose"] == "probes:remote_work+city_priority"
               for p in probes_bat)  # fmt: skip
    # counterbalancing stays per topic: the same orders as one call per topic, answers mapped back
    orders_one = {key(e): e["order"] for e in probes_one}
    assert {key(e): e["order"] for e in probes_bat} == orders_one
    assert len({e["order"] for e in probes_bat if e["topic"] == "city_priority"}) > 1
    for p in probes_bat:
        field = "q1" if p["topic"] == "remote_work" else "q2"
        shown = json.loads(calls[p["call"]]["text"])[field]
        assert p["shown_answer"] == str(shown)
        assert p["answer"] == p["order"].split(",")[p["position"]]
    # at temperature 0 the fake answers each item as it answers a single probe on the topic
    # (its only draws left are tie-breaks between choice options, seeded by the call)
    assert {key(e): e["answer"] for e in probes_bat} == {key(e): e["answer"] for e in probes_one}


def test_dry_run_estimate_counts_the_saved_calls(make_scenario):
    from simworld.config.scenario import load_scenario
    from simworld.sweeps.plan import estimate_run

    path = make_scenario({"protocol.steps": 2})
    n, steps, topics = 8, 2, 2
    default = estimate_run(load_scenario(path))
    saving = estimate_run(
        load_scenario(path, {"trackers.stance": "inline", "protocol.probe_batch": True})
    )
    assert default.calls == steps * n * 2 + (steps + 1) * n * topics
    assert saving.calls == steps * n + (steps + 1) * n


def test_progress_plan_counts_the_saved_calls(make_scenario, tmp_path):
    from test_progress import _run_watching, step_ends

    options = {"trackers.stance": "inline", "protocol.probe_batch": True}
    seen, run_dir = _run_watching(make_scenario, tmp_path, {**options, "protocol.steps": 2})
    calls = step_ends(run_dir)
    for step in (1, 2):
        assert {p for s, p, done in seen if s == step and done > 0} == {calls[step]}
