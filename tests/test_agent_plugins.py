"""Agent behaviour from the user's own subclass of PersonaAgent (``population.agent_class``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from simworld.cli import main
from simworld.config.scenario import Topic, load_scenario
from simworld.engine.agent import PersonaAgent
from simworld.engine.model import SocialSimulation
from simworld.errors import ConfigError, PluginError
from simworld.runs.replay import verify_replay
from simworld.runs.run import run_scenario

AGENTS = """
from simworld.engine.agent import PersonaAgent


class Shy(PersonaAgent):
    def speaks(self, topic, step):
        return self.node % 2 == 0

    def addressees(self, listeners, topic, step):
        return listeners[:1]

    def postprocess(self, text, topic, step):
        return "[shy] " + text


class NotAnAgent:
    pass
"""


def with_agents(make_scenario: Callable[..., Path], spec: str, mode: str = "broadcast") -> Path:
    path = make_scenario({"protocol.steps": 2, "protocol.mode": mode})
    (path.parent / "plugins").mkdir(exist_ok=True)
    (path.parent / "plugins" / "shy.py").write_text(AGENTS, encoding="utf-8")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["population"]["agent_class"] = spec
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("mode", ["broadcast", "group"])
def test_an_agent_class_from_the_users_file_shapes_speech(
    make_scenario: Callable[..., Path], tmp_path: Path, mode: str
) -> None:
    path = with_agents(make_scenario, "plugins/shy.py:Shy", mode)
    spec = load_scenario(path).population.agent_class
    assert spec == f"{path.parent / 'plugins' / 'shy.py'}:Shy"
    run = tmp_path / "out" / "run"
    assert run_scenario(path, out_dir=run).status == "completed"
    lines = (run / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    log = [json.loads(line) for line in lines]
    nodes = {a["agent"]: a["node"] for a in log[0]["agents"]}
    messages = [e for e in log if e["type"] == "message"]
    assert messages and all(nodes[e["agent"]] % 2 == 0 for e in messages)
    assert all(len(e["to"]) <= 1 for e in messages)
    assert all(e["text"].startswith("[shy] ") for e in messages)
    calls = [e for e in log if e["type"] == "llm_call" and "[shy]" in json.dumps(e)]
    assert calls == []  # the call log keeps the model's own reply
    assert verify_replay(run).identical


def test_an_agent_class_from_python(make_scenario: Callable[..., Path]) -> None:
    class Silent(PersonaAgent):
        def speaks(self, topic: Topic, step: int) -> bool:
            return False

    with SocialSimulation.from_scenario(make_scenario(), agent_class=Silent) as model:
        assert all(isinstance(a, Silent) for a in model.agents)
        model.step()
        assert model.steps == 1


def test_addressing_a_stranger_is_an_error(make_scenario: Callable[..., Path]) -> None:
    class Rude(PersonaAgent):
        def addressees(
            self, listeners: list[PersonaAgent], topic: Topic, step: int
        ) -> list[PersonaAgent]:
            return [self]

    model = SocialSimulation.from_scenario(make_scenario(), agent_class=Rude)
    with model, pytest.raises(PluginError, match=r"Rude\.addressees: .* not a listener"):
        model.step()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("plugins/nope.py:Shy", "file not found"),
        ("plugins/shy.py:NotAnAgent", "not a simworld.engine.agent.PersonaAgent subclass"),
        ("plugins/shy.py:Missing", "no Missing in"),
        ("no_colon", "population.agent_class"),
    ],
)
def test_a_bad_agent_class_is_one_line_and_exit_2(
    make_scenario: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spec: str,
    message: str,
) -> None:
    path = with_agents(make_scenario, spec)
    with pytest.raises(ConfigError, match=r"population\.agent_class"):
        SocialSimulation.from_scenario(path).close()
    out = tmp_path / "never"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert not out.exists() and err.count("\n") == 1 and message in err
