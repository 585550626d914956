"""A model provider that dies: the run is marked crashed, resumes, and can still be read."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from simworld.cli import main
from simworld.errors import ConfigError
from simworld.llm.litellm_backend import LiteLLMModel
from simworld.llm.providers.local_child import ModelCrashedError, death_cause, process_mode
from simworld.runs.run import run_scenario
from simworld.runs.state import run_state

SAME = ("transcript.jsonl", "opinions.parquet")


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))


def test_death_cause_names_the_signal():
    assert death_cause(-signal.SIGSEGV) == (
        "the model process died of SIGSEGV (Segmentation fault)"
    )
    assert death_cause(-signal.SIGKILL).endswith("(likely out of memory)")
    illegal = death_cause(-signal.SIGILL)
    assert illegal.startswith("the model process died of SIGILL (Illegal instruction)")
    assert "another CPU" in illegal and "--no-cache-dir" in illegal
    assert death_cause(3) == "the model process exited with code 3"
    assert death_cause(None) == "the model process stopped answering"


def test_process_mode_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SIMWORLD_LOCAL_PROCESS", raising=False)
    assert process_mode() == "child"
    monkeypatch.setenv("SIMWORLD_LOCAL_PROCESS", "inline")
    assert process_mode() == "inline"
    monkeypatch.setenv("SIMWORLD_LOCAL_PROCESS", "thread")
    with pytest.raises(ValueError, match="SIMWORLD_LOCAL_PROCESS"):
        process_mode()


@pytest.fixture
def crash_at(monkeypatch):
    """Make the backend's call number ``n`` (0-based, attempts included) raise a crash."""
    state = {"n": None, "calls": 0}
    original = LiteLLMModel.complete

    async def complete(self, request, *, attempt, timeout_s, transient=0):
        index = state["calls"]
        state["calls"] += 1
        if state["n"] is not None and index >= state["n"]:
            raise ModelCrashedError(request.model, "the model process died of SIGSEGV")
        return await original(
            self, request, attempt=attempt, timeout_s=timeout_s, transient=transient
        )

    monkeypatch.setattr(LiteLLMModel, "complete", complete)

    def arm(n: int | None) -> None:
        state["n"], state["calls"] = n, 0

    return arm


def test_crash_marks_the_run_and_resume_finishes_it_identically(
    make_scenario, tmp_path, crash_at, capsys
):
    path = make_scenario({"protocol.steps": 3})
    crash_at(None)
    reference = run_scenario(path, out_dir=tmp_path / "ref", cache_path=tmp_path / "ref.db")
    assert reference.status == "completed"
    per_step = {}
    for line in (tmp_path / "ref" / "transcript.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "step_end":
            per_step[event["step"]] = event["calls"]
    # crash in the middle of step 2
    crash_at(per_step[0] + per_step[1] + per_step[2] // 2)
    run = tmp_path / "run"
    args = ["run", str(path), "--out", str(run), "--cache", str(tmp_path / "c.db"), "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("simworld: error: llm.model 'fake/default': the embedded model")
    assert "SIGSEGV" in err[0] and "(step 1 completed)" in err[0]
    assert f"simworld resume {run}" in err[0]
    m = manifest(run)
    assert m["status"] == "crashed" and m["last_completed_step"] == 1
    assert "SIGSEGV" in m["error"]
    assert run_state(run).last_step == 1
    crash_at(None)
    assert main(["resume", str(run), "--quiet"]) == 0
    assert manifest(run)["status"] == "completed"
    for name in SAME:
        assert (run / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_report_and_analyze_of_an_unfinished_run(make_scenario, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_scenario(make_scenario(), out_dir=run, cache_path=tmp_path / "c.db").status == (
        "completed"
    )
    # what a process killed in step 2 leaves: status running, a transcript cut mid-line
    m = manifest(run)
    m["status"] = "running"
    (run / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    lines = (run / "transcript.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    ends = [i for i, line in enumerate(lines) if '"type": "step_end"' in line]
    cut = "".join(lines[: ends[1] + 1]) + lines[ends[1] + 1][:25]
    (run / "transcript.jsonl").write_text(cut, encoding="utf-8")
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "incomplete run (status running, steps up to 1 recorded)" in out
    html = (run / "report" / "report.html").read_text(encoding="utf-8")
    assert "incomplete run (status running, steps up to 1 recorded)" in html
    assert main(["analyze", str(run), "--out", str(tmp_path / "frames")]) == 0
    assert "incomplete run" in capsys.readouterr().out
    # a process killed before it recorded anything: one line, exit 2, no traceback
    (run / "transcript.jsonl").write_text("", encoding="utf-8")
    for command in ("report", "analyze"):
        assert main([command, str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "recorded nothing yet (status running)" in err[0]
        assert "Traceback" not in err[0]


def test_a_corrupt_transcript_line_is_named(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"status": "completed"}', encoding="utf-8")
    (run / "transcript.jsonl").write_text(
        '{"type": "run_start"}\n{"type": "step_end", "st\n{"type": "step_end", "step": 1}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"transcript.jsonl: line 2: not JSON"):
        run_state(run)
