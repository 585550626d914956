"""Compact recipients (issue 19, item 20): a message heard by all of its speaker's neighbours
records ``{"neighbours_of": speaker}``; trackers, analysis, replay and resume see the same
listeners as with explicit lists, and run directories written with lists still work."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import LIKERT

from simworld.analysis.report import sampled_messages
from simworld.analysis.tables import Run
from simworld.cli import main
from simworld.config.scenario import load_scenario
from simworld.runs.replay import verify_replay
from simworld.runs.run import execute, resume_run, run_scenario
from simworld.runs.writer import read_transcript
from simworld.support.recipients import (
    COMPACT,
    EXPLICIT,
    NEIGHBOURS_OF,
    Recipients,
    RecipientsFormat,
    UnresolvedRecipients,
    explicit_events,
)
from simworld.trackers.tracker_set import analyze_run

TIMELESS = ("opinions.parquet", "agents.parquet", "edges.parquet")
GROWTH = 1.3
"""Largest growth of a transcript's bytes per agent from 50 to 200 agents on a complete
graph (measured 1.18: longer recalled memories; explicit lists: about 1.95)."""
TOPIC = {
    "id": "remote_work",
    "statement": "Companies should let employees work from home as much as they want.",
    "scale": {"type": "likert", "labels": LIKERT},
}

# -- the resolver ----------------------------------------------------------------------------


def _start(edges: list[list[int]], n: int = 4) -> dict[str, Any]:
    agents = [{"agent": f"a{i}", "node": i} for i in range(n)]
    return {"type": "run_start", "agents": agents, "edges": edges}


def test_neighbourhoods_follow_the_interventions_edge_changes() -> None:
    r = Recipients()
    r.observe(_start([[0, 1], [0, 2], [0, 3], [1, 2]]))
    assert r.neighbours("a0") == ["a1", "a2", "a3"]
    assert r.compact("a0", ["a1", "a2", "a3"]) == {NEIGHBOURS_OF: "a0"}
    assert r.compact("a0", ["a1", "a3"]) == ["a1", "a3"]  # a subset stays a list
    assert r.compact("a1", ["a0", "a2"]) == {NEIGHBOURS_OF: "a1"}
    assert r.compact("a3", ["a0"]) == ["a0"]  # one listener: the list is shorter
    r.observe({"type": "intervention", "kind": "remove", "agents": ["a3"],
               "edges_removed": [[0, 3]]})  # fmt: skip
    assert r.of({"type": "message", "to": {NEIGHBOURS_OF: "a0"}}) == ["a1", "a2"]
    r.observe({"type": "intervention", "kind": "rewire", "edges_removed": [[1, 2]],
               "edges_added": [[1, 3]]})  # fmt: skip
    assert r.neighbours("a1") == ["a0", "a3"] and r.neighbours("a2") == ["a0"]
    assert r.of({"type": "message", "to": ["a2"]}) == ["a2"]
    r.observe({"type": "intervention", "kind": "odd", "edges_added": [[1, 9], "x", [2, 2]]})
    assert r.neighbours("a2") == ["a0"]  # pairs naming no two known nodes change nothing


@pytest.mark.parametrize("to", [{NEIGHBOURS_OF: "nobody"}, {"members_of": "a0"}, "a0"])
def test_a_to_that_does_not_resolve_is_an_error(to: Any) -> None:
    r = Recipients()
    r.observe(_start([[0, 1]]))
    with pytest.raises(UnresolvedRecipients):
        r.of({"type": "message", "to": to})


def test_explicit_events_resolve_in_transcript_order() -> None:
    events = [
        _start([[0, 1], [0, 2], [1, 2]], n=3),
        {"type": "message", "agent": "a0", "to": {NEIGHBOURS_OF: "a0"}},
        {"type": "intervention", "edges_removed": [[0, 2]]},
        {"type": "message", "agent": "a0", "to": {NEIGHBOURS_OF: "a0"}},
    ]
    out = list(explicit_events(events))
    assert out[1]["to"] == ["a1", "a2"] and out[3]["to"] == ["a1"]
    assert events[1]["to"] == {NEIGHBOURS_OF: "a0"}  # the input is left as it was


# -- runs in both forms ----------------------------------------------------------------------


def run_in(path: Path, run_dir: Path, recipients: RecipientsFormat, **kw: Any) -> None:
    """Run a scenario file writing ``to`` in the given form (the cache beside the run)."""
    scenario = load_scenario(path)
    result = execute(
        scenario,
        source=path,
        run_dir=run_dir,
        cache_path=run_dir.parent / f"{run_dir.name}.db",
        recipients=recipients,
        **kw,
    )
    assert result.status == "completed", result.error


def make_old(run_dir: Path) -> None:
    """Make an explicit-form run look written before the compact form: no manifest field."""
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest.pop("recipients") == EXPLICIT
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def frames(run_dir: Path) -> dict[str, bytes]:
    """The tracker frames and the tables that do not record timings, as bytes."""
    files = [*sorted((run_dir / "trackers").glob("*.parquet")), *(run_dir / n for n in TIMELESS)]
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in files}


@pytest.fixture
def changing_network(make_scenario: Callable[..., Path]) -> Path:
    """Broadcast on a small-world graph; the best-linked agent removed at step 2, edges
    rewired at step 3; judge calls (their prompts name the listeners)."""
    return make_scenario(
        {
            "population.size": 10,
            "protocol.steps": 4,
            "trackers.judge": True,
            "interventions": [
                {"step": 2, "kind": "remove", "select": {"by": "degree", "count": 1}},
                {"step": 3, "kind": "rewire", "p": 0.3},
            ],
        }
    )


def test_both_forms_give_the_same_frames_calls_and_listeners(
    changing_network: Path, tmp_path: Path
) -> None:
    compact, explicit = tmp_path / "compact", tmp_path / "explicit"
    run_in(changing_network, compact, COMPACT)
    run_in(changing_network, explicit, EXPLICIT)
    assert frames(compact) == frames(explicit)
    calls = [pd.read_parquet(d / "llm_calls.parquet")["call"].tolist() for d in (compact, explicit)]
    assert calls[0] == calls[1]  # the judges' prompts named the same listeners
    written = read_transcript(compact, explicit=False)
    assert all(e["to"] == {NEIGHBOURS_OF: e["agent"]} for e in written if e["type"] == "message")
    removed, rewired = [e for e in written if e["type"] == "intervention"]
    assert removed["edges_removed"] and rewired["edges_added"]  # the network did change
    resolved = [e for e in read_transcript(compact) if e["type"] == "message"]
    assert not any(removed["agents"][0] in e["to"] for e in resolved if e["step"] >= 2)
    # the explicit file is the compact one with every `to` resolved
    assert read_transcript(compact) == read_transcript(explicit, explicit=False)
    for run_dir in (compact, explicit):
        assert set(analyze_run(run_dir, check=True).values()) == {"identical"}


def test_a_graph_change_no_event_records_falls_back_to_lists(
    make_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    """A custom intervention cuts edges and says nothing: the messages list who heard them."""
    path = make_scenario(
        {"population.size": 6, "network": {"generator": "complete"}, "protocol.steps": 2}
    )
    (path.parent / "cut.py").write_text(
        "class Cut:\n"
        "    def apply(self, model, step):\n"
        "        model.graph.remove_edges_from([(0, 1), (0, 2)])\n"
        "        return {}\n",
        encoding="utf-8",
    )
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["interventions"] = [{"step": 2, "kind": "custom", "type": "cut.py:Cut"}]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    run = tmp_path / "run"
    assert run_scenario(path, out_dir=run).status == "completed"
    step2 = {e["agent"]: e["to"] for e in read_transcript(run, explicit=False)
             if e["type"] == "message" and e["step"] == 2}  # fmt: skip
    by_node = {a["node"]: a["agent"] for a in read_transcript(run)[0]["agents"]}
    a0, a1, a2 = by_node[0], by_node[1], by_node[2]
    assert step2[by_node[3]] != list(step2[by_node[3]])
    assert step2[a0] == [by_node[n] for n in (3, 4, 5)]
    assert step2[a1] == [by_node[n] for n in (2, 3, 4, 5)]
    assert step2[a2] == [by_node[n] for n in (1, 3, 4, 5)]
    assert step2[by_node[3]] == {NEIGHBOURS_OF: by_node[3]}  # untouched: still compact


def test_transcript_grows_linearly_on_a_complete_graph(
    make_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    """Complete graphs of 50 and 200 agents, 2 steps: each message's `to` takes a few bytes
    whatever n, and the transcript's bytes per agent stay about the same (with explicit lists
    they would grow with n: 2 × 199 ids per agent at 200, 2 × 49 at 50)."""
    per_agent, listed_bytes = {}, {}
    for n in (50, 200):
        path = make_scenario(
            {
                "population.size": n,
                "population.replace": True,
                "network": {"generator": "complete"},
                "protocol.steps": 2,
                "topics": [TOPIC],
                "trackers.stance": False,
            }
        )
        run = tmp_path / f"run{n}"
        assert run_scenario(path, out_dir=run, force=True).status == "completed"
        lines = (run / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
        messages = [json.loads(x) for x in lines if '"type": "message"' in x]
        assert len(messages) == 2 * n
        assert all(m["to"] == {NEIGHBOURS_OF: m["agent"]} for m in messages)
        listed = sum(len(m["to"]) for m in read_transcript(run) if m["type"] == "message")
        assert listed == 2 * n * (n - 1)  # what they stand for
        per_agent[n] = (run / "transcript.jsonl").stat().st_size / n
        # the bytes explicit lists would add per agent: 2 messages × (n - 1) quoted ids
        listed_bytes[n] = 2 * (n - 1) * (len(json.dumps(messages[0]["agent"])) + 2)
    assert per_agent[200] < GROWTH * per_agent[50]
    # and the bound tells the forms apart: explicit lists would break it
    explicit = {n: per_agent[n] + listed_bytes[n] for n in per_agent}
    assert explicit[200] > GROWTH * explicit[50]


# -- run directories written with lists ------------------------------------------------------


def test_an_old_run_analyzes_reports_replays_and_resumes(
    changing_network: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old"
    run_in(changing_network, old, EXPLICIT)
    make_old(old)
    lines = (old / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    assert all(isinstance(json.loads(x)["to"], list) for x in lines if '"message"' in x)
    # analyze
    assert set(analyze_run(old, check=True).values()) == {"identical"}
    # report: the listeners are counted from the lists
    heard = {(e["step"], e["agent"]): len(e["to"]) for e in read_transcript(old)
             if e["type"] == "message"}  # fmt: skip
    sampled = sampled_messages(Run(old))
    assert len(sampled) and all(
        r.listeners == heard[(r.step, r.agent)] for r in sampled.itertuples()
    )
    assert main(["report", str(old), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.html").is_file()
    # replay: the old run's files again, byte for byte
    report = verify_replay(old, out_dir=tmp_path / "again")
    assert report.byte_identical, report.differences + report.notes
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert again["recipients"] == EXPLICIT  # the replay says which form it wrote
    # resume: a copy cut back to step 2 and marked interrupted continues with lists
    cut = tmp_path / "cut"
    shutil.copytree(old, cut)
    shutil.copy(tmp_path / "old.db", tmp_path / "cut.db")
    manifest = json.loads((cut / "manifest.json").read_text())
    manifest |= {"status": "interrupted", "cache": {**manifest["cache"],
                                                   "path": str(tmp_path / "cut.db")}}  # fmt: skip
    (cut / "manifest.json").write_text(json.dumps(manifest))
    ends = [i for i, x in enumerate(lines) if '"type": "step_end"' in x]
    (cut / "transcript.jsonl").write_text("\n".join(lines[: ends[2] + 1]) + "\n")
    assert resume_run(cut).status == "completed"
    assert (cut / "transcript.jsonl").read_bytes() == (old / "transcript.jsonl").read_bytes()
    assert frames(cut) == frames(old)
    capsys.readouterr()


def test_a_damaged_compact_to_is_one_line_naming_the_line(
    make_scenario: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run_scenario(make_scenario({"protocol.steps": 1}), out_dir=run)
    path = run / "transcript.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    n = next(i for i, x in enumerate(lines) if '"neighbours_of"' in x)
    lines[n] = lines[n].replace('"neighbours_of": "', '"neighbours_of": "ghost-')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["analyze", str(run), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"transcript.jsonl: line {n + 1}: damaged" in err
    assert "Traceback" not in err
