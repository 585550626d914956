"""The public face (``import simworld as sw``) and the Mesa conventions users reach for."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mesa
import pytest

import simworld as sw
from simworld.cli import main

PUBLIC = [
    "ConfigError",
    "Gateway",
    "LiteLLMModel",
    "PersonaAgent",
    "PluginError",
    "Run",
    "RunResult",
    "RunStatus",
    "Scenario",
    "SimworldError",
    "SocialSimulation",
    "StepRecord",
    "Tracker",
    "TrackerSet",
    "analysis",
    "analyze_run",
    "branch_run",
    "build_report",
    "load_scenario",
    "measures",
    "read_transcript",
    "resume_run",
    "run_scenario",
    "run_sweep",
    "verify_replay",
]


def test_the_namespace_is_pinned() -> None:
    assert sw.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(sw, name) is not None
    assert set(PUBLIC) <= set(dir(sw))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = sw.nothing_here  # type: ignore[attr-defined]


def test_names_are_the_package_objects() -> None:
    from simworld.engine.model import SocialSimulation
    from simworld.runs.run import run_scenario

    assert sw.SocialSimulation is SocialSimulation and sw.run_scenario is run_scenario


def test_import_simworld_is_cheap() -> None:
    code = (
        "import sys, simworld; "
        "print([m for m in ('litellm', 'pandas', 'mesa', 'networkx', 'pydantic', 'pyarrow') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_model_from_a_scenario_steps_like_a_mesa_model(
    make_scenario: Callable[..., Path],
) -> None:
    path = make_scenario({"protocol.steps": 2, "protocol.probe_every": 1})
    scenario = sw.load_scenario(path)
    with sw.SocialSimulation.from_scenario(scenario) as model:
        assert isinstance(model.agents, mesa.agent.AgentSet) and len(model.agents) == 8
        assert model.scenario.llm.cache == "off"  # no cache given: nothing cached
        steps = 0
        while model.running:
            model.step()
            steps += 1
        assert steps == 2 and model.steps == 2 and not model.running
        assert len(model.agents.select(lambda a: a.active)) == 8
        assert sorted(model.agents.get("key")) == sorted(a.key for a in model.population)
        table = model.datacollector.get_model_vars_dataframe()
        assert list(table["step"]) == [0, 1, 2]  # baseline = step 0, then one row a step
        agents = model.datacollector.get_agent_vars_dataframe()
        assert sorted(set(agents.index.get_level_values("Step"))) == [0, 1, 2]
        baseline = agents.xs(0, level="Step").set_index("agent")["opinion:remote_work"]
        assert len(baseline) == 8 and baseline.notna().all()
    assert model._loop.is_closed()


def test_from_scenario_takes_a_path_and_overrides(make_scenario: Callable[..., Path]) -> None:
    with sw.SocialSimulation.from_scenario(make_scenario(), {"protocol.steps": 1}) as model:
        model.step()
        assert not model.running
    with pytest.raises(sw.SimworldError, match=r"llm\.model 'local/nonsense'"):
        sw.SocialSimulation.from_scenario(make_scenario(), {"llm.model": "local/nonsense"})
    with pytest.raises(sw.ConfigError, match=r"protocol\.steps"):
        sw.SocialSimulation.from_scenario(make_scenario(), {"protocol.steps": -1})


def test_a_backend_of_ones_own_takes_any_model_string(make_scenario: Callable[..., Path]) -> None:
    """The model string is checked against litellm's providers only for the default backend: a
    lab's own backend may name its model as it likes (here it answers through the fake
    provider)."""
    import dataclasses

    from simworld.llm.types import Completion, LanguageModel, LLMRequest

    class LabModel(LanguageModel):
        def __init__(self) -> None:
            self.inner = sw.LiteLLMModel(workers=0)
            self.models: set[str] = set()

        async def complete(
            self, request: LLMRequest, *, attempt: int, timeout_s: float, transient: int = 0
        ) -> Completion:
            self.models.add(request.model)
            faked = dataclasses.replace(request, model="fake/default")
            return await self.inner.complete(
                faked, attempt=attempt, timeout_s=timeout_s, transient=transient
            )

    changes = {"protocol.steps": 1, "llm.model": "our-lab/model-v1"}
    with pytest.raises(sw.ConfigError, match=r"llm\.model: 'our-lab/model-v1'"):
        sw.SocialSimulation.from_scenario(make_scenario(), changes)
    backend = LabModel()
    with sw.SocialSimulation.from_scenario(make_scenario(), changes, backend=backend) as model:
        model.step()
    assert backend.models == {"our-lab/model-v1"}


def test_run_scenario_takes_a_scenario_object(
    make_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_scenario({"protocol.steps": 1})
    from_file = sw.run_scenario(path, out_dir=tmp_path / "a" / "run")
    from_object = sw.run_scenario(
        sw.load_scenario(path), overrides={"seed": 11}, out_dir=tmp_path / "b" / "run"
    )
    assert from_file.status == from_object.status == sw.RunStatus.COMPLETED
    transcript = "transcript.jsonl"
    a = (from_file.run_dir / transcript).read_bytes()
    assert a == (from_object.run_dir / transcript).read_bytes()
    manifest = json.loads((from_object.run_dir / "manifest.json").read_text())
    assert manifest["scenario_file"] == "<scenario>" and manifest["status"] == "completed"


def test_cli_run_set(make_scenario: Callable[..., Path], tmp_path: Path) -> None:
    path = str(make_scenario())
    out = tmp_path / "x" / "run"
    assert main(["run", path, "--set", "protocol.steps=1", "--out", str(out), "--quiet"]) == 0
    scenario = json.loads((out / "manifest.json").read_text())["scenario"]
    assert scenario["protocol"]["steps"] == 1
    out2 = tmp_path / "y" / "run"
    args = ["run", path, "--set", "protocol.steps=1", "--steps", "2", "--out", str(out2)]
    assert main([*args, "--quiet"]) == 0  # the named option wins
    assert json.loads((out2 / "manifest.json").read_text())["scenario"]["protocol"]["steps"] == 2


def test_cli_run_bad_set(make_scenario: Callable[..., Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "z" / "run"
    code = main(["run", str(make_scenario()), "--set", "protocol.steps", "--out", str(out)])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err.count("\n") == 1
    code = main(["run", str(make_scenario()), "--set", "protocol.nope=1", "--out", str(out)])
    assert code == 2 and not out.exists()
    capsys.readouterr()
    # a character YAML's reader refuses (its error has no ``problem``): one line, no traceback
    code = main(["run", str(make_scenario()), "--set", "name=a\x07", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "name" in err and "special characters" in err


def test_the_python_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "python.md").read_text(encoding="utf-8")
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "scenarios").symlink_to(root / "scenarios")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(code, "docs/python.md", "exec"), scope)
    assert list(scope["population"]["step"]) == [0, 1, 2]
    assert len(scope["speakers"]) == 30 and not scope["drift"].empty
    assert (tmp_path / "outputs" / "opinion_exchange").is_dir()


def test_readers_take_a_str_and_refuse_what_is_not_a_run(
    make_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert sw.run_scenario(make_scenario(), out_dir=out).status == "completed"
    assert len(sw.Run(str(out)).frame("drift")) > 0  # type: ignore[arg-type]
    assert sw.read_transcript(str(out))[0]["type"] == "run_start"
    with pytest.raises(sw.ConfigError, match=r"not a run directory \(give the run directory"):
        sw.read_transcript(out / "transcript.jsonl")
    with pytest.raises(sw.ConfigError, match=r"not a run directory \(no transcript\)"):
        sw.read_transcript(tmp_path)


def test_stepping_a_finished_or_closed_model_says_so(make_scenario: Callable[..., Path]) -> None:
    model = sw.SocialSimulation.from_scenario(make_scenario({"protocol.steps": 1}))
    with model:
        model.step()
        assert not model.running
        with pytest.raises(RuntimeError, match=r"the run is over \(its steps are done"):
            model.step()
    with pytest.raises(RuntimeError, match="the model is closed"):
        model.step()


def test_an_unknown_frame_names_the_frames(
    make_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert sw.run_scenario(make_scenario(), out_dir=out).status == "completed"
    with pytest.raises(KeyError, match="no frame 'nosuch'; the frames: drift, population, "):
        sw.Run(out).frame("nosuch")
