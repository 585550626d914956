"""Run-directory files: tables grown step by step, masking, tracker frames at checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa

import simworld.trackers.tracker_set as trackers
from simworld.config.scenario import load_scenario
from simworld.runs.run import run_scenario
from simworld.runs.writer import CALL_SCHEMA, GrowingTable, RunWriter, mask_table, parquet_bytes
from simworld.support.redact import MASK, Redactor
from simworld.trackers.tracker_set import TRACKERS_DIR, TrackerSet, analyze_run

SECRET = "sk-" + "x7Q" * 8  # shaped like a key: letters and digits after the prefix


def call_rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"step": i // 5, "agent": f"agent-{i % 3}", "purpose": "post", "index": i,
         "call": f"{i:064x}", "model": f"fake/{SECRET}" if i % 4 == 0 else "fake/default",
         "status": "ok", "attempts": 1, "error_kinds": "", "prompt_tokens": i,
         "completion_tokens": 2 * i, "cost_usd": None if i % 7 == 0 else 0.001 * i,
         "cached": i % 2 == 0, "latency_s": 0.5}
        for i in range(start, start + n)
    ]  # fmt: skip


def test_a_growing_table_writes_the_bytes_of_one_table_of_all_rows(tmp_path):
    redactor = Redactor({})
    table = GrowingTable(tmp_path / "calls.parquet", CALL_SCHEMA, redactor)
    batches = [call_rows(7), call_rows(0, 7), call_rows(12, 7), call_rows(1, 19)]
    for batch in batches:
        table.extend(batch)
        table.write(durable=False)
    rows = redactor.deep([r for batch in batches for r in batch])
    whole = pa.Table.from_pylist(rows, schema=CALL_SCHEMA)
    assert len(table) == 20
    assert (tmp_path / "calls.parquet").read_bytes() == parquet_bytes(whole)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_masking_a_table_equals_masking_its_rows():
    redactor = Redactor({})
    rows = call_rows(12)
    masked = mask_table(pa.Table.from_pylist(rows, schema=CALL_SCHEMA), redactor)
    assert masked.equals(pa.Table.from_pylist(redactor.deep(rows), schema=CALL_SCHEMA))
    models = masked.column("model").to_pylist()
    assert f"fake/{MASK}" in models and not any(SECRET in m for m in models)
    clean = pa.Table.from_pylist(call_rows(3, 1), schema=CALL_SCHEMA)
    assert mask_table(clean, redactor) is clean  # nothing to mask: the same table


def test_transcript_events_are_masked_string_by_string(tmp_path):
    """A key after an escaped character is masked, and a secret that is also a field name
    leaves a line that still parses: masking looks at each string, not at the JSON text."""
    writer = RunWriter(tmp_path / "run", redactor=Redactor(["neighbours_of"]))
    event = {
        "type": "message",
        "to": {"neighbours_of": "agent-1"},
        "text": f'my key:\n{SECRET}\tand "{SECRET}"',
    }
    writer.event(event)
    writer.close()
    (line,) = (tmp_path / "run" / RunWriter.TRANSCRIPT).read_text(encoding="utf-8").splitlines()
    assert SECRET not in line and "neighbours_of" not in line
    assert json.loads(line) == {
        "type": "message",
        "to": {MASK: "agent-1"},
        "text": f'my key:\n{MASK}\tand "{MASK}"',
    }


def test_tracker_frames_are_written_at_checkpoints_and_at_the_end(make_scenario, tmp_path):
    ts = TrackerSet(load_scenario(make_scenario()))
    ts.observe({"type": "run_start", "agents": [], "edges": []})
    out = tmp_path / "frames"
    assert ts.checkpoint(out, every_s=3600) == []
    assert {p.stem for p in ts.checkpoint(out, every_s=0)} == set(ts.names)
    assert ts.checkpoint(out, every_s=0) == []  # nothing changed since


def test_during_a_run_frames_on_disk_follow_the_transcript(make_scenario, tmp_path, monkeypatch):
    """With checkpoints due after every step, the frames match the transcript written so far."""
    monkeypatch.setattr(trackers, "CHECKPOINT_S", 0.0)
    run = tmp_path / "run"
    seen = []

    def check(model):
        if model.steps == 0:
            return
        status = analyze_run(run, check=True)
        seen.append(model.steps)
        assert set(status.values()) == {"identical"}, status
        probes = pd.read_parquet(run / "opinions.parquet")
        assert probes.step.max() == model.steps  # the table was rewritten after the step

    path = make_scenario({"protocol.steps": 3, "llm.cache": "off"})
    run_scenario(path, out_dir=run, before_step=check)
    assert seen == [1, 2]
    assert set(analyze_run(run, check=True).values()) == {"identical"}


def test_a_fast_run_writes_its_frames_once_at_the_end(make_scenario, tmp_path, monkeypatch):
    writes = []
    real = TrackerSet.write

    def counted(self, directory, **kwargs):
        writes.append(json.loads((Path(directory).parent / "manifest.json").read_text())["status"])
        return real(self, directory, **kwargs)

    monkeypatch.setattr(TrackerSet, "write", counted)
    run = tmp_path / "run"
    run_scenario(make_scenario({"protocol.steps": 3, "llm.cache": "off"}), out_dir=run)
    assert writes == ["running"]  # once, before the manifest says the run is complete
    assert {p.stem for p in (run / TRACKERS_DIR).iterdir()} >= {"drift", "conformity"}
