"""The embedded model in its child process: a real native crash, injected aborts, resume."""

from __future__ import annotations

import json

import pytest

from simworld.cli import main
from simworld.llm.providers.local import parse_model
from simworld.llm.providers.local_child import ChildEngine, ModelCrashedError
from simworld.llm.providers.local_engine import AMX_FLAGS, Sampling, cpu_flags

# One thread: on a shared 2-core host two spinning llama.cpp threads crawl.
MODEL = "local/gemma3-270m?threads=1"
SAME = ("transcript.jsonl", "opinions.parquet")
TOPIC = {
    "id": "remote_work",
    "statement": "Companies should let employees work from home as much as they want.",
    "scale": {
        "type": "likert",
        "labels": ["Strongly disagree", "Disagree", "Neutral", "Agree", "Strongly agree"],
    },
}


@pytest.fixture
def fresh_children():
    """No child left from another test (each reads its crash setting when it starts)."""
    ChildEngine.close_all()
    yield
    ChildEngine.close_all()


@pytest.mark.skipif(
    not AMX_FLAGS & cpu_flags(), reason="the extra buffer types crash only on CPUs with AMX"
)
def test_a_real_segfault_is_a_crash_error_naming_the_model(fresh_children):
    """On an AMX host, forcing llama.cpp's extra buffer types segfaults on the first decode
    (the crash of issue 15); in the child it is an error, and this process lives on."""
    model = MODEL + "&extra_bufts=on"
    engine = ChildEngine.get(model, parse_model(model))
    with pytest.raises(ModelCrashedError, match=r"local/gemma3-270m.*SIGSEGV"):
        engine.generate("Hello", preamble="", sampling=Sampling(4, 0.0, 1))
    with pytest.raises(ModelCrashedError):  # and every later call on it
        engine.generate("Hello", preamble="", sampling=Sampling(4, 0.0, 1))


@pytest.mark.slow
def test_abort_in_the_child_then_resume_matches_an_inline_run(
    make_scenario, tmp_path, monkeypatch, fresh_children, capsys
):
    path = make_scenario(
        {
            "population.size": 3,
            "network": {"generator": "complete"},
            "topics": [TOPIC],
            "protocol.steps": 1,
            "llm.model": MODEL,
            "llm.max_tokens": 24,
            "llm.timeout_s": 900,
        }
    )
    ref = tmp_path / "inline"
    monkeypatch.setenv("SIMWORLD_LOCAL_PROCESS", "inline")
    assert main(["run", str(path), "--out", str(ref), "--cache", str(tmp_path / "r.db")]) == 0
    # in the child, which aborts on its sixth call: step 0 (3 probes) is done, step 1 is not
    monkeypatch.setenv("SIMWORLD_LOCAL_PROCESS", "child")
    monkeypatch.setenv("SIMWORLD_LOCAL_CRASH_AFTER", "5")
    run = tmp_path / "child"
    args = ["run", str(path), "--out", str(run), "--cache", str(tmp_path / "c.db"), "--quiet"]
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "llm.model 'local/gemma3-270m?threads=1': the embedded model crashed" in err[0]
    assert "SIGABRT" in err[0] and "(step 0 completed)" in err[0]
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["status"], manifest["last_completed_step"]) == ("crashed", 0)
    monkeypatch.delenv("SIMWORLD_LOCAL_CRASH_AFTER")
    assert main(["resume", str(run), "--quiet"]) == 0
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "completed"
    for name in SAME:
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name


def test_a_child_killed_mid_call_is_reported_as_likely_out_of_memory(fresh_children):
    """What the kernel's out-of-memory killer does: SIGKILL while the call is running."""
    import os
    import signal
    import threading

    engine = ChildEngine.get(MODEL, parse_model(MODEL))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            engine.generate("Tell a long story.", preamble="", sampling=Sampling(256, 1.0, 3))
        except ModelCrashedError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    assert engine.pid is not None
    os.kill(engine.pid, signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert "SIGKILL" in str(errors[0]) and "likely out of memory" in str(errors[0])
    assert engine.crashed
    # the next run gets a fresh child
    again = ChildEngine.get(MODEL, parse_model(MODEL))
    assert again is not engine and not again.crashed
    out = again.generate("Q: Say yes.\nA:", preamble="", sampling=Sampling(4, 0.0, 1))
    assert out.completion_tokens > 0
