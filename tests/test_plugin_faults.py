"""A plug-in that breaks: one line naming it, never a traceback; a run it stops is marked
``failed``; a plug-in that cannot be called as simworld will call it is bad input (exit 2,
nothing written)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from simworld.analysis.report import build_report
from simworld.cli import main
from simworld.engine.protocols import Protocol, register_protocol

PLUGINS = """
from simworld.engine.agent import PersonaAgent
from simworld.engine.protocols import Protocol, Turn


class RowsRaise:
    def observe(self, event):
        pass

    def rows(self):
        raise RuntimeError("rows boom")


class NotATable:
    def observe(self, event):
        pass

    def rows(self):
        return [{"a": 1}, {"a": "x"}]


class NoEvent:
    def observe(self):
        pass

    def rows(self):
        return []


class NeedsThreshold:
    def __init__(self, threshold):
        self.threshold = threshold

    def observe(self, event):
        pass

    def rows(self):
        return []


class Counter:
    def __init__(self):
        self.n = 0

    def observe(self, event):
        self.n += 1

    def rows(self):
        return [{"events": self.n}]


class PlanRaises(Protocol):
    def plan(self, model, step, topic):
        raise RuntimeError("plan boom")


class NoTopic(Protocol):
    def plan(self, model, step):
        return []


class Far(Protocol):
    def plan(self, model, step, topic):
        a = model.active_agents()
        far = [x for x in a[1:] if x not in a[0].neighbours()]
        return [[Turn(a[0], "post", far[:1])]]


class NoTemplate(Protocol):
    def plan(self, model, step, topic):
        a = model.active_agents()[0]
        return [[Turn(a, "no_such_template", a.neighbours())]]


class Silent(PersonaAgent):
    def postprocess(self, text, topic, step):
        return None


class PlanNone(Protocol):
    def plan(self, model, step, topic):
        return None


class PlanInts(Protocol):
    def plan(self, model, step, topic):
        return [[1, 2, 3]]


class RunAppendsText(Protocol):
    def run(self, model, record, step, topic):
        record.events.append("something happened")


class RunAppendsUntyped(Protocol):
    def run(self, model, record, step, topic):
        record.events.append({"what": "something happened"})


class RunAppendsASet(Protocol):
    def run(self, model, record, step, topic):
        record.events.append({"type": "tally", "who": {"a", "b"}})


class AddressesNone(PersonaAgent):
    def addressees(self, listeners, topic, step):
        return None


class SpeaksNothing(PersonaAgent):
    def speaks(self):
        return True
