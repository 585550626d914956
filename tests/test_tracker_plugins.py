"""A tracker in the user's own file, named ``file.py:Class`` relative to the scenario."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simworld.analysis.report import build_report
from simworld.analysis.tables import Run
from simworld.cli import main
from simworld.config.scenario import load_scenario
from simworld.errors import ConfigError
from simworld.runs.run import run_scenario
from simworld.trackers.tracker_set import analyze_run, load_tracker

TRACKER = """
class Talkers:
    name = "talkers"

    def __init__(self):
        self.seen = {}

    def observe(self, event):
        if event.get("type") == "message":
            self.seen.setdefault(event["step"], set()).add(event["agent"])

    def rows(self):
        return [{"step": s, "speakers": len(a)} for s, a in sorted(self.seen.items())]
"""


def with_tracker(make_scenario: Callable[..., Path], spec: str) -> Path:
    path = make_scenario({"protocol.steps": 2, "llm.cache": "off"})
    (path.parent / "plugins").mkdir(exist_ok=True)
    (path.parent / "plugins" / "talkers.py").write_text(TRACKER, encoding="utf-8")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.setdefault("trackers", {})["extra"] = [spec]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_file_tracker_runs_live_in_analyze_and_in_the_report(
    make_scenario: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = with_tracker(make_scenario, "plugins/talkers.py:Talkers")
    scenario = load_scenario(path)
    assert scenario.trackers.extra == [f"{path.parent / 'plugins' / 'talkers.py'}:Talkers"]
    run = tmp_path / "out" / "run"
    assert run_scenario(path, out_dir=run).status == "completed"
    frame = pd.read_parquet(run / "trackers" / "talkers.parquet")
    assert list(frame.step) == [1, 2] and (frame.speakers == 8).all()
    monkeypatch.chdir(tmp_path / "out")  # the manifest keeps the absolute path
    assert analyze_run(run, check=True)["talkers"] == "identical"
    assert Run(run).own_frame_names() == ["talkers"]
    assert "Tracker talkers" in build_report(run).read_text(encoding="utf-8")


def test_reading_or_reporting_a_run_never_runs_the_code_it_names(
    make_scenario: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped before its first frames has no trackers/ folder: the report derives
    the built-in frames and leaves the run's own out, saying why; only analyze (which
    rebuilds the run, as resume and replay do) imports the tracker's file."""
    path = with_tracker(make_scenario, "plugins/talkers.py:Talkers")
    marker = tmp_path / "built"  # made whenever a Talkers is built
    built = f"        open({str(marker)!r}, 'a').close()\n        self.seen = {{}}"
    plugin = path.parent / "plugins" / "talkers.py"
    plugin.write_text(TRACKER.replace("        self.seen = {}", built), encoding="utf-8")
    run = tmp_path / "run"
    assert run_scenario(path, out_dir=run).status == "completed" and marker.exists()
    shutil.rmtree(run / "trackers")
    marker.unlink()
    assert main(["report", str(run)]) == 0
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    assert "Tracker talkers" not in page and f"simworld analyze {run} writes them" in page
    with pytest.raises(ConfigError, match=r"talkers\.parquet: not written; simworld analyze"):
        Run(run).frame("talkers")
    assert not Run(run).frame("drift").empty
    assert not marker.exists()
    assert main(["analyze", str(run)]) == 0 and marker.exists()
    assert Run(run).own_frame_names() == ["talkers"]


MEDDLER = """
class Meddler:
    def __init__(self):
        self.messages = 0

    def observe(self, event):
        self.messages += event.pop("type", None) == "message"
        event.pop("agent", None)
        event["text"] = "changed"

    def rows(self):
        return [{"messages": self.messages}]
"""


def test_a_tracker_that_changes_its_events_changes_nothing_else(
    make_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    """Each tracker not built in gets its own copy of every event."""
    path = with_tracker(make_scenario, "plugins/meddler.py:Meddler")
    (path.parent / "plugins" / "meddler.py").write_text(MEDDLER, encoding="utf-8")
    plain = make_scenario({"protocol.steps": 2, "llm.cache": "off"})
    runs = {"with": (path, tmp_path / "with"), "without": (plain, tmp_path / "without")}
    for scenario, run in runs.values():
        assert run_scenario(scenario, out_dir=run).status == "completed"
    meddled, alone = runs["with"][1], runs["without"][1]
    assert pd.read_parquet(meddled / "trackers" / "meddler.parquet").messages.tolist() == [16]
    for name in ("transcript.jsonl", "opinions.parquet", *(
        f"trackers/{f.name}" for f in (alone / "trackers").iterdir()
    )):  # fmt: skip
        assert (meddled / name).read_bytes() == (alone / name).read_bytes(), name


def test_a_missing_tracker_file_is_one_line(
    make_scenario: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = with_tracker(make_scenario, "plugins/nope.py:Talkers")
    with pytest.raises(ConfigError, match=r"trackers\.extra\[0\]: file not found"):
        load_scenario(path)
    out = tmp_path / "never"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    assert not out.exists() and capsys.readouterr().err.count("\n") == 1


def test_a_broken_tracker_file_is_a_config_error(make_scenario: Callable[..., Path]) -> None:
    path = with_tracker(make_scenario, "plugins/talkers.py:Talkers")
    (path.parent / "plugins" / "talkers.py").write_text("def broken(:\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"trackers\.extra"):
        run_scenario(path, out_dir=path.parent / "x" / "run")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("plugins/talkers.py:Nobody", r"trackers\.extra: .*no Nobody in"),
        ("plugins/talkers.py:TRACKED", r"trackers\.extra: .*no class TRACKED in"),
        ("no_such_module_xyz:Talkers", r"trackers\.extra: .*cannot import no_such_module_xyz"),
        ("plugins/talkers.py:Talkers", r"trackers\.extra: .*needs observe\(event\) and rows\(\)"),
    ],
)
def test_a_bad_tracker_class_is_a_config_error(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "plugins").mkdir()
    body = "TRACKED = 1\n\nclass Talkers:\n    pass\n"
    (tmp_path / "plugins" / "talkers.py").write_text(body, encoding="utf-8")
    spec = spec.replace("plugins/", f"{tmp_path}/plugins/")
    with pytest.raises(ConfigError, match=message):
        load_tracker(spec, context=None)  # type: ignore[arg-type]
