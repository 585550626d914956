"""An intervention type of the user's own (``kind: custom``, ``type: path.py:Class``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from simworld.cli import main
from simworld.config.scenario import load_scenario
from simworld.runs.replay import verify_replay
from simworld.runs.run import run_scenario

RUMOUR = """
class Rumour:
    name = "rumour"

    def __init__(self, text, every=2):
        self.text, self.every = text, every

    def apply(self, model, step):
        told = [a for a in model.active_agents() if a.node % self.every == 0]
        for agent in told:
            agent.remember(step=step, kind="observation", speaker="A neighbour",
                           topic="remote_work", text=self.text)
        return {"topic": "remote_work", "text": self.text, "to": [a.key for a in told]}


class NoApply:
    pass


class ASet:
    def apply(self, model, step):
        return {"thing": {1, 2}}
"""


def with_custom(make_scenario: Callable[..., Path], item: dict[str, Any]) -> Path:
    path = make_scenario({"protocol.steps": 2})
    (path.parent / "plugins").mkdir(exist_ok=True)
    (path.parent / "plugins" / "rumour.py").write_text(RUMOUR, encoding="utf-8")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["interventions"] = [{"step": 2, "kind": "custom", **item}]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_custom_intervention_runs_logs_its_event_and_replays(
    make_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    item = {"type": "plugins/rumour.py:Rumour", "params": {"text": "They say so.", "every": 3}}
    path = with_custom(make_scenario, item)
    rumour = load_scenario(path).interventions[0]
    assert rumour.type == f"{path.parent / 'plugins' / 'rumour.py'}:Rumour"  # type: ignore[union-attr]
    run = tmp_path / "out" / "run"
    assert run_scenario(path, out_dir=run).status == "completed"
    lines = (run / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    log = [json.loads(line) for line in lines]
    nodes = {a["agent"]: a["node"] for a in log[0]["agents"]}
    (event,) = [e for e in log if e["type"] == "intervention"]
    assert event["kind"] == "rumour" and event["step"] == 2 and event["text"] == "They say so."
    assert event["to"] and all(nodes[k] % 3 == 0 for k in event["to"])
    frame = pd.read_parquet(run / "trackers" / "interventions.parquet")
    assert list(frame.kind) == ["rumour"] and list(frame.agents) == [len(event["to"])]
    assert verify_replay(run).identical


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"type": "plugins/rumour.py:NoApply"}, "interventions[0].type: "),
        ({"type": "plugins/rumour.py:Rumour"}, "interventions[0].params: "),
        ({"type": "plugins/rumour.py:Rumour", "params": {"text": "x", "colour": 1}}, "params"),
        ({"type": "plugins/gone.py:Rumour"}, "interventions[0].type: file not found"),
        ({"type": "no_class_here"}, "interventions[0].type"),
    ],
)
def test_a_bad_custom_intervention_is_one_line_and_exit_2(
    make_scenario: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    item: dict[str, Any],
    message: str,
) -> None:
    path = with_custom(make_scenario, item)
    out = tmp_path / "never"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert not out.exists() and err.count("\n") == 1 and message in err


def test_a_custom_intervention_whose_event_is_not_json_fails_the_run_in_one_line(
    make_scenario: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = with_custom(make_scenario, {"type": "plugins/rumour.py:ASet"})
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].endswith(
        "apply() made an event of type 'intervention' that is not JSON: Object of type set "
        "is not JSON serializable"
    )
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["status"] == "failed"
