"""End-to-end runs with the fake provider: determinism, replay, failures, run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from simworld.errors import ConfigError
from simworld.llm.cache import ResponseCache
from simworld.runs import run as run_module
from simworld.runs.run import model_builds, run_scenario
from simworld.runs.writer import read_transcript

DETERMINISTIC_FILES = ("transcript.jsonl", "opinions.parquet")


def read_events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_run_directory_contents(make_scenario, tmp_path):
    result = run_scenario(make_scenario(), out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    assert result.status == "completed"
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["seed"] == 11
    assert manifest["scenario"]["protocol"]["steps"] == 3
    assert {"mesa", "litellm", "pydantic"} <= set(manifest["versions"])
    assert manifest["model_builds"] == []  # the fake model: no llama.cpp build answered
    assert manifest["totals"]["calls"] == result.accounting.calls > 0
    assert manifest["wall_time_s"] > 0
    opinions = pd.read_parquet(run / "opinions.parquet")
    # 8 agents x 2 topics x probes at steps 0..3
    assert len(opinions) == 8 * 2 * 4
    assert list(opinions.columns[:6]) == ["step", "agent", "topic", "value", "answer", "raw"]
    likert = opinions[opinions.topic == "remote_work"]
    assert likert.value.between(1, 5).all()
    choice = opinions[opinions.topic == "city_priority"]
    assert choice.value.isna().all() and set(choice.answer) <= set("ABCD")
    calls = pd.read_parquet(run / "llm_calls.parquet")
    assert len(calls) == result.accounting.calls
    kinds = {e["type"] for e in read_events(run)}
    assert {"run_start", "llm_call", "message", "probe", "step_end"} <= kinds


def test_model_builds_keep_a_resumed_runs_and_add_this_processs_once(monkeypatch):
    avx2 = {"llama_cpp_python": "0.3.36", "compiled_for": ["AVX2"], "cpu": "A"}
    avx512 = {**avx2, "compiled_for": ["AVX2", "AVX512"], "cpu": "B"}
    loaded = {"local/gemma3-270m": avx512}
    monkeypatch.setattr(run_module, "build_of", loaded.get)
    earlier = [{"model": "local/gemma3-270m", **avx2}]
    both = [*earlier, {"model": "local/gemma3-270m", **avx512}]
    models = {"local/gemma3-270m", "fake/default"}
    assert model_builds(earlier, models) == both  # resumed on another kind of host
    assert model_builds(both, models) == both  # the same build again: listed once
    assert model_builds(None, ["fake/default"]) == []
    assert model_builds("damaged", models) == [{"model": "local/gemma3-270m", **avx512}]


def test_same_seed_identical_across_concurrency(make_scenario, tmp_path):
    """Calls finish in a scrambled order (seeded jitter); outputs must not care."""
    model = "fake/default?latency_ms=1&latency_jitter_ms=20"
    outs = []
    for conc in (1, 64):
        path = make_scenario(
            {
                "llm.model": model,
                "llm.concurrency": conc,
                "llm.cache": "off",
                "protocol.mode": "pairs",
                "population.size": 12,
            }
        )
        out = tmp_path / f"run{conc}"
        run_scenario(path, out_dir=out)
        outs.append(out)
    for name in DETERMINISTIC_FILES:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_different_seed_differs(make_scenario, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_scenario(make_scenario({"llm.cache": "off"}), out_dir=a)
    run_scenario(make_scenario({"llm.cache": "off", "seed": 12}), out_dir=b)
    assert (a / "transcript.jsonl").read_bytes() != (b / "transcript.jsonl").read_bytes()


def test_record_then_replay_makes_no_model_calls(make_scenario, tmp_path):
    cache = tmp_path / "cache.sqlite"
    path = make_scenario(
        {
            "protocol.mode": "group",
            "protocol.group_size": 4,
            "protocol.rounds": 2,
            "network": {"generator": "complete"},
        }
    )
    first = run_scenario(path, out_dir=tmp_path / "rec", cache_path=cache)
    assert first.accounting.model_calls > 0 and first.accounting.cache_hits == 0
    second = run_scenario(
        path, out_dir=tmp_path / "rep", cache_path=cache, overrides={"llm.cache": "replay"}
    )
    assert second.status == "completed"
    assert second.accounting.model_calls == 0
    assert second.accounting.cache_hits == first.accounting.calls
    for name in DETERMINISTIC_FILES:
        assert (tmp_path / "rec" / name).read_bytes() == (tmp_path / "rep" / name).read_bytes()


def test_replay_miss_fails_the_run(make_scenario, tmp_path):
    cache = ResponseCache(tmp_path / "c.db")
    assert cache.get("no such key") is None  # made, and it holds no answer of this run
    cache.close()
    result = run_scenario(
        make_scenario({"llm.cache": "replay"}), out_dir=tmp_path / "r", cache_path=tmp_path / "c.db"
    )
    assert result.status == "failed"
    assert "no recorded answer" in (result.error or "")
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["status"] == "failed"


def test_replay_from_a_cache_that_does_not_exist_is_refused_before_anything(
    make_scenario, tmp_path
):
    path = make_scenario({"llm.cache": "replay"})
    with pytest.raises(ConfigError, match="no such cache to replay from"):
        run_scenario(path, out_dir=tmp_path / "r", cache_path=tmp_path / "c.db")
    assert not (tmp_path / "r").exists() and not (tmp_path / "c.db").exists()


def test_injected_failures_are_recorded_never_invented(make_scenario, tmp_path):
    path = make_scenario(
        {
            "llm.model": "fake/default?failure_rate=0.3",
            "llm.max_retries": 1,
            "llm.max_invalid_retries": 0,
            "population.size": 16,
            "protocol.steps": 4,
        }
    )
    result = run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    assert result.status == "completed"
    run = tmp_path / "run"
    events = read_events(run)
    calls = [e for e in events if e["type"] == "llm_call"]
    failed = [e for e in calls if e["status"] == "failed"]
    retried = [e for e in calls if e["status"] == "ok" and e["errors"]]
    assert failed and retried, "30% injected failures must show both retries and failures"
    assert len(failed) == result.accounting.failures
    assert {err["kind"] for e in calls for err in e["errors"]} == {
        "rate_limit",
        "timeout",
        "invalid_output",
    }
    for e in failed:
        assert e["text"] is None and e["parsed"] is None and e["errors"]
    table = pd.read_parquet(run / "llm_calls.parquet")
    assert (table.status == "failed").sum() == len(failed)
    assert set(table[table.status == "failed"].call) == {e["key"] for e in failed}
    opinions = pd.read_parquet(run / "opinions.parquet")
    bad = opinions[~opinions.ok]
    assert len(bad) > 0
    assert bad.value.isna().all() and bad.answer.isna().all()
    failed_keys = {e["key"] for e in failed}
    assert set(bad.call) <= failed_keys
    # a failed speech turn leaves no message behind
    messages = {(e["step"], e["agent"]) for e in events if e["type"] == "message"}
    for e in failed:
        if e["identity"]["purpose"].startswith("post"):
            assert (e["identity"]["step"], e["identity"]["agent"]) not in messages


def test_messages_travel_only_along_edges(make_scenario, tmp_path):
    for mode in ("broadcast", "pairs", "group"):
        run = tmp_path / mode
        run_scenario(make_scenario({"protocol.mode": mode, "llm.cache": "off"}), out_dir=run)
        events = read_transcript(run)  # every ``to`` as a list
        start = events[0]
        node = {a["agent"]: a["node"] for a in start["agents"]}
        edges = {tuple(e) for e in start["edges"]}
        messages = [e for e in events if e["type"] == "message"]
        assert messages
        for m in messages:
            for to in m["to"]:
                a, b = sorted((node[m["agent"]], node[to]))
                assert (a, b) in edges, (mode, m["agent"], to)


def test_probes_never_enter_memory_or_prompts(make_scenario, tmp_path):
    run = tmp_path / "run"
    run_scenario(make_scenario({"llm.cache": "off"}), out_dir=run)
    events = read_events(run)
    probe_raws = {e["raw"] for e in events if e["type"] == "probe"}
    assert probe_raws
    for e in events:
        if e["type"] == "llm_call" and e["identity"]["purpose"].startswith("probe"):
            continue
        if e["type"] == "message":
            assert e["text"] not in probe_raws


def test_budget_stops_run_cleanly(make_scenario, tmp_path):
    path = make_scenario(
        {
            "llm.budget_usd": 0.001,
            "llm.price": {"input_per_million": 10.0, "output_per_million": 10.0},
            "protocol.steps": 10,
            "llm.cache": "off",
        }
    )
    result = run_scenario(path, out_dir=tmp_path / "run")
    assert result.status == "budget_exhausted"
    assert result.steps < 10
    assert result.accounting.cost_usd >= 0.001
    events = read_events(tmp_path / "run")
    assert events[-1] == {"type": "run_stopped", "step": result.steps, "reason": "budget_exhausted"}


def test_existing_out_dir_is_refused(make_scenario, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("not a run of ours")
    with pytest.raises(ConfigError, match="already exists"):
        run_scenario(make_scenario(), out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
