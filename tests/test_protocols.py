"""Interaction protocols as strategy objects: the shipped modes and a user's own class."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import build_model, interrupted_run

from simworld.cli import main
from simworld.config.scenario import load_scenario
from simworld.engine import protocols
from simworld.engine.model import SocialSimulation
from simworld.engine.protocols import PROTOCOLS, Protocol, register_protocol, resolve_protocol
from simworld.errors import ConfigError
from simworld.runs.replay import verify_replay
from simworld.runs.run import run_scenario

EVENS = """
from simworld.engine.protocols import Protocol, Turn


class Evens(Protocol):
    name = "evens"

    def plan(self, model, step, topic):
        return [
            [Turn(a, "post", a.neighbours())] for a in model.active_agents() if a.node % 2 == 0
        ]


class NotOne:
    pass
"""


def with_protocol(make_scenario: Callable[..., Path], spec: str) -> Path:
    path = make_scenario({"protocol.steps": 2})
    (path.parent / "plugins").mkdir(exist_ok=True)
    (path.parent / "plugins" / "evens.py").write_text(EVENS, encoding="utf-8")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["protocol"]["mode"] = spec
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("mode", ["broadcast", "pairs", "group", "asch"])
def test_the_shipped_modes_are_registered_protocol_instances(mode: str) -> None:
    assert isinstance(PROTOCOLS[mode], Protocol) and PROTOCOLS[mode].name == mode
    assert resolve_protocol(mode) is PROTOCOLS[mode]


def test_a_model_runs_the_protocol_its_scenario_names(make_scenario: Callable[..., Path]) -> None:
    model = build_model(make_scenario({"protocol.mode": "pairs"}))
    try:
        assert model.protocol is PROTOCOLS["pairs"]
    finally:
        model.close()


def test_a_protocol_from_the_users_file_runs_and_replays(
    make_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    path = with_protocol(make_scenario, "plugins/evens.py:Evens")
    assert load_scenario(path).protocol.mode == f"{path.parent / 'plugins' / 'evens.py'}:Evens"
    run = tmp_path / "out" / "run"
    assert run_scenario(path, out_dir=run).status == "completed"
    log = events(run)
    nodes = {a["agent"]: a["node"] for a in log[0]["agents"]}
    messages = [e for e in log if e["type"] == "message"]
    assert {e["step"] for e in messages} == {1, 2}
    assert messages and all(nodes[e["agent"]] % 2 == 0 for e in messages)
    assert {e["mode"] for e in messages} == {"evens"}
    talks = [e for e in log if e["type"] == "conversation"]
    assert len(talks) == len(messages) and {e["mode"] for e in talks} == {"evens"}
    assert verify_replay(run).identical


def test_a_protocol_by_module_name(
    make_scenario: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = with_protocol(make_scenario, "evens:Evens")
    monkeypatch.syspath_prepend(str(path.parent / "plugins"))
    with SocialSimulation.from_scenario(path) as model:
        assert type(model.protocol).__name__ == "Evens"


def test_a_protocol_registered_from_python(
    make_scenario: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocols, "PROTOCOLS", dict(PROTOCOLS))

    class Quiet(Protocol):
        def plan(self, model, step, topic):  # type: ignore[no-untyped-def]
            return []

    quiet = register_protocol(Quiet())
    with pytest.raises(ValueError, match="already taken"):
        register_protocol(Quiet())
    with pytest.raises(ValueError, match="already taken"):
        register_protocol(type("Pairs", (Protocol,), {"name": "pairs"})())
    with SocialSimulation.from_scenario(make_scenario({"protocol.mode": "quiet"})) as model:
        assert model.protocol is quiet
        model.step()
        assert model.running


def test_a_name_registered_in_another_process_says_what_to_do(
    make_scenario: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Quiet(Protocol):
        def plan(self, model, step, topic):  # type: ignore[no-untyped-def]
            return []

    with monkeypatch.context() as registered:
        registered.setattr(protocols, "PROTOCOLS", dict(PROTOCOLS))
        register_protocol(Quiet())
        scenario = make_scenario({"protocol.mode": "quiet", "protocol.steps": 3})
        run_scenario(scenario, out_dir=tmp_path / "done", cache_path=tmp_path / "c.db")
        interrupted_run(scenario, tmp_path / "cut", at_step=2)
    # a later process (replay, resume) never ran register_protocol
    assert "quiet" not in protocols.PROTOCOLS
    for argv in (["replay", str(tmp_path / "done"), "--quiet"], ["resume", str(tmp_path / "cut")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "protocol.mode" in err and "'quiet'" in err
        assert "register_protocol" in err and "path.py:Class" in err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch", r"protocol\.mode: unknown protocol 'nosuch'"),
        ("plugins/nope.py:Evens", r"protocol\.mode: file not found"),
        ("plugins/evens.py:NotOne", r"protocol\.mode: .*not a simworld"),
        ("plugins/evens.py:Missing", r"protocol\.mode: .*no Missing in"),
        ("not a name", r"protocol\.mode"),
    ],
)
def test_a_bad_protocol_is_one_line_and_exit_2(
    make_scenario: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spec: str,
    message: str,
) -> None:
    path = with_protocol(make_scenario, spec)
    with pytest.raises(ConfigError, match=message), SocialSimulation.from_scenario(path):
        pass
    out = tmp_path / "never"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert not out.exists() and err.count("\n") == 1 and "protocol.mode" in err
