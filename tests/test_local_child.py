"""The embedded model in its child process: a real native crash, injected aborts, resume, and
the child stopping with the command (Ctrl-C, kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import gguf_header, gguf_string

from simworld.cli import main
from simworld.llm.providers.local import LocalModelError, build_of, check_model, parse_model
from simworld.llm.providers.local_child import ChildEngine, ModelCrashedError, engine_for
from simworld.llm.providers.local_engine import AMX_FLAGS, Sampling, build_record, cpu_flags

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

THREE_AGENTS = {
    "population.size": 3,
    "network": {"generator": "complete"},
    "topics": [TOPIC],
    "llm.model": MODEL,
}
"""A run of three agents on :data:`TOPIC` with the embedded model."""


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
        {**THREE_AGENTS, "protocol.steps": 1, "llm.max_tokens": 24, "llm.timeout_s": 900}
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
    build = [{"model": MODEL, **build_record(parse_model(MODEL))}]
    assert manifest["model_builds"] == build  # what the crashed child loaded the model with
    monkeypatch.delenv("SIMWORLD_LOCAL_CRASH_AFTER")
    assert main(["resume", str(run), "--quiet"]) == 0
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "completed"
    assert manifest["model_builds"] == build  # the same build answered again: listed once
    assert json.loads((ref / "manifest.json").read_text(encoding="utf-8"))["model_builds"] == build
    # the same run again from its cache: no call reached the model loaded in this process
    monkeypatch.setenv("SIMWORLD_LOCAL_PROCESS", "inline")
    again = tmp_path / "again"
    assert main(["run", str(path), "--out", str(again), "--cache", str(tmp_path / "r.db")]) == 0
    assert json.loads((again / "manifest.json").read_text(encoding="utf-8"))["model_builds"] == []
    for name in SAME:
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name


@pytest.mark.parametrize("mode", ["child", "inline"])
def test_a_model_that_cannot_be_loaded_fails_the_run_in_one_line(
    make_scenario, tmp_path, capfd, fresh_children, monkeypatch, mode
):
    """A GGUF file llama.cpp cannot load (its header reads, it holds no model): the child
    reports the error instead of printing a traceback and dying; the run is ``failed``
    (resuming would fail alike), not ``crashed``, and says why in one line at its first
    call, in the simworld process too (where litellm would have it retried as a connection
    error). A header that does not read is refused before the run."""
    monkeypatch.setenv("SIMWORLD_LOCAL_PROCESS", mode)
    garbled = tmp_path / "garbled.gguf"
    garbled.write_bytes(b"GGUF" + bytes(range(256)) * 16)
    with pytest.raises(LocalModelError, match=r"cannot read .*garbled\.gguf"):
        check_model(f"local/{garbled}")
    broken = tmp_path / "broken.gguf"
    gguf_header(broken, [("general.architecture", 8, gguf_string("llama"))])
    path = make_scenario({**THREE_AGENTS, "llm.model": f"local/{broken}", "protocol.steps": 1})
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run_dir), "--quiet", "--cache-mode", "off"]) == 1
    lines = capfd.readouterr().err.splitlines()  # the child's too
    start = f"simworld: error: run failed: llm.model 'local/{broken}': the embedded model could "
    assert len(lines) == 1 and lines[0].startswith(start + "not be loaded: ValueError: "), lines
    state = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert state["status"] == "failed" and "could not be loaded" in state["error"]
    assert state["totals"]["model_calls"] <= 16  # stopped in the first calls, not retried


@pytest.mark.slow
def test_a_child_killed_mid_call_is_reported_as_likely_out_of_memory(fresh_children):
    """What the kernel's out-of-memory killer does: SIGKILL while calls are running; every
    call in flight fails with the crash."""
    import os
    import signal

    engine = ChildEngine.get(MODEL, parse_model(MODEL))
    futures = [
        engine.submit(f"Tell long story {i}.", preamble="", sampling=Sampling(256, 1.0, i))
        for i in range(3)
    ]
    assert engine.pid is not None
    os.kill(engine.pid, signal.SIGKILL)
    errors = [f.exception(timeout=60) for f in futures]
    assert all(isinstance(e, ModelCrashedError) for e in errors), errors
    assert all("SIGKILL" in str(e) and "likely out of memory" in str(e) for e in errors)
    assert engine.crashed
    with pytest.raises(ModelCrashedError):  # and every later call on it
        engine.generate("Q: Say yes.\nA:", preamble="", sampling=Sampling(4, 0.0, 1))
    # the next run gets a fresh child
    again = ChildEngine.get(MODEL, parse_model(MODEL))
    assert again is not engine and not again.crashed
    out = again.generate("Q: Say yes.\nA:", preamble="", sampling=Sampling(4, 0.0, 1))
    assert out.completion_tokens > 0


@pytest.mark.parametrize("mode", ["child", "inline"])
def test_the_build_that_answers_is_known_once_the_model_is_loaded(
    fresh_children, monkeypatch, mode
):
    """The child sends what it loaded the model with in its ready message; ``inline`` reads
    it in this process. A run's manifest lists it (``model_builds``)."""
    model = MODEL + "&slots=2"  # a config no other test has loaded inline in this process
    monkeypatch.setenv("SIMWORLD_LOCAL_PROCESS", mode)
    assert build_of(model) is None  # not loaded yet
    engine_for(model, parse_model(model))
    assert build_of(model) == build_record(parse_model(model))
    assert build_of("fake/default") is None


