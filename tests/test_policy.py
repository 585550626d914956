"""Classical baselines as drop-in agent policies: exact dynamics, no calls, mixing, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from conftest import BASE_SCENARIO

from simworld.config.scenario import load_scenario
from simworld.engine.baselines import make_dynamics, simulate
from simworld.errors import ConfigError
from simworld.runs.replay import verify_replay
from simworld.runs.run import run_scenario
from simworld.trackers.tracker_set import TRACKERS_DIR, analyze_run, derive

LIKERT_ONLY = {"topics": BASE_SCENARIO["topics"][:1]}
TOPIC = "remote_work"


def read_events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def graph_and_x0(events: list[dict]) -> tuple[nx.Graph, np.ndarray, list[str]]:
    start = events[0]
    agents = sorted(start["agents"], key=lambda a: a["node"])
    graph = nx.Graph()
    graph.add_nodes_from(range(len(agents)))
    graph.add_edges_from(tuple(e) for e in start["edges"])
    x0 = np.array([float(a["opinions"][TOPIC]) for a in agents])
    return graph, x0, [a["agent"] for a in agents]


def probed(run_dir: Path, keys: list[str]) -> np.ndarray:
    """Probed values as a (steps + 1) × n array in node order."""
    ops = pd.read_parquet(run_dir / "opinions.parquet")
    table = ops[ops.topic == TOPIC].pivot(index="step", columns="agent", values="value")
    return table[keys].to_numpy()


@pytest.mark.parametrize(
    ("name", "params"),
    [("degroot", {"self_weight": 2.0}), ("friedkin_johnsen", {"susceptibility": 0.6})],
)
def test_pure_baseline_is_exactly_the_classical_model(make_scenario, tmp_path, name, params):
    steps = 6
    changes = {
        **LIKERT_ONLY,
        "baseline": {"model": name, **params},
        "protocol.steps": steps,
        "population.size": 10,
    }
    run = tmp_path / "run"
    result = run_scenario(make_scenario(changes), out_dir=run, cache_path=tmp_path / "c.db")
    assert result.status == "completed"
    assert result.accounting.model_calls == 0 and result.accounting.calls == 0
    events = read_events(run)
    assert not [e for e in events if e["type"] == "llm_call"]
    graph, x0, keys = graph_and_x0(events)
    expected = simulate(make_dynamics(name, graph, x0, **params), x0, steps, None)
    np.testing.assert_allclose(probed(run, keys), expected, rtol=0, atol=1e-9)
    # messages state the position; stances are read off directly
    messages = [e for e in events if e["type"] == "message"]
    stances = [e for e in events if e["type"] == "stance"]
    assert messages and len(stances) == len(messages)
    assert all(m["text"].startswith("My position: ") for m in messages)
    assert all(s["status"] == "stated" and s["call"] is None for s in stances)
    probes = [e for e in events if e["type"] == "probe"]
    assert all(p["ok"] and p["raw"] is None and p["call"] is None for p in probes)
    assert all(p["answer"] == str(int(np.floor(p["value"] + 0.5))) for p in probes)
    # the trackers re-derive byte for byte from the transcript
    assert analyze_run(run, check=True) == dict.fromkeys(derive(run).names, "identical")
    assert (run / TRACKERS_DIR / "drift.parquet").is_file()


def test_hegselmann_krause_with_a_large_bound_reaches_consensus(make_scenario, tmp_path):
    changes = {
        **LIKERT_ONLY,
        "baseline": {"model": "hegselmann_krause", "epsilon": 10.0},
        "network": {"generator": "complete"},
        "protocol.steps": 2,
    }
    run = tmp_path / "run"
    result = run_scenario(make_scenario(changes), out_dir=run, cache_path=tmp_path / "c.db")
    assert result.accounting.model_calls == 0
    _, x0, keys = graph_and_x0(read_events(run))
    final = probed(run, keys)[-1]
    assert np.ptp(final) < 1e-9 and final[0] == pytest.approx(x0.mean())


@pytest.mark.parametrize("name", ["degroot", "deffuant_weisbuch"])
def test_mixed_population_is_deterministic(make_scenario, tmp_path, name):
    outs = []
    for conc in (1, 16):
        changes = {
            **LIKERT_ONLY,
            "baseline": {"model": name, "share": 0.5},
            "llm.model": "fake/default?latency_ms=1&latency_jitter_ms=20",
            "llm.concurrency": conc,
            "llm.cache": "off",
            "protocol.mode": "pairs",
            "population.size": 12,
        }
        out = tmp_path / f"run{conc}"
        result = run_scenario(make_scenario(changes), out_dir=out)
        assert result.status == "completed" and result.accounting.model_calls > 0
        outs.append(out)
    for file in ("transcript.jsonl", "opinions.parquet"):
        assert (outs[0] / file).read_bytes() == (outs[1] / file).read_bytes(), file
    events = read_events(outs[0])
    baseline = {a["agent"] for a in events[0]["agents"] if a.get("policy") == name}
    assert len(baseline) == 6
    callers = {e["identity"]["agent"] for e in events if e["type"] == "llm_call"}
    assert callers and not callers & baseline
    assert callers == {a["agent"] for a in events[0]["agents"]} - baseline
    ops = pd.read_parquet(outs[0] / "opinions.parquet")
    mine = ops[ops.agent.isin(baseline)]
    assert mine.call.isna().all() and mine.ok.all()
    assert ops[~ops.agent.isin(baseline)].call.notna().all()
    assert analyze_run(outs[0], check=True) == dict.fromkeys(derive(outs[0]).names, "identical")


def test_mixed_run_replays_identically(make_scenario, tmp_path):
    changes = {**LIKERT_ONLY, "baseline": {"model": "deffuant_weisbuch", "share": 0.5}}
    run_scenario(make_scenario(changes), out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    report = verify_replay(tmp_path / "run", out_dir=tmp_path / "again")
    assert report.identical and report.result.accounting.model_calls == 0


def test_baseline_agents_move_toward_llm_inputs(make_scenario, tmp_path):
    """LLM agents are inputs: with a share below 1, baseline values use their probes."""
    changes = {**LIKERT_ONLY, "baseline": {"model": "degroot", "share": 0.5}}
    run = tmp_path / "run"
    run_scenario(make_scenario(changes), out_dir=run, cache_path=tmp_path / "c.db")
    events = read_events(run)
    graph, x0, keys = graph_and_x0(events)
    baseline = [a["node"] for a in events[0]["agents"] if a.get("policy")]
    values = probed(run, keys)
    w = make_dynamics("degroot", graph, x0).w  # type: ignore[attr-defined]
    x = values[0].copy()  # step-0 probes: baseline values and LLM answers
    for step in range(1, values.shape[0]):
        x[baseline] = (w @ x)[baseline]
        np.testing.assert_allclose(values[step][baseline], x[baseline], atol=1e-9)
        llm = [n for n in range(len(keys)) if n not in baseline]
        ok = ~np.isnan(values[step][llm])
        x[np.array(llm)[ok]] = values[step][llm][ok]


def test_baseline_with_a_choice_topic_is_a_config_error(make_scenario):
    path = make_scenario({"baseline": {"model": "degroot"}})
    with pytest.raises(ConfigError, match=r"baseline\.model.*city_priority"):
        load_scenario(path)


def test_baseline_section_is_strict(make_scenario):
    with pytest.raises(ConfigError, match="baseline"):
        load_scenario(make_scenario({**LIKERT_ONLY, "baseline": {"model": "degroot", "x": 1}}))
    with pytest.raises(ConfigError, match=r"baseline\.share"):
        load_scenario(make_scenario({**LIKERT_ONLY, "baseline": {"model": "degroot", "share": 0}}))
