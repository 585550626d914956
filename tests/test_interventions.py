"""Scheduled interventions: they happen exactly at their steps and show in the transcript."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import LIKERT, build_model

from simworld.runs.run import run_scenario
from simworld.runs.writer import read_transcript

CLAIM = {
    "id": "rumour",
    "statement": "The tap water was poisoned last week and it is being covered up.",
    "scale": {"type": "likert", "labels": LIKERT},
    "truth": 1,
}
CORRECTION = "Fact check: independent tests found the water safe; the rumour is false."


def _events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's events, every message's ``to`` as a list (resolved through the
    interventions' edge changes where the file writes it compactly)."""
    return read_transcript(run_dir)


def _agent_at_node_0(path: Path) -> str:
    model = build_model(path)
    try:
        return model.agent_at(0).key
    finally:
        model.close()


def _run(make_scenario, tmp_path: Path, changes: dict[str, Any], name: str = "run") -> Path:
    path = make_scenario({"topics": [CLAIM], "protocol.steps": 4, **changes})
    run_dir = tmp_path / name
    result = run_scenario(path, out_dir=run_dir, cache_path=tmp_path / f"{name}.db")
    assert result.status == "completed"
    return run_dir


def test_broadcast_reaches_every_agent_at_its_step_before_the_posts(make_scenario, tmp_path):
    broadcast = {"step": 3, "kind": "broadcast", "topic": "rumour", "text": CORRECTION}
    run_dir = _run(make_scenario, tmp_path, {"interventions": [broadcast]})
    events = _events(run_dir)
    agents = [a["agent"] for a in events[0]["agents"]]
    found = [(i, e) for i, e in enumerate(events) if e["type"] == "intervention"]
    assert len(found) == 1
    at, event = found[0]
    assert event["step"] == 3 and event["kind"] == "broadcast" and event["index"] == 0
    assert event["to"] == agents and event["text"] == CORRECTION
    step3 = [i for i, e in enumerate(events) if e["type"] == "message" and e["step"] == 3]
    step2_end = next(i for i, e in enumerate(events) if e["type"] == "step_end" and e["step"] == 2)
    assert step2_end < at < min(step3)  # after step 2 ended, before step 3's first post
    frame = pd.read_parquet(run_dir / "trackers" / "interventions.parquet")
    assert frame[["step", "kind", "agents"]].to_dict("records") == [
        {"step": 3, "kind": "broadcast", "agents": len(agents)}
    ]


def test_broadcast_enters_memory_as_heard_from_the_source(make_scenario, tmp_path):
    broadcast = {"step": 1, "kind": "broadcast", "topic": "rumour", "text": CORRECTION}
    path = make_scenario({"topics": [CLAIM], "protocol.steps": 1, "interventions": [broadcast]})
    model = build_model(path)
    try:
        model.step()
        for agent in model.population:
            heard = [(m.speaker, m.text) for m in agent.memory.recall("rumour", 50)]
            assert ("Official fact-check", CORRECTION) in heard
    finally:
        model.close()


def test_removal_by_id_takes_agents_out(make_scenario, tmp_path):
    first = _agent_at_node_0(make_scenario({"topics": [CLAIM]}))
    run_dir = _run(
        make_scenario,
        tmp_path,
        {"interventions": [{"step": 2, "kind": "remove", "agents": [first]}]},
    )
    events = _events(run_dir)
    (event,) = [e for e in events if e["type"] == "intervention"]
    assert event["step"] == 2 and event["agents"] == [first]
    assert event["edges_removed"] and all(0 in edge for edge in event["edges_removed"])
    speakers = {(e["step"], e["agent"]) for e in events if e["type"] == "message"}
    assert (1, first) in speakers and not any(a == first for s, a in speakers if s >= 2)
    heard = [e for e in events if e["type"] == "message" and e["step"] >= 2]
    assert all(first not in e["to"] for e in heard)
    probes = pd.read_parquet(run_dir / "opinions.parquet")
    assert set(probes.loc[probes["agent"] == first, "step"]) == {0, 1}


