"""docs/outputs.md lists every table with exactly the columns and types the code writes."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from simworld.runs.run import run_scenario
from simworld.runs.tables import AGENT_SCHEMA, EDGE_SCHEMA
from simworld.runs.writer import CALL_SCHEMA, OPINION_SCHEMA, read_transcript
from simworld.support.events import MESSAGE_FIELDS
from simworld.trackers.tracker_set import BUILTIN_TRACKERS

DOC = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"
TRANSCRIPT = "transcript.jsonl"
TABLES: dict[str, pa.Schema] = {
    "opinions.parquet": OPINION_SCHEMA,
    "llm_calls.parquet": CALL_SCHEMA,
    "agents.parquet": AGENT_SCHEMA,
    "edges.parquet": EDGE_SCHEMA,
    **{f"trackers/{cls.name}.parquet": cls.schema for cls in BUILTIN_TRACKERS},
}


def documented() -> dict[str, list[tuple[str, str]]]:
    """Section name → its (column, type) rows, as the page lists them."""
    out: dict[str, list[tuple[str, str]]] = {}
    name = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        head = re.match(r"^### `([^`]+)`", line)
        if head:
            name = head.group(1)
            out[name] = []
            continue
        if line.startswith("## "):
            name = None
            continue
        row = re.match(r"^\| `([^`]+)` \| `([^`]+)` \|", line)
        if row and name is not None:
            out[name].append((row.group(1), row.group(2)))
    return out


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_is_documented_with_its_columns_and_types(name):
    want = [(f.name, str(f.type)) for f in TABLES[name]]
    assert documented().get(name) == want


def test_the_message_event_is_documented_with_its_fields():
    assert documented()[TRANSCRIPT] == list(MESSAGE_FIELDS.items())


def test_the_documented_message_fields_are_those_the_engine_writes(tmp_path, make_scenario):
    """A broadcast run writes both forms of ``to``: lists and the compact one."""
    path = make_scenario({"protocol.steps": 1, "network": {"generator": "complete"}})
    run_scenario(path, out_dir=tmp_path / "run")
    messages = [e for e in read_transcript(tmp_path / "run", explicit=False)
                if e["type"] == "message"]  # fmt: skip
    assert messages and all(list(e) == sorted(MESSAGE_FIELDS) for e in messages)
    assert all(e["to"] == {"neighbours_of": e["agent"]} for e in messages)


def test_no_documented_table_is_unknown():
    from simworld.analysis.compare import SUMMARY_SCHEMA

    known = set(TABLES) | {"report/summary.parquet", TRANSCRIPT}
    assert set(documented()) == known
    assert documented()["report/summary.parquet"] == [(f.name, str(f.type)) for f in SUMMARY_SCHEMA]
