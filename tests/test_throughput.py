"""Call- and token-saving options (issue 20): inline stances, prompt-prefix accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import interrupted_run

from simworld.config.trackers import TrackersConfig
from simworld.llm.prefix import (
    CACHE_BLOCK_CHARS,
    CACHE_BLOCKS,
    BlockCache,
    PrefixMeter,
    block_digests,
    common_prefix_len,
    prompt_text,
)
from simworld.llm.types import CallIdentity, LLMRequest
from simworld.runs.run import resume_run, run_scenario


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


def test_cacheable_tokens_count_whole_blocks_another_agent_sent_before():
    assert CACHE_BLOCK_CHARS == 64 and CACHE_BLOCKS == 1_048_576
    meter = PrefixMeter()
    head = "system\n"  # prompt_text starts every prompt with the first message's role
    first = meter.measure(_request("a", "P" * 57 + "A" * 200, "Topic: one"))
    assert first.cacheable_tokens == 0  # nothing before it
    # another agent's prompt sharing exactly one block (64 characters) with a's
    same_block = _request("b", "P" * 57 + "B" * 200, "Topic: one")
    assert common_prefix_len(prompt_text(same_block), head + "P" * 57 + "A") == 64
    second = meter.measure(same_block)
    assert second.cacheable_tokens == 16 and second.prefix_tokens == 0
    # one character short of a block: nothing
    short = meter.measure(_request("c", "P" * 56 + "C" * 200, "Topic: one"))
    assert short.cacheable_tokens == 0
    # a's own next prompt: every whole block before the first difference
    again = meter.measure(_request("a", "P" * 57 + "A" * 200, "Topic: two"))
    shared = len(head + "P" * 57 + "A" * 200 + "\nuser\nTopic: ")
    assert again.prefix_tokens == shared // 4
    assert again.cacheable_tokens == shared // 64 * 16
    # a prompt repeated whole: its partial last block is never cacheable
    repeat = meter.measure(_request("d", "P" * 57 + "A" * 200, "Topic: two"))
    text = prompt_text(_request("d", "P" * 57 + "A" * 200, "Topic: two"))
    assert len(text) % 64 and repeat.cacheable_tokens == len(text) // 64 * 16
    assert repeat.cacheable_tokens < repeat.prompt_tokens


def test_block_digests_are_chained_over_every_earlier_block():
    a, b = block_digests("x" * 64 + "y" * 64 + "z"), block_digests("x" * 64 + "w" * 64)
    assert len(a) == 2 and all(len(d) == 16 for d in a)  # the partial block has none
    assert a[0] == b[0] and a[1] != b[1]
    c = block_digests("v" * 64 + "y" * 64)  # same second block after another first one
    assert c[0] != a[0] and c[1] != a[1]
    assert block_digests("x" * 63) == []
    assert block_digests("x" * 64, model="m1") != block_digests("x" * 64, model="m2")
    # blocks are characters, not bytes: the same digests for text of 2-byte characters
    wide = block_digests("é" * 64 + "y" * 64 + "z")
    assert len(wide) == 2 and wide[0] != a[0] and wide[1] != a[1]
    assert block_digests("é" * 64 + "y" * 64 + "é")[:2] == wide
    assert block_digests("x" * 64 + "y" * 64 + "é") == a


def test_block_cache_evicts_the_least_recently_used_blocks_tail_first():
    cache = BlockCache(capacity=4)
    a, b, c = ("a" * 128, "b" * 128, "c" * 128)  # two blocks each
    assert cache.measure(a) == 0 and cache.measure(b) == 0 and len(cache) == 4
    assert cache.measure(a) == 128  # a becomes the most recently used
    assert cache.measure(c) == 0 and len(cache) == 4  # evicts b, not a
    assert cache.measure(a) == 128 and cache.measure(b) == 0
    # a full cache drops a prompt's last block before its first
    small = BlockCache(capacity=3)
    small.measure("p" * 192)
    small.measure("q" * 64)
    assert small.measure("p" * 192) == 128
    # every digest past the cap goes, even within one prompt: its tail
    tiny = BlockCache(capacity=2)
    assert tiny.measure("r" * 64 * 5) == 0 and len(tiny) == 2
    assert tiny.measure("r" * 64 * 5) == 128
    with pytest.raises(ValueError):
        BlockCache(capacity=0)


def test_the_same_calls_in_the_same_order_give_the_same_counts():
    calls = [(agent, f"persona {agent} " * 9, f"Topic: {t}\n" + "heard " * (8 * step))
             for step in range(3) for t in ("one", "two") for agent in "abc"]  # fmt: skip
    meters = [PrefixMeter(cache_blocks=6), PrefixMeter(cache_blocks=6)]
    runs = [[meter.measure(_request(*c)) for c in calls] for meter in meters]
    assert runs[0] == runs[1]
    assert 0 < sum(c.cacheable_tokens for c in runs[0]) < sum(c.prompt_tokens for c in runs[0])
    # the cap matters: an unbounded cache reuses more of the same calls
    meter = PrefixMeter()
    unbounded = [meter.measure(_request(*c)) for c in calls]
    assert sum(c.cacheable_tokens for c in unbounded) > sum(c.cacheable_tokens for c in runs[0])


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
        assert 0 < totals["cacheable_tokens_est"] < totals["prompt_tokens_est"]
        assert (
            manifest["cacheable_share"]
            == totals["cacheable_tokens_est"] / totals["prompt_tokens_est"]
        )
        assert "cacheable" in result.summary()
        calls = pd.read_parquet(tmp_path / f"c{conc}" / "llm_calls.parquet")
        assert calls.prefix_tokens.sum() == totals["prefix_tokens_est"]
        assert calls.cacheable_tokens.sum() == totals["cacheable_tokens_est"]
        assert calls.prompt_tokens_est.sum() == totals["prompt_tokens_est"]
        assert (calls.prefix_tokens <= calls.prompt_tokens_est).all()
        assert (calls.cacheable_tokens <= calls.prompt_tokens_est).all()
        assert (calls.cacheable_tokens % 16 == 0).all()  # whole 64-character blocks
        # the agent's previous prompt is earlier in the run: its whole blocks are cached
        assert (calls.cacheable_tokens >= calls.prefix_tokens - 15).all()
        tables.append(calls.set_index("call")[["prefix_tokens", "cacheable_tokens"]].sort_index())
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
    assert rec.cacheable_tokens.tolist() == rep.cacheable_tokens.tolist()
    assert rec.prefix_tokens.sum() > 0
    # an agent's first call (a step-0 probe; they are sent in probe_order) has nothing to reuse
    assert (calls[calls.step == 0].groupby("agent").prefix_tokens.min() == 0).all()


def test_a_resumed_run_measures_what_an_uninterrupted_run_does(make_scenario, tmp_path):
    path = make_scenario({"protocol.steps": 3, "protocol.mode": "pairs"})
    run_scenario(path, out_dir=tmp_path / "ref", cache_path=tmp_path / "ref.db")
    resume_run(interrupted_run(path, tmp_path / "run", at_step=2, cache_path=tmp_path / "c.db"))
    cols = ["call", "prompt_tokens_est", "prefix_tokens", "cacheable_tokens"]
    ref, res = (pd.read_parquet(tmp_path / d / "llm_calls.parquet")[cols] for d in ("ref", "run"))
    assert res.cacheable_tokens.sum() > 0
    assert ref.equals(res)
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("ref", "run")]
    assert manifests[0]["cacheable_share"] == manifests[1]["cacheable_share"]


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