@pytest.mark.slow
def test_calls_in_flight_in_the_child_answer_as_inline(fresh_children):
    """Several calls at once over the pipe come back to their own callers, byte-identical
    to the same calls answered by the engine in this process."""
    from simworld.llm.providers.local_batch import load_engine

    prompts = [f"Q: Name a colour, {name}.\nA:" for name in ("Ana", "Bob", "Cy")]
    samplings = [Sampling(8, 0.9, seed) for seed in (1, 2, 3)]
    engine = ChildEngine.get(MODEL, parse_model(MODEL))
    futures = [
        engine.submit(p, preamble="", sampling=s) for p, s in zip(prompts, samplings, strict=True)
    ]
    child = [f.result(timeout=300) for f in futures]
    inline = load_engine(parse_model(MODEL))
    pairs = zip(prompts, samplings, strict=True)
    here = [inline.generate(p, preamble="", sampling=s) for p, s in pairs]
    assert child == here
    assert len({g.text for g in child}) > 1


@pytest.mark.slow
def test_a_cancelled_call_is_stopped_in_the_child(fresh_children):
    """Cancelling a call's future (as a timed-out call does) reaches the child; the calls
    after it answer as inline, and nothing is left waiting."""
    from simworld.llm.providers.local_batch import load_engine

    engine = ChildEngine.get(MODEL, parse_model(MODEL))
    heard = "\n".join(f"- Speaker {i}: remote work gave me {i} free evenings." for i in range(40))
    first = engine.submit(heard + "\nQ: Sum it up.\nA:", preamble="", sampling=Sampling(60, 0.9, 1))
    assert first.cancel()
    prompt, sampling = "Q: Name a colour, Ana.\nA:", Sampling(8, 0.9, 2)
    later = engine.submit(prompt, preamble="", sampling=sampling).result(timeout=300)
    assert first.cancelled() and not engine._calls and engine.stopped == 1
    assert later == load_engine(parse_model(MODEL)).generate(prompt, preamble="", sampling=sampling)


