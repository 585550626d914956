"""Reflection: trigger threshold, questions, retrieval per question, cited insights."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

from conftest import build_model
from memory_helpers import outcome, stream

from simworld.config.memory import MemoryConfig, ReflectionConfig
from simworld.memory.base import MemoryItem
from simworld.memory.reflection import (
    INSIGHT_MAX_CHARS,
    QUESTION_MAX_CHARS,
    check_citations,
    insights_model,
    questions_model,
    reflect,
)
from simworld.runs.run import run_scenario


def item(step: int, text: str, kind: str = "observation") -> MemoryItem:
    return MemoryItem(step=step, kind=kind, speaker="Bo", topic="t", text=text)


def config(threshold: float = 20.0) -> MemoryConfig:
    return MemoryConfig(
        store="chroma", reflection=ReflectionConfig(threshold=threshold, evidence_k=3)
    )


def test_trigger_fires_when_the_sum_exceeds_the_threshold_not_before():
    s = stream(config(threshold=20.0))
    for text in ("a", "b", "c", "d"):
        s.add(item(1, text), importance=5.0)
    assert s.importance_since_reflection() == 20.0
    assert not s.reflection_due()  # reaching the threshold is not exceeding it
    s.add(item(1, "e"), importance=1.0)
    assert s.reflection_due()
    s.mark_reflected()
    assert s.importance_since_reflection() == 0.0 and not s.reflection_due()
    s.add(item(2, "insight", kind="reflection"), importance=30.0)
    assert not s.reflection_due()  # reflections do not feed the trigger


def test_reflection_stores_insights_that_cite_existing_memories():
    s = stream(config(), words=["bus", "rent"])
    s.add(item(1, "bus fares went up"), importance=6.0)
    s.add(item(1, "the rent is too high"), importance=6.0)
    s.add(item(1, "bus lines were cut"), importance=6.0)
    s.add(item(1, "lunch was fine"), importance=3.0)
    s.add(item(1, "forgotten thing"), importance=3.0)
    s._a.forgotten[4] = True
    s.memories[4].forgotten_step = 1
    prompts_seen: list[str] = []

    async def ask(user, purpose, index, schema):
        prompts_seen.append(user)
        if purpose == "reflect_questions":
            assert "forgotten thing" not in user and "[m0] Bo: bus fares went up" in user
            return outcome({"questions": ["what about the bus?"]}, purpose=purpose)
        shown = schema.model_json_schema()["properties"]["insights"]["items"]
        enum = shown["properties"]["evidence"]["items"]["enum"]
        assert "m4" not in enum and "m0" in enum and "m2" in enum
        insights = [
            {"text": "Buses are getting worse.", "evidence": ["m0", "m2", "m0", "m9", "m4"]},
            {"text": "Something unfounded.", "evidence": ["m77", "x"]},
        ]
        return outcome({"insights": insights}, purpose=purpose, index=index)

    calls, events = asyncio.run(reflect(s, step=2, ask=ask))
    assert [c.identity.purpose for c in calls] == ["reflect_questions", "reflect_insights"]
    stored, rejected = events
    assert stored["type"] == "reflection" and stored["stored"]
    assert stored["evidence"] == [0, 2]
    assert {r["ref"]: r["reason"] for r in stored["rejected_evidence"]} == {
        "m9": "unknown",
        "m4": "forgotten",
    }
    memory = s.memories[stored["memory"]]
    assert memory.item.kind == "reflection" and memory.evidence == (0, 2)
    assert memory.item.speaker == "Ana Silva" and memory.item.step == 2
    assert not rejected["stored"] and rejected["memory"] is None
    assert {r["reason"] for r in rejected["rejected_evidence"]} == {"unknown", "malformed"}
    assert s.importance_since_reflection() == 0.0
    # the evidence retrieval was a recall
    assert s.strength(0) == 2 and s.strength(4) == 1


def test_failed_question_call_ends_the_reflection():
    s = stream(config())
    s.add(item(1, "x"), importance=30.0)

    async def ask(user, purpose, index, schema):
        return outcome(None, purpose=purpose)

    calls, events = asyncio.run(reflect(s, step=1, ask=ask))
    assert len(calls) == 1 and events == []
    assert len(s) == 1 and not s.reflection_due()


def test_citations_not_shown_are_rejected():
    s = stream(config())
    for t in "abc":
        s.add(item(1, t), importance=1.0)
    valid, rejected = check_citations(s, ["m0", "m1", "m2"], presented={0, 2})
    assert valid == [0, 2] and rejected == [{"ref": "m1", "reason": "not_shown"}]


def test_schemas_inline_and_restrict_citations():
    schema = insights_model(["m1", "m2"], 3, with_importance=True).model_json_schema()
    assert "$defs" not in schema
    items = schema["properties"]["insights"]["items"]
    assert items["properties"]["evidence"]["items"]["enum"] == ["m1", "m2"]
    assert items["properties"]["importance"]["maximum"] == 10
    no_imp = insights_model(["m1"], 3, with_importance=False).model_json_schema()
    assert "importance" not in no_imp["properties"]["insights"]["items"]["properties"]
    assert questions_model(3).model_json_schema()["properties"]["questions"]["maxItems"] == 3


def test_reflection_fires_at_the_threshold_end_to_end(make_scenario, tmp_path):
    threshold = 30.0
    path = make_scenario(
        {
            "memory": {
                "store": "chroma",
                "forgetting": {"mode": "off"},
                "reflection": {"threshold": threshold},
            },
            "protocol.steps": 6,
        }
    )
    run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    lines = (tmp_path / "run" / "transcript.jsonl").read_text().splitlines()
    events = [json.loads(x) for x in lines]
    snap = (tmp_path / "run" / "memory" / "memories.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in snap]
    by_agent = defaultdict(list)
    for r in rows:
        by_agent[r["agent"]].append(r)
    asked = defaultdict(list)
    for e in events:
        if e["type"] == "llm_call" and e["identity"]["purpose"] == "reflect_questions":
            asked[e["identity"]["agent"]].append(e["identity"]["step"])
    assert asked, "some agent must reflect"
    for agent, mems in by_agent.items():
        # replay the trigger from the final state: sum since the last reflection, per step
        expected, total = [], 0.0
        for step in range(1, 7):
            total += sum(
                m["importance"] for m in mems if m["step"] == step and m["kind"] != "reflection"
            )
            if total > threshold:
                expected.append(step)
                total = 0.0
        assert asked.get(agent, []) == expected, agent
    reflections = [e for e in events if e["type"] == "reflection"]
    assert reflections and all(e["stored"] for e in reflections)
    for e in reflections:
        mems = {m["memory"]: m for m in by_agent[e["agent"]]}
        assert e["evidence"], e
        for cited in e["evidence"]:
            assert cited in mems and mems[cited]["step"] <= e["step"]
            assert mems[cited]["kind"] in {"observation", "own_message", "reflection"}
        assert mems[e["memory"]]["evidence"] == e["evidence"]
        assert mems[e["memory"]]["kind"] == "reflection"


def test_memory_upkeep_calls_use_their_own_output_limit(make_scenario):
    """Ratings and reflection get ``memory.max_tokens``; messages keep ``llm.max_tokens``."""
    path = make_scenario(
        {
            "memory": {
                "store": "chroma",
                "importance": {"mode": "llm"},
                "reflection": {"threshold": 10.0},
                "max_tokens": 333,
            },
            "llm.max_tokens": 40,
            "protocol.steps": 2,
        }
    )
    model = build_model(path)
    limits: dict[str, set[int]] = defaultdict(set)
    call = model.gateway.call

    async def recording(request, output_type=None):
        limits[request.identity.purpose.split(":")[0]].add(request.max_tokens)
        return await call(request, output_type)

    model.gateway.call = recording
    try:
        model.step()
        model.step()
    finally:
        model.close()
    for purpose in ("memory_importance", "reflect_questions", "reflect_insights"):
        assert limits[purpose] == {333}, purpose
    assert limits["post"] == {40}


def test_insight_schema_bounds_text_and_citations():
    schema = insights_model(["m1", "m2", "m3"], 2, with_importance=False).model_json_schema()
    item = schema["properties"]["insights"]["items"]["properties"]
    assert item["text"]["maxLength"] == INSIGHT_MAX_CHARS
    assert item["evidence"]["maxItems"] == 3
    question = questions_model(2).model_json_schema()["properties"]["questions"]["items"]
    assert question["maxLength"] == QUESTION_MAX_CHARS
    # the bounds guide the model; validation still takes a long text and repeated labels
    long = {"insights": [{"text": "x" * 500, "evidence": ["m1", "m1", "m2", "m3"]}]}
    assert insights_model(["m1", "m2", "m3"], 2, with_importance=False).model_validate(long)
