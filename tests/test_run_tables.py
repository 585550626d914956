"""Outputs that join: agents and edges tables, one call-key name, typed option probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simworld.runs.run import run_scenario
from simworld.runs.tables import AGENTS_FILE, EDGES_FILE, communities, run_agents, run_edges
from simworld.runs.writer import OPINION_SCHEMA, option_probs, parquet_bytes


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A stochastic-block run (two nationality blocks) with a Likert and a choice topic."""
    from conftest import finished_run

    root = tmp_path_factory.mktemp("tables")
    return finished_run(
        {"network": {"generator": "stochastic_block", "p_in": 0.9, "p_out": 0.1,
                     "group_by": "nationality"},
         "protocol.steps": 2, "llm.cache": "off"},
        root / "s.yaml",
        root / "run",
    )  # fmt: skip


def test_agents_and_edges_join_the_other_tables(run):
    agents = pd.read_parquet(run / AGENTS_FILE)
    edges = pd.read_parquet(run / EDGES_FILE)
    start = json.loads((run / "transcript.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert list(agents["agent"]) == [a["agent"] for a in start["agents"]]
    assert sorted(map(list, zip(edges["source"], edges["target"], strict=True))) == start["edges"]
    # degree is the number of edges touching the node
    touching = pd.concat([edges["source_agent"], edges["target_agent"]]).value_counts()
    assert dict(zip(agents["agent"], agents["degree"], strict=True)) == {
        a: int(touching.get(a, 0)) for a in agents["agent"]
    }
    # the block of a stochastic-block network is the persona attribute it was built on
    assert (agents["group"] == agents["nationality"]).all()
    assert agents["community"].notna().all() and agents["age"].notna().all()
    opinions = pd.read_parquet(run / "opinions.parquet")
    joined = opinions.merge(agents, on="agent", how="left", validate="many_to_one")
    assert joined["nationality"].notna().all()
    calls = pd.read_parquet(run / "llm_calls.parquet")
    assert "call" in calls and "key" not in calls
    assert set(opinions["call"]) <= set(calls["call"])


def test_option_probabilities_are_a_typed_column(run):
    table = pq.read_table(run / "opinions.parquet")
    assert table.schema.field("probs").type == OPINION_SCHEMA.field("probs").type
    cells = [c for c in table.column("probs").to_pylist() if c]
    assert cells, "the fake provider returns log-probabilities"
    for cell in cells:
        assert sum(c["prob"] for c in cell) == pytest.approx(1.0)
    likert = table.filter(pa.compute.equal(table.column("topic"), "remote_work"))
    first = next(c for c in likert.column("probs").to_pylist() if c)
    assert [c["option"] for c in first] == ["1", "2", "3", "4", "5"]


def test_option_probs_reads_old_json_text_in_scale_order():
    cells = option_probs('{"10": 0.1, "2": 0.5, "1": 0.4}')
    assert [c["option"] for c in cells] == ["1", "2", "10"]
    assert option_probs(cells) == cells and option_probs(None) is None


def test_a_run_older_than_the_tables_derives_them_from_its_transcript(run, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("manifest.json", "transcript.jsonl"):
        (old / name).write_bytes((run / name).read_bytes())
    derived_agents, derived_edges = run_agents(old), run_edges(old)
    agents, edges = run_agents(run), run_edges(run)
    assert derived_edges.equals(edges)
    same = ["agent", "name", "node", "group", "community", "degree", "nationality", "openness"]
    assert derived_agents[same].equals(agents[same])
    assert derived_agents["age"].isna().all()  # not in the transcript: null, not made up
    assert derived_agents["values"].isna().all()


def test_tables_are_deterministic(make_scenario, tmp_path):
    data = {"protocol.steps": 1, "llm.cache": "off"}
    a = run_scenario(make_scenario(data), out_dir=tmp_path / "a")
    b = run_scenario(make_scenario(data), out_dir=tmp_path / "b")
    assert a.status == b.status == "completed"
    for name in (AGENTS_FILE, EDGES_FILE, "opinions.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    table = pq.read_table(tmp_path / "a" / AGENTS_FILE)
    assert parquet_bytes(table) == (tmp_path / "a" / AGENTS_FILE).read_bytes()


def test_communities_are_numbered_by_lowest_node():
    found = communities(range(6), [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)])
    assert found == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    assert communities([0, 1], []) == {0: 0, 1: 1}


def test_replay_compares_typed_and_older_json_probs_by_value(run, tmp_path):
    from simworld.runs.replay import first_table_difference

    new = run / "opinions.parquet"
    df = pd.read_parquet(new)
    old = df.assign(
        probs=[None if p is None else json.dumps({c["option"]: c["prob"] for c in p})
               for p in df["probs"]]
    )  # fmt: skip
    old.to_parquet(tmp_path / "old.parquet")
    assert "same values" in first_table_difference(tmp_path / "old.parquet", new)
    i = next(i for i, p in enumerate(df["probs"]) if p is not None)
    changed = df.copy()
    changed.at[i, "probs"] = [{"option": "1", "prob": 1.0}]
    changed.to_parquet(tmp_path / "changed.parquet")
    diff = first_table_difference(new, tmp_path / "changed.parquet")
    assert diff.startswith(f"opinions.parquet row {i}: probs")