# A simworld process that hands its embedded model 16 calls of about 600 prompt tokens each
# (each prompt different from its first token, so none reuses another's state: a minute or
# more of work for the child on one thread), prints the child's pid, then is killed as
# `kill -9` or the out-of-memory killer would kill it.
_KILLED_WITH_CALLS_QUEUED = """
import os, signal, sys
from simworld.llm.providers.local import parse_model
from simworld.llm.providers.local_child import ChildEngine
from simworld.llm.providers.local_engine import Sampling
model = sys.argv[1]
engine = ChildEngine.get(model, parse_model(model))
heard = "\\n".join(f"- Speaker {i}: remote work gave me {i} free evenings." for i in range(40))
for call in range(16):
    prompt = f"{call}\\n{heard}\\nQ: Sum it up.\\nA:"
    engine.submit(prompt, preamble="", sampling=Sampling(60, 0.9, call))
print(engine.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_the_child_stops_when_the_simworld_process_is_killed():
    """The child sees its pipe close and cancels the calls it was given: it exits within
    seconds instead of answering, to nobody, a minute of queued calls."""
    # the child inherits the script's stdout, so read its one line, not up to end-of-file
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_WITH_CALLS_QUEUED, MODEL],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as script:  # fmt: skip
        assert script.stdout is not None
        pid = int(script.stdout.readline())
        assert script.wait(timeout=60) == -signal.SIGKILL
    deadline = time.monotonic() + 15
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pid), "the child went on with calls nobody was waiting for"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sent", "code", "said"),
    [
        pytest.param(signal.SIGINT, 130, "simworld: interrupted", id="ctrl_c"),
        pytest.param(signal.SIGTERM, 143, "simworld: terminated (SIGTERM)", id="sigterm"),
        pytest.param(signal.SIGHUP, 129, "simworld: terminated (SIGHUP)", id="sighup"),
    ],
)  # fmt: skip
def test_ctrl_c_in_a_terminal_stops_a_run_on_the_embedded_model_in_one_line(
    make_scenario, tmp_path, stop_signals_deliverable, sent, code, said
):
    """A terminal's Ctrl-C goes to the whole foreground process group, the model's child
    included: the command still ends with its one line (exit 130), and the child prints no
    traceback of its own. So does a job scheduler's SIGTERM to the group (exit 143), or a
    closed terminal's SIGHUP (exit 129), which ends the child too: whichever the command
    notices first, the run is interrupted, not crashed."""
    path = make_scenario({**THREE_AGENTS, "protocol.steps": 2})
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "simworld.cli", "run", str(path), "--out", str(run_dir)]
    with subprocess.Popen(
        [*command, "--cache", str(tmp_path / "c.db"), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    ) as proc:  # fmt: skip
        transcript = run_dir / "transcript.jsonl"
        deadline = time.monotonic() + 300
        while b'"llm_call"' not in (transcript.read_bytes() if transcript.is_file() else b""):
            assert proc.poll() is None and time.monotonic() < deadline, "no call was answered"
            time.sleep(0.2)
        os.killpg(proc.pid, sent)  # what the terminal (or the scheduler) does
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == [
        f"{said}; {run_dir} is marked interrupted: simworld resume {run_dir}"
    ]
    assert json.loads((run_dir / "manifest.json").read_text("utf-8"))["status"] == "interrupted"


@pytest.mark.slow
def test_ctrl_c_while_the_child_starts_is_left_to_the_parent(
    fresh_children, stop_signals_deliverable, capfd
):
    """A Ctrl-C in the child's first seconds, while it still imports and has not yet chosen
    to ignore Ctrl-C, neither kills it nor prints its traceback: the signal waits until the
    child ignores it."""
    engine = ChildEngine(MODEL, parse_model(MODEL))  # started, still importing
    try:
        assert engine.pid is not None
        os.kill(engine.pid, signal.SIGINT)
        engine._wait_ready()
        assert not engine.crashed, engine._crash
        out = engine.generate("Q: Say yes.\nA:", preamble="", sampling=Sampling(4, 0.0, 1))
        assert out.completion_tokens > 0
    finally:
        engine.close()
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.slow
def test_sigterm_to_the_child_stops_the_run_as_a_sigterm(make_scenario, tmp_path, fresh_children):
    """The model's child ended by SIGTERM (asked to stop, not crashed): the run stops as on
    the command's own SIGTERM, marked interrupted with that error, after the last step
    it completed."""
    from simworld.runs.run import run_scenario
    from simworld.support.process import Terminated

    def stop_the_child(model) -> None:
        for engine in ChildEngine._instances.values():
            os.kill(engine.pid, signal.SIGTERM)

    run_dir = tmp_path / "run"
    with pytest.raises(Terminated):
        run_scenario(
            make_scenario({**THREE_AGENTS, "protocol.steps": 1}),
            out_dir=run_dir, cache_path=tmp_path / "c.db", before_step=stop_the_child,
        )  # fmt: skip
    manifest = json.loads((run_dir / "manifest.json").read_text("utf-8"))
    assert (manifest["status"], manifest["error"]) == ("interrupted", "terminated (SIGTERM)")
    assert manifest["last_completed_step"] == 0