"""


def scenario_with(make_scenario: Callable[..., Path], changes: dict[str, object]) -> Path:
    path = make_scenario({"llm.cache": "off", **changes})
    (path.parent / "plugins.py").write_text(PLUGINS, encoding="utf-8")
    return path


def run_cli(path: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["run", str(path), "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        (
            {"trackers.extra": ["plugins.py:RowsRaise"]},
            r"plug-in error \(trackers\.extra\[0\]\): .*plugins\.py, line 11, in rows: "
            r"RuntimeError: rows boom$",
        ),
        (
            {"trackers.extra": ["plugins.py:NotATable"]},
            r"tracker 'not_a_table' \(NotATable in .*plugins\.py\): its rows\(\) do not make a "
            r"table: ArrowInvalid: ",
        ),
        (
            {"protocol.mode": "plugins.py:PlanRaises"},
            r"plug-in error \(protocol\.mode\): .*plugins\.py, line \d+, in plan: "
            r"RuntimeError: plan boom$",
        ),
        (
            {"protocol.mode": "plugins.py:Far"},
            r"protocol 'far': agent \S+ speaks to \S+, who is not its neighbour",
        ),
        (
            {"protocol.mode": "plugins.py:NoTemplate"},
            r"protocol 'no_template': .* uses prompt template 'no_such_template', which "
            r"prompts\.yaml does not have$",
        ),
        (
            {"population.agent_class": "plugins.py:Silent"},
            r"Silent\.postprocess returned NoneType, not the message text \(str\)$",
        ),
        (
            {"protocol.mode": "plugins.py:PlanNone"},
            r"protocol 'plan_none': its plan gave a NoneType; expected a list of conversations",
        ),
        (
            {"protocol.mode": "plugins.py:PlanInts"},
            r"protocol 'plan_ints': its plan gave a turn that is a int; expected a list of ",
        ),
        (
            {"population.agent_class": "plugins.py:AddressesNone"},
            r"AddressesNone\.addressees returned NoneType, not a list of the listeners",
        ),
        (
            {"protocol.mode": "plugins.py:RunAppendsText"},
            r"protocol 'run_appends_text': its run\(\) added an event that is a str, not a "
            r"dict with a 'type'$",
        ),
        (
            {"protocol.mode": "plugins.py:RunAppendsUntyped"},
            r"protocol 'run_appends_untyped': its run\(\) added an event with no 'type' "
            r"\(keys: what\)$",
        ),
        (
            {"protocol.mode": "plugins.py:RunAppendsASet"},
            r"protocol 'run_appends_a_set': its run\(\) added an event of type 'tally' that is not "
            r"JSON: Object of type set is not JSON serializable$",
        ),
    ],
    ids=[
        "rows-raise",
        "not-a-table",
        "plan-raises",
        "far",
        "no-template",
        "postprocess-none",
        "plan-none",
        "plan-ints",
        "addressees-none",
        "run-appends-text",
        "run-appends-untyped",
        "run-appends-set",
    ],
)
def test_a_plugin_that_breaks_during_a_run_fails_it_in_one_line(
    make_scenario: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, object],
    line: str,
) -> None:
    out = tmp_path / "run"
    code, err = run_cli(scenario_with(make_scenario, changes), out, capsys)
    assert code == 1
    assert len(err) == 1, err
    assert err[0].startswith("simworld: error: run failed: ")
    assert re.search(line, err[0]), err[0]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "failed"
    assert manifest["error"] == err[0].removeprefix("simworld: error: run failed: ")


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"trackers.extra": ["plugins.py:Counter", "plugins.py:NoEvent"]},
            "trackers.extra[1]",
            "simworld calls observe(event), but too many positional arguments",
        ),
        (
            {"trackers.extra": ["plugins.py:NeedsThreshold"]},
            "trackers.extra[0]",
            "could not be built: TypeError: NeedsThreshold.__init__() missing 1 required "
            "positional argument: 'threshold'",
        ),
        (
            {"protocol.mode": "plugins.py:NoTopic"},
            "protocol.mode",
            "simworld calls plan(model, step, topic), but too many positional arguments",
        ),
        (
            {"population.agent_class": "plugins.py:SpeaksNothing"},
            "population.agent_class",
            "simworld calls speaks(topic, step), but too many positional arguments",
        ),
    ],
    ids=["tracker-signature", "tracker-constructor", "plan-signature", "speaks-signature"],
)
def test_a_plugin_simworld_cannot_call_is_bad_input(
    make_scenario: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, object],
    field: str,
    message: str,
) -> None:
    path = scenario_with(make_scenario, changes)
    code, err = run_cli(path, tmp_path / "run", capsys)
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith(f"simworld: error: {path}: {field}: ")
    assert err[0].endswith(message)
    assert not (tmp_path / "run").exists()


def test_analyze_with_a_broken_tracker_is_one_line_and_the_report_reads_the_frames(
    make_scenario: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = scenario_with(make_scenario, {"trackers.extra": ["plugins.py:Counter"]})
    out = tmp_path / "run"
    assert run_cli(path, out, capsys)[0] == 0
    plugins = path.parent / "plugins.py"
    plugins.write_text(PLUGINS.replace("self.n += 1", "self.n += 1 / 0"), encoding="utf-8")
    for name in [m for m in sys.modules if m.startswith("simworld_plugin_plugins_")]:
        monkeypatch.delitem(sys.modules, name)  # as a new process would, import it again
    assert main(["analyze", str(out), "--check"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert "in observe: ZeroDivisionError: division by zero" in err[0]
    plugins.unlink()  # the frames on disk are all a report needs
    assert "Tracker counter" in build_report(out).read_text(encoding="utf-8")


def test_register_protocol_takes_an_instance() -> None:
    class Mine(Protocol):
        name = "mine_for_register_test"

    with pytest.raises(TypeError, match="a Protocol instance, not a class"):
        register_protocol(Mine)  # type: ignore[arg-type]


def test_a_plugin_that_fails_as_it_is_imported_is_bad_input(
    make_scenario: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_scenario({"llm.cache": "off", "trackers.extra": ["broken.py:Anything"]})
    (path.parent / "broken.py").write_text("x = 1\nraise RuntimeError('at import')\n")
    code, err = run_cli(path, tmp_path / "run", capsys)
    assert code == 2
    assert err == [
        f"simworld: error: {path}: trackers.extra[0]: {path.parent / 'broken.py'}:Anything: "
        f"importing {path.parent / 'broken.py'} failed at {path.parent / 'broken.py'}, line 2: "
        "RuntimeError: at import"
    ]
    assert not (tmp_path / "run").exists()