def test_removal_selects_the_best_connected_believers(make_scenario, tmp_path):
    removal = {
        "step": 2,
        "kind": "remove",
        "select": {"count": 2, "by": "degree", "among": "believing"},
    }
    run_dir = _run(
        make_scenario,
        tmp_path,
        {
            "interventions": [removal],
            "trackers.belief": {"topic": "rumour", "believe_at": 4},
            "network": {"generator": "barabasi_albert", "m": 2},
        },
    )
    events = _events(run_dir)
    (event,) = [e for e in events if e["type"] == "intervention"]
    nodes = {a["agent"]: a["node"] for a in events[0]["agents"]}
    degree = {a: 0 for a in nodes}
    for u, v in events[0]["edges"]:
        for key, node in nodes.items():
            if node in (u, v):
                degree[key] += 1
    probes = pd.read_parquet(run_dir / "opinions.parquet")
    at1 = probes[probes["step"] == 1].set_index("agent")["value"]
    believers = sorted((a for a in nodes if at1[a] >= 4), key=lambda a: (-degree[a], nodes[a]))
    assert event["agents"] == believers[:2]
    belief = pd.read_parquet(run_dir / "trackers" / "belief.parquet")
    later = belief[belief["step"] >= 2]
    assert not set(event["agents"]) & set(later["agent"])


def test_rewiring_keeps_the_edge_count_and_is_reproducible(make_scenario, tmp_path):
    changes = {"interventions": [{"step": 2, "kind": "rewire", "p": 0.5}]}
    a = _run(make_scenario, tmp_path, changes, name="a")
    b = _run(make_scenario, tmp_path, changes, name="b")
    assert (a / "transcript.jsonl").read_bytes() == (b / "transcript.jsonl").read_bytes()
    events = _events(a)
    (event,) = [e for e in events if e["type"] == "intervention"]
    assert event["edges_removed"] and len(event["edges_removed"]) == len(event["edges_added"])
    edges = {tuple(e) for e in events[0]["edges"]}
    edges -= {tuple(e) for e in event["edges_removed"]}
    edges |= {tuple(e) for e in event["edges_added"]}
    assert len(edges) == len(events[0]["edges"])
    nodes = {a["agent"]: a["node"] for a in events[0]["agents"]}
    for message in (e for e in events if e["type"] == "message" and e["step"] >= 2):
        me = nodes[message["agent"]]
        listeners = {nodes[k] for k in message["to"]}
        assert listeners == {v for u, v in edges if u == me} | {u for u, v in edges if v == me}


@pytest.mark.parametrize("kind", ["broadcast", "rewire"])
def test_a_branch_can_add_an_intervention(make_scenario, tmp_path, kind):
    from simworld.runs.replay import branch_run

    base = _run(make_scenario, tmp_path, {}, name="base")
    item = (
        {"step": 3, "kind": "broadcast", "topic": "rumour", "text": CORRECTION}
        if kind == "broadcast"
        else {"step": 3, "kind": "rewire", "p": 1.0}
    )
    result = branch_run(
        base, from_step=3, overrides={"interventions": [item]}, out_dir=tmp_path / "branch"
    )
    events = _events(result.run_dir)
    found = [e for e in events if e["type"] == "intervention"]
    assert [(e["step"], e["kind"]) for e in found] == [(3, kind)]


@pytest.mark.parametrize("condition", ["removal", "rewire"])
def test_a_misinformation_run_replays_exactly(tmp_path, condition):
    """Synthetic personas, a memory stream and graph changes: replay makes no call, same bytes."""
    from conftest import ROOT

    from simworld.runs.replay import verify_replay

    path = ROOT / "scenarios" / "misinformation" / f"{condition}.yaml"
    overrides = {"llm.model": "fake/default", "population.size": 8}
    run_dir = tmp_path / "run"
    run_scenario(path, overrides=overrides, out_dir=run_dir, cache_path=tmp_path / "c.db")
    assert any(e["type"] == "intervention" and e["kind"] != "broadcast" for e in _events(run_dir))
    report = verify_replay(run_dir, out_dir=tmp_path / "replayed")
    assert report.result.status == "completed"
    assert report.identical, report.differences
    assert report.result.accounting.model_calls == 0
