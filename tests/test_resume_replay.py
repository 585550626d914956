"""Resume after a crash, verified replay and counterfactual branches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import interrupted_run

from simworld.cli import main, parse_assignments
from simworld.errors import ConfigError, ResumeError
from simworld.runs.replay import branch_run, verify_replay
from simworld.runs.run import resume_run, run_scenario

SAME = ("transcript.jsonl", "opinions.parquet")


def step_ends(run_dir: Path) -> int:
    path = run_dir / "transcript.jsonl"
    if not path.exists():
        return 0
    return sum('"type": "step_end"' in line for line in path.read_text().splitlines())


def assert_same_outputs(a: Path, b: Path) -> None:
    frames = sorted(p.relative_to(a) for p in (a / "trackers").glob("*.parquet"))
    assert {f.stem for f in frames} >= {"drift", "population", "conformity", "statements"}
    for name in (*SAME, *frames):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_kill_9_then_resume_is_identical(make_scenario, tmp_path):
    path = make_scenario(
        {"protocol.steps": 8, "llm.model": "fake/default?latency_ms=40", "llm.concurrency": 4}
    )
    reference = run_scenario(path, out_dir=tmp_path / "ref", cache_path=tmp_path / "ref.db")
    assert reference.status == "completed"

    run_dir, cache = tmp_path / "crashed", tmp_path / "crash.db"
    cmd = [
        sys.executable,
        "-m",
        "simworld.cli",
        "run",
        str(path),
        "--out",
        str(run_dir),
        "--cache",
        str(cache),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while step_ends(run_dir) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    # stderr ends once every process writing to it has exited: the run, and any helper that
    # outlived it (multiprocessing's resource tracker, which reports leaked semaphores)
    _, err = proc.communicate(timeout=60)
    assert "leaked" not in err, f"the killed run left a warning in the terminal: {err}"
    done = step_ends(run_dir)
    assert 4 <= done < 9, "the run must be killed part-way"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running"

    result = resume_run(run_dir)
    assert result.status == "completed"
    assert_same_outputs(tmp_path / "ref", run_dir)
    # every call of the completed steps (probes at step 0 included) came from the cache
    per_step = 8 + 8 * 2  # 8 posts + 8 agents x 2 topics probed
    assert result.accounting.cache_hits >= 8 * 2 + (done - 1) * per_step
    assert result.accounting.model_calls < reference.accounting.model_calls
    assert json.loads((run_dir / "manifest.json").read_text())["resumed"] == 1


def test_interrupted_in_process_resume_and_complete_run_refused(make_scenario, tmp_path):
    path = make_scenario({"protocol.steps": 5})
    run_scenario(path, out_dir=tmp_path / "ref", cache_path=tmp_path / "ref.db")
    interrupted_run(path, tmp_path / "run", at_step=3, cache_path=tmp_path / "c.db")
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "interrupted"
    assert resume_run(tmp_path / "run").status == "completed"
    assert_same_outputs(tmp_path / "ref", tmp_path / "run")
    with pytest.raises(ResumeError, match="already complete"):
        resume_run(tmp_path / "run")


def test_resume_detects_a_transcript_it_cannot_reproduce(make_scenario, tmp_path):
    path = make_scenario({"protocol.steps": 4})
    run_dir = interrupted_run(path, tmp_path / "run", at_step=2, cache_path=tmp_path / "c.db")
    transcript = run_dir / "transcript.jsonl"
    transcript.write_text(transcript.read_text().replace("Agree", "Disagree", 1))
    with pytest.raises(ResumeError, match="does not reproduce"):
        resume_run(run_dir)


def test_replay_verifies_identical_with_zero_model_calls(make_scenario, tmp_path, capsys):
    path = make_scenario({"protocol.mode": "pairs"})
    run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    report = verify_replay(tmp_path / "run", out_dir=tmp_path / "again")
    assert report.identical and report.result.accounting.model_calls == 0
    assert main(["replay", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "identical" in out
    temporary = ", replayed in a temporary folder (--out keeps it)"  # removed by now
    assert out.splitlines()[0] == f"run        {tmp_path / 'run'}{temporary}"


def test_replay_reports_the_first_difference(make_scenario, tmp_path, capsys):
    path = make_scenario()
    run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    transcript = tmp_path / "run" / "transcript.jsonl"
    lines = transcript.read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if '"type": "message"' in line)
    event = json.loads(lines[n])
    event["text"] = "tampered"
    lines[n] = json.dumps(event, sort_keys=True)
    transcript.write_text("\n".join(lines) + "\n")
    assert main(["replay", str(tmp_path / "run"), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f'transcript.jsonl line {n + 1} (message): text: recorded "tampered"' in out


def test_branch_reuses_everything_before_the_step(make_scenario, tmp_path):
    path = make_scenario({"protocol.steps": 4})
    parent = run_scenario(path, out_dir=tmp_path / "parent", cache_path=tmp_path / "c.db")
    # as if the parent's calls had been answered by the embedded model on some build
    built = tmp_path / "parent" / "manifest.json"
    build = {"model": "local/gemma3-270m", "llama_cpp_python": "0.3.36", "compiled_for": ["AVX2"]}
    built.write_text(json.dumps({**json.loads(built.read_text()), "model_builds": [build]}))
    branch = branch_run(
        tmp_path / "parent",
        from_step=3,
        overrides={"protocol.instruction": "Be stubborn and never change your mind."},
    )
    assert branch.status == "completed"
    assert branch.run_dir == tmp_path / "parent-branch3"
    parent_lines = (tmp_path / "parent" / "transcript.jsonl").read_text().splitlines()
    branch_lines = (branch.run_dir / "transcript.jsonl").read_text().splitlines()
    cut = [i for i, line in enumerate(parent_lines) if '"type": "step_end"' in line][2]
    assert branch_lines[: cut + 1] == parent_lines[: cut + 1]  # steps 0, 1, 2 identical
    assert branch_lines[cut + 1 :] != parent_lines[cut + 1 :]
    # steps 1-2 replayed from the cache, steps 3-4 new
    assert 0 < branch.accounting.model_calls < parent.accounting.model_calls
    manifest = json.loads((branch.run_dir / "manifest.json").read_text())
    assert manifest["branch"]["from_step"] == 3
    assert manifest["scenario"]["protocol"]["instruction"].startswith("Be stubborn")
    assert manifest["model_builds"] == [build]  # what answered the steps it replays


def test_a_branch_of_the_current_directory_sits_beside_it(make_scenario, tmp_path, monkeypatch):
    run_scenario(make_scenario(), out_dir=tmp_path / "p", cache_path=tmp_path / "c.db")
    monkeypatch.chdir(tmp_path / "p")
    overrides = {"protocol.instruction": "Be brief."}
    branch = branch_run(".", from_step=2, overrides=overrides, progress=False)
    assert branch.status == "completed" and branch.run_dir == tmp_path / "p-branch2"


def test_branch_refuses_changing_who_is_simulated(make_scenario, tmp_path):
    run_scenario(make_scenario(), out_dir=tmp_path / "p", cache_path=tmp_path / "c.db")
    with pytest.raises(ConfigError, match="cannot change in a branch"):
        branch_run(tmp_path / "p", from_step=2, overrides={"seed": 3})
    with pytest.raises(ConfigError, match=r"memory\.store: cannot change"):
        branch_run(tmp_path / "p", from_step=2, overrides={"memory.store": "chroma"})
    with pytest.raises(ConfigError, match=r"protocol\.steps"):
        branch_run(tmp_path / "p", from_step=2, overrides={"protocol.steps": "many"})
    assert main(["replay", str(tmp_path / "p"), "--from-step", "2", "--set", "seed=3"]) == 2
    assert not (tmp_path / "p-branch2").exists()


@pytest.mark.parametrize(
    ("overrides", "from_step", "line"),
    [
        ({"llm.model": "nosuchprovider/x"}, 2, "--set: llm.model: 'nosuchprovider/x': no provider"),
        ({"llm.model": "openai/gpt-4o-mini"}, 2, "--set: llm.model: environment variable "),
        ({"prompts": {"no_such_template": "x"}}, 2, "--set: prompts"),
        ({"protocol.mode": "nofile.py:Foo"}, 2, "--set: protocol.mode: nofile.py:Foo: cannot"),
        ({"protocol.steps": 2}, 3, "--set: protocol.steps: 2 ends before --from-step 3"),
        (
            {"interventions": [{"step": 1, "kind": "remove", "agents": ["p0"]}]},
            3,
            "--set: interventions[0].step: step 1 is before --from-step 3",
        ),
    ],
    ids=["unknown-provider", "no-key", "prompt", "protocol", "steps", "intervention-too-early"],
)
def test_a_bad_branch_is_refused_before_anything_is_written(
    make_scenario, tmp_path, capsys, monkeypatch, overrides, from_step, line
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = make_scenario({"protocol.steps": 3})
    parent = run_scenario(path, out_dir=tmp_path / "p", cache_path=tmp_path / "c.db")
    assert parent.status == "completed"
    if "interventions" in overrides:  # an agent the parent has
        first = pd.read_parquet(tmp_path / "p" / "agents.parquet")["agent"][0]
        overrides["interventions"][0]["agents"] = [first]
    with pytest.raises(ConfigError) as info:
        branch_run(tmp_path / "p", from_step=from_step, overrides=overrides)
    assert str(info.value).startswith(line), info.value
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["c.db", "p", path.name])


def test_a_branch_of_a_branch_or_beyond_an_unfinished_parent_is_refused(make_scenario, tmp_path):
    path = make_scenario({"protocol.steps": 3})
    run_scenario(path, out_dir=tmp_path / "p", cache_path=tmp_path / "c.db")
    branch_run(tmp_path / "p", from_step=2, overrides={"protocol.instruction": "Be brief."})
    with pytest.raises(ConfigError, match=r"p-branch2: is a branch: branch its parent \("):
        branch_run(tmp_path / "p-branch2", from_step=3, overrides={})
    manifest = tmp_path / "p" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "status": "interrupted", "last_completed_step": 1}))
    with pytest.raises(ConfigError, match="recorded steps up to 1: branch from step 2 or earlier"):
        branch_run(tmp_path / "p", from_step=3, overrides={})
    assert branch_run(tmp_path / "p", from_step=2, overrides={}).status == "completed"


def test_set_values_are_yaml_scalars_but_off_stays_a_string():
    parsed = parse_assignments(
        ["llm.cache=off", "llm.temperature=0.5", "llm.probe_logprobs=false", "protocol.steps=3"]
    )
    assert parsed == {
        "llm.cache": "off",
        "llm.temperature": 0.5,
        "llm.probe_logprobs": False,
        "protocol.steps": 3,
    }
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignments(["no-equals-sign"])


def test_set_text_is_kept_as_typed_where_yaml_would_change_it():
    parsed = parse_assignments(
        [
            "protocol.instruction=Be kind to user #1 and say hi",
            "a=Remember: be brief",
            "b=2024-01-01",
            "c=3 # three",
            "d=[x.py:A, y.py:B]",
            'e="quoted #x"',
            "f=null",
        ]
    )
    assert parsed == {
        "protocol.instruction": "Be kind to user #1 and say hi",
        "a": "Remember: be brief",
        "b": "2024-01-01",
        "c": "3 # three",
        "d": ["x.py:A", "y.py:B"],
        "e": "quoted #x",
        "f": None,
    }
    with pytest.raises(ConfigError, match=r"--set: g=\[x: bad value"):
        parse_assignments(["g=[x"])


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("010", r"reads 010 as a number in base 8 \(8\)"),
        ("1:30", r"reads 1:30 as a number in base 60 \(90\)"),
    ],
)
def test_a_number_yaml_would_read_in_another_base_is_refused(typed, problem):
    with pytest.raises(ConfigError, match=rf"--set: seed={typed}: YAML {problem}"):
        parse_assignments([f"seed={typed}"])
    assert parse_assignments(["seed=007", "a='010'", "b=0x10"]) == {"seed": 7, "a": "010", "b": 16}


def test_an_unfinished_run_is_not_replayed(make_scenario, tmp_path, capsys):
    run_dir = interrupted_run(make_scenario({"protocol.steps": 3}), tmp_path / "run", at_step=2)
    assert main(["replay", str(run_dir), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"simworld: error: {run_dir}: only a finished run can be replayed (status interrupted); "
        f"if it stopped, continue it first: simworld resume {run_dir}\n"
    )


@pytest.mark.parametrize("recorded", ["absolute", "relative (older runs)"])
def test_resume_finds_the_cache_from_any_directory(make_scenario, tmp_path, monkeypatch, recorded):
    path = make_scenario({"protocol.steps": 3})
    started = tmp_path / "started_here"
    started.mkdir()
    monkeypatch.chdir(started)
    interrupted_run(path, Path("outputs/run"), at_step=2, cache_path=Path("outputs/c.sqlite"))
    run_dir = started / "outputs" / "run"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["cache"]["path"] == str(started / "outputs" / "c.sqlite")
    if recorded != "absolute":  # as runs recorded it before: relative to where they started
        manifest["cache"]["path"] = "outputs/c.sqlite"
        (run_dir / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    assert resume_run(run_dir).status == "completed"


def test_set_names_a_list_item_by_its_index(make_scenario, tmp_path, capsys):
    from simworld.config.scenario import load_scenario

    path = make_scenario()
    scenario = load_scenario(path, {"topics.0.statement": "Cats are better than dogs."})
    assert scenario.topics[0].statement == "Cats are better than dogs."
    assert len(scenario.topics) == len(load_scenario(path).topics)
    assert main(["run", str(path), "--set", "topics.9.id=x", "--out", str(tmp_path / "r")]) == 2
    n = len(scenario.topics)
    assert capsys.readouterr().err == (
        f"simworld: error: {path}: topics.9.id: topics is a list of {n}: name an item by its "
        f"index, 0 to {n - 1}\n"
    )
