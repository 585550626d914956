"""Asch-style trials: p unanimous scripted peers, then the agent's answer (docs/metrics.md §3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from conftest import build_model

from simworld.config.scenario import load_scenario
from simworld.engine.asch import draw_peer_answers
from simworld.measures import asch_table
from simworld.runs.run import run_scenario

QUESTIONS = [
    {
        "id": "line",
        "statement": "The reference line is 10 cm. Which line matches it? A: 8 cm, B: 10 cm.",
        "scale": {"type": "choice", "options": {"A": "Line A", "B": "Line B", "C": "Line C"}},
        "truth": "B",
    },
    {
        "id": "legs",
        "statement": "How many legs does a spider have?",
        "scale": {"type": "choice", "options": {"A": "Six", "B": "Eight"}},
        "truth": "B",
    },
]
ASCH = {
    "topics": QUESTIONS,
    "network": {"generator": "complete"},
    "protocol": {"steps": 3, "mode": "asch", "asch": {"peers": [0, 2, 4]}, "probe_at": [0]},
}


def _events(run_dir: Path) -> list[dict[str, Any]]:
    with open(run_dir / "transcript.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_peer_answers_are_wrong_and_seeded(make_scenario):
    scenario = load_scenario(make_scenario(ASCH))
    a = draw_peer_answers(scenario)
    assert a == draw_peer_answers(scenario)
    assert a["legs"] == "A" and a["line"] in {"A", "C"}
    draws = {
        draw_peer_answers(load_scenario(make_scenario({**ASCH, "seed": s})))["line"]
        for s in range(12)
    }
    assert draws == {"A", "C"}  # seeded: other seeds draw the other wrong answer too
    fixed = load_scenario(make_scenario({**ASCH, "protocol.asch.peer_answers": {"line": "C"}}))
    assert draw_peer_answers(fixed)["line"] == "C"
    assert draw_peer_answers(load_scenario(make_scenario())) == {}


def test_trials_record_p_the_peers_and_the_own_earlier_answer(make_scenario, tmp_path):
    path = make_scenario(ASCH)
    run_dir = tmp_path / "run"
    assert run_scenario(path, out_dir=run_dir, cache_path=tmp_path / "c.db").status == "completed"
    events = _events(run_dir)
    agents = [a["agent"] for a in events[0]["agents"]]
    trials = [e for e in events if e["type"] == "asch"]
    assert len(trials) == 3 * len(agents) * len(QUESTIONS)
    assert {(e["step"], e["p"]) for e in trials} == {(1, 0), (2, 2), (3, 4)}
    own = {(e["agent"], e["topic"]): e["answer"] for e in events if e["type"] == "probe"}
    assert all(e["own_answer"] == own[(e["agent"], e["topic"])] for e in trials)
    assert all(e["ok"] and e["answer"] in {"A", "B", "C"} for e in trials)
    assert len({e["peer_answer"] for e in trials if e["topic"] == "legs"}) == 1
    assert not [e for e in events if e["type"] == "message"]  # trials are not conversations
    frame = pd.read_parquet(run_dir / "trackers" / "asch.parquet")
    assert len(frame) == len(trials)
    table = asch_table(frame)
    assert list(table["p"]) == [0, 2, 4] and (table["n"] == len(agents) * 2).all()
    # the fake provider counts the labels it sees: with peers it follows them, alone it cannot
    assert table.set_index("p").loc[4, "CL"] > table.set_index("p").loc[0, "CL"]


def test_trial_prompts_show_p_peers_and_nothing_enters_memory(make_scenario):
    model = build_model(make_scenario(ASCH))
    scenario = model.scenario
    try:
        agent = model.agent_at(0)
        topic = scenario.topics[1]
        peers = [("Participant 1", "A = Six"), ("Participant 2", "A = Six")]
        request, _ = agent.answer_request(topic, step=2, template="asch", heard=peers)
        user = request.messages[-1]["content"]
        assert user.count("- Participant") == 2 and "2 other participants" in user
        assert request.identity.purpose == "asch:legs"
        alone, _ = agent.answer_request(topic, step=1, template="asch", heard=[])
        assert "Participant" not in alone.messages[-1]["content"]
        model.step()
        model.step()
        for a in model.population:
            assert all(not a.memory.recall(t.id, 50) for t in scenario.topics)
    finally:
        model.close()
