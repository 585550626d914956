"""The memory stream: scoring, recency, importance, forgetting, prompts and replay."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from memory_helpers import StubEmbedder, UniqueTextModel, outcome, stream

from simworld.config.memory import ForgettingConfig, MemoryConfig, RetrievalConfig
from simworld.config.scenario import load_scenario
from simworld.engine.model import SocialSimulation
from simworld.errors import ConfigError
from simworld.memory.base import MemoryItem, RecentMemory
from simworld.memory.forgetting import forget_mask, forgetting_seed, retention
from simworld.memory.importance import heuristic_importance, rate_importance
from simworld.memory.retrieval import ScoreWeights, minmax, recency, retrieval_scores, top_k
from simworld.memory.stream import MemoryStream
from simworld.memory.system import MemorySystem
from simworld.runs.run import run_scenario

CHROMA = {
    "memory": {
        "store": "chroma",
        "importance": {"mode": "llm"},
        "forgetting": {"mode": "stochastic", "time_scale_hours": 20.0},
        "reflection": {"threshold": 25.0},
    }
}


def item(step: int, text: str = "something", kind: str = "observation") -> MemoryItem:
    return MemoryItem(step=step, kind=kind, speaker="Bo", topic="t", text=text)


def read_events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


# -- scoring ---------------------------------------------------------------------------------
def test_minmax_edge_cases():
    np.testing.assert_allclose(minmax(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    assert minmax(np.array([7.0, 7.0, 7.0])).tolist() == [0.0, 0.0, 0.0]
    assert minmax(np.array([3.0])).tolist() == [0.0]
    assert minmax(np.array([])).size == 0


def test_recency_decays_with_hours_since_access():
    r = recency(np.array([0.0, 1.0, 10.0, 100.0]), 0.995)
    assert r[0] == 1.0 and np.all(np.diff(r) < 0)
    assert r[1] == pytest.approx(0.995)


def test_all_equal_components_leave_the_others_in_charge():
    scores = retrieval_scores(
        hours_since_access=np.array([5.0, 5.0, 5.0]),
        importance=np.array([3.0, 3.0, 3.0]),
        relevance=np.array([0.1, 0.9, 0.5]),
        weights=ScoreWeights(),
        decay=0.995,
    )
    np.testing.assert_allclose(scores, [0.0, 1.0, 0.5])


def test_top_k_breaks_ties_by_id():
    ids = np.array([4, 1, 3, 2, 0])
    scores = np.array([1.0, 1.0, 0.5, 1.0, 0.2])
    assert top_k(scores, ids, 2).tolist() == [1, 2]
    assert top_k(scores, ids, 10).tolist() == [1, 2, 4, 3, 0]
    assert top_k(scores, ids, 0).tolist() == []


def test_most_recent_memories_score_highest():
    s = stream()  # the stub embedder gives every text the same vector: relevance is equal
    for step in range(1, 7):
        s.add(item(step, f"event {step}"), importance=5.0)
    found = s.retrieve("anything", k=6, step=6, touch=False)
    assert [m.id for m in found] == [5, 4, 3, 2, 1, 0]
    assert found[0].score > found[-1].score


def test_recency_counts_from_last_access_not_position():
    s = stream()
    s.add(item(1, "old"), importance=5.0)
    s.add(item(2, "newer"), importance=5.0)
    s.retrieve("q", k=2, step=3, touch=True)  # both accessed at step 3: now equally recent
    s.add(item(3, "newest"), importance=5.0)
    ranked = [m.id for m in s.retrieve("q", k=3, step=5, touch=False)]
    assert ranked == [0, 1, 2]  # all accessed at step 3: equal, ties to the lower id


def test_relevance_and_importance_matter():
    s = stream(words=["nuclear"])
    s.add(item(1, "nuclear power is safe"), importance=2.0)
    s.add(item(1, "lunch was nice"), importance=2.0)
    s.add(item(1, "my sister got married"), importance=9.0)
    cfg_rel = RetrievalConfig(importance_weight=0.0)
    s.config = MemoryConfig(store="chroma", retrieval=cfg_rel)
    assert s.retrieve("nuclear energy", k=1, step=1, touch=False)[0].id == 0
    s.config = MemoryConfig(store="chroma", retrieval=RetrievalConfig(relevance_weight=0.0))
    assert s.retrieve("nuclear energy", k=1, step=1, touch=False)[0].id == 2


def test_touch_counts_as_a_recall_but_probe_retrieval_does_not():
    s = stream()
    s.add(item(1), importance=5.0)
    s.retrieve("q", k=1, step=3, touch=False)
    assert s.strength(0) == 1 and s.last_recall_hours(0) == 24.0
    s.retrieve("q", k=1, step=3, touch=True)
    assert s.strength(0) == 2 and s.last_recall_hours(0) == 72.0


# -- importance ------------------------------------------------------------------------------
def test_heuristic_importance_is_deterministic_and_bounded():
    assert heuristic_importance("fine weather", "observation") == 3
    assert heuristic_importance("fine weather", "own_message") == 4
    assert heuristic_importance("Ana, listen to me!", "observation", owner="Ana Silva") == 6
    long = " ".join(["word"] * 60) + " never"
    assert 1 <= heuristic_importance(long, "reflection") <= 10


def test_failed_rating_falls_back_to_flagged_heuristic():
    s = stream(MemoryConfig(store="chroma", importance={"mode": "llm"}))
    s.add(item(1, "a calm remark"))
    s.add(item(1, "URGENT: the plant closes!"))
    assert s.pending_ratings() == [0, 1]

    async def fail(user, purpose, index, schema):
        return outcome(None, purpose=purpose, index=index)

    calls = asyncio.run(rate_importance(s, fail))
    assert len(calls) == 1 and not calls[0].ok
    rows = s.rows()
    assert [r["importance_source"] for r in rows] == ["heuristic_fallback"] * 2
    assert [r["importance"] for r in rows] == [3.0, 4.0]  # the heuristic values, flagged

    s.add(item(2, "another"))

    async def rate(user, purpose, index, schema):
        assert "[m2] Bo: another" in user and set(schema.model_fields) == {"m2"}
        return outcome({"m2": 9}, purpose=purpose, index=index)

    asyncio.run(rate_importance(s, rate))
    assert s.rows()[2]["importance"] == 9.0 and s.rows()[2]["importance_source"] == "llm"


# -- forgetting ------------------------------------------------------------------------------
def test_retention_formula_and_strength():
    r = retention(np.array([0.0, 10.0, 10.0]), np.array([1, 1, 3]), 10.0)
    np.testing.assert_allclose(r, [1.0, math.exp(-1.0), math.exp(-1.0 / 3.0)])
    assert r[2] > r[1]  # stronger memories fade more slowly (not the released code's bug)


def test_recalled_memory_outlives_unrecalled_one_of_equal_age():
    cfg = MemoryConfig(store="chroma", forgetting=ForgettingConfig(time_scale_hours=24.0))
    s = stream(cfg, words=["kept"])
    s.add(item(1, "kept: the vote is on friday"), importance=5.0)
    s.add(item(1, "passing remark"), importance=5.0)
    assert s.forget(2) == []
    [hit] = s.retrieve("kept", k=1, step=3, touch=True)
    assert hit.id == 0
    forgotten = {}
    for step in range(3, 12):
        for event in s.forget(step):
            forgotten[event["memory"]] = event
    assert forgotten[1]["step"] < forgotten.get(0, {"step": 99})["step"]
    event = forgotten[1]
    assert event["type"] == "memory_forgotten" and event["agent"] == "ana"
    assert event["retention"] < 0.05 and event["strength"] == 1
    assert not s.is_active(1)
    # gone from retrieval, stays auditable in the stream
    assert all(m.id != 1 for m in s.retrieve("q", k=5, step=12, touch=False))
    assert s.rows()[1]["forgotten"] and s.rows()[1]["text"] == "passing remark"


def test_stochastic_forgetting_is_seeded_per_agent_and_step():
    ret = np.full(200, 0.5)
    a = forget_mask(ret, mode="stochastic", threshold=0.1, seed=forgetting_seed(1, "ana", 3))
    b = forget_mask(ret, mode="stochastic", threshold=0.1, seed=forgetting_seed(1, "ana", 3))
    c = forget_mask(ret, mode="stochastic", threshold=0.1, seed=forgetting_seed(1, "ana", 4))
    d = forget_mask(ret, mode="stochastic", threshold=0.1, seed=forgetting_seed(1, "bo", 3))
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist() and a.tolist() != d.tolist()
    assert 60 < a.sum() < 140
    assert not forget_mask(np.ones(5), mode="stochastic", threshold=0.1, seed=3).any()
    assert not forget_mask(ret, mode="off", threshold=0.9, seed=0).any()


# -- configuration ---------------------------------------------------------------------------
def test_window_memory_stays_the_default(make_scenario):
    scenario = load_scenario(make_scenario())
    assert scenario.memory.store == "window"
    system = MemorySystem(scenario.memory, seed=1)
    assert isinstance(system.create("a", "A"), RecentMemory)


def test_window_memory_recalls_the_last_k_on_its_topic_oldest_first():
    memory = RecentMemory()
    for step in range(6):
        for topic in ("t", "u"):
            memory.add(MemoryItem(step, "observation", "Bo", topic, f"{topic}{step}"))
    assert [m.text for m in memory.recall("t", 3)] == ["t3", "t4", "t5"]
    assert [m.text for m in memory.recall("u", 10)] == [f"u{s}" for s in range(6)]
    assert memory.recall("t", 0) == [] and memory.recall("v", 3) == []
    memory.recall("t", 2).clear()  # a recall is a copy: the memory keeps its items
    assert len(memory.recall("t", 10)) == 6


def test_unknown_memory_field_is_rejected_before_anything_is_written(make_scenario, tmp_path):
    path = make_scenario({"memory": {"store": "chroma", "retreival": {"k": 3}}})
    with pytest.raises(ConfigError, match="retreival"):
        run_scenario(path, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- end to end ------------------------------------------------------------------------------
def test_memory_state_identical_under_replay(make_scenario, tmp_path):
    path = make_scenario({**CHROMA, "protocol.mode": "pairs", "protocol.steps": 5})
    cache = tmp_path / "cache.sqlite"
    rec = run_scenario(path, out_dir=tmp_path / "rec", cache_path=cache)
    rep = run_scenario(
        path, out_dir=tmp_path / "rep", cache_path=cache, overrides={"llm.cache": "replay"}
    )
    assert rec.status == rep.status == "completed"
    assert rep.accounting.model_calls == 0
    events = read_events(tmp_path / "rec")
    kinds = {e["type"] for e in events}
    assert {"memory_forgotten", "reflection"} <= kinds
    purposes = {e["identity"]["purpose"] for e in events if e["type"] == "llm_call"}
    assert {"memory_importance", "reflect_questions", "reflect_insights"} <= purposes
    for name in ("transcript.jsonl", "opinions.parquet", "memory/memories.jsonl"):
        assert (tmp_path / "rec" / name).read_bytes() == (tmp_path / "rep" / name).read_bytes()
    rows = [
        json.loads(x) for x in (tmp_path / "rec/memory/memories.jsonl").read_text().split("\n") if x
    ]
    forgotten = {(e["agent"], e["memory"]) for e in events if e["type"] == "memory_forgotten"}
    assert forgotten == {(r["agent"], r["memory"]) for r in rows if r["forgotten"]}


def test_chroma_copy_lives_in_the_run_directory(make_scenario, tmp_path):
    import chromadb

    path = make_scenario({**CHROMA, "protocol.steps": 3})
    run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    memory_dir = tmp_path / "run" / "memory"
    rows = [json.loads(x) for x in (memory_dir / "memories.jsonl").read_text().split("\n") if x]
    client = chromadb.PersistentClient(path=str(memory_dir))
    try:
        col = client.get_collection("memories")
        assert col.count() == len(rows)
        stored = col.get(ids=[f"{r['agent']}:{r['memory']}" for r in rows[:5]])
        assert set(stored["documents"]) <= {r["text"] for r in rows}
        forgotten = col.get(where={"forgotten": True})
        assert len(forgotten["ids"]) == sum(r["forgotten"] for r in rows)
    finally:
        client.close()


def test_nothing_forgotten_reaches_a_prompt(make_scenario):
    data = yaml.safe_load(
        make_scenario({"protocol.mode": "pairs", "population.size": 8}).read_text()
    )
    data["memory"] = {
        "store": "chroma",
        "importance": {"mode": "llm"},
        "forgetting": {"mode": "threshold", "time_scale_hours": 15.0, "threshold": 0.1},
        "reflection": {"threshold": 20.0},
        "retrieval": {"k": 3},
    }
    data["llm"]["cache"] = "off"
    data["protocol"]["steps"] = 6
    from simworld.config.scenario import Scenario

    scenario = Scenario.model_validate(data)
    backend = UniqueTextModel()
    model = SocialSimulation.from_scenario(scenario, backend=backend)
    seen_before_forgotten: set[str] = set()
    violations: list[tuple[str, str]] = []

    def check(request):
        user = request.messages[-1]["content"]
        own = model.memory_system.streams[request.identity.agent]  # the asking agent's memory
        for mem in own.memories:
            if mem.item.text not in user:
                continue
            if mem.forgotten_step is not None:
                violations.append((request.identity.purpose, mem.item.text))
            else:
                seen_before_forgotten.add(mem.item.text)

    backend.on_request = check
    try:
        model.start()
        while model.running:
            model.step()
    finally:
        model.close()
    gone = [
        m.item.text
        for s in model.memory_system.streams.values()
        for m in s.memories
        if m.forgotten_step is not None
    ]
    # a text the agent forgot may still be another agent's memory: check per agent, and
    # make sure the same text is never both forgotten and remembered by one agent
    for s in model.memory_system.streams.values():
        texts = [m.item.text for m in s.memories]
        assert len(texts) == len(set(texts))
    assert gone, "the test must forget something"
    assert set(gone) & seen_before_forgotten, "forgotten memories were in prompts before"
    assert violations == []


def test_memory_streams_are_used_by_agents(make_scenario):
    with SocialSimulation.from_scenario(make_scenario(CHROMA), backend=UniqueTextModel()) as model:
        assert all(isinstance(a.memory, MemoryStream) for a in model.population)


def test_stub_embedder_is_a_valid_embedder():
    assert StubEmbedder(["x"]).embed(["x y", "z"]).tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_in_memory_chroma_sink_searches_and_drops_its_collection():
    from simworld.memory.chroma_store import ChromaRow, ChromaSink

    sink = ChromaSink(None, flush_rows=2)
    vecs = np.eye(3, dtype=np.float32)
    sink.add([ChromaRow(f"a:{i}", vecs[i], f"text {i}", {"agent": "a"}) for i in range(3)])
    sink.add([ChromaRow("b:0", vecs[1], "other agent", {"agent": "b"})])
    sink.update("a:1", {"forgotten": True})
    hits = sink.search("a", vecs[1], 2)
    assert hits[0][0] == "a:1" and hits[0][1] == pytest.approx(0.0, abs=1e-6)
    assert all(h[0].startswith("a:") for h in hits)
    assert sink.collection.get(ids=["a:1"])["metadatas"][0] == {"agent": "a", "forgotten": True}
    name = sink.collection.name
    sink.close()
    import chromadb

    client = chromadb.EphemeralClient()
    try:
        assert name not in [c.name for c in client.list_collections()]
    finally:
        client.close()


def test_branch_may_change_memory_settings_but_not_the_store():
    system = MemorySystem(MemoryConfig(store="chroma"), seed=0, embedder=StubEmbedder())
    s = system.create("ana", "Ana")
    system.reconfigure(MemoryConfig(store="chroma", forgetting={"mode": "off"}))
    assert s.config.forgetting.mode == "off"
    with pytest.raises(ValueError, match=r"memory\.store cannot change"):
        system.reconfigure(MemoryConfig(store="window"))
    system.close()
