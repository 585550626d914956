"""The HTML report: labelled figures, self-contained page, and a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import yaml
from conftest import BASE_SCENARIO, deep_update
from PIL import Image

from simworld.analysis.report import REPORT_DIR, REPORT_FILE, build_report, report_figures
from simworld.analysis.tables import Run
from simworld.cli import main
from simworld.runs.run import run_scenario

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_TIMEOUT_S = 120
MIN_COLOURS = 50


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A small group-discussion run with a Likert and a choice topic."""
    root = tmp_path_factory.mktemp("report")
    data = deep_update(
        BASE_SCENARIO,
        {"protocol.mode": "group", "protocol.group_size": 4, "protocol.rounds": 1,
         "protocol.steps": 3, "llm.cache": "off"},
    )  # fmt: skip
    path = root / "s.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    run_dir = root / "run"
    assert run_scenario(path, out_dir=run_dir).status == "completed"
    return run_dir


def test_every_figure_axis_is_labelled(run):
    figures = report_figures(Run(run))
    try:
        assert {"trajectories_remote_work", "network_city_priority", "drift", "conformity",
                "population"} <= set(figures)  # fmt: skip
        for name, fig in figures.items():
            for ax in fig.axes:
                if ax.get_label() == "<colorbar>":
                    assert ax.get_ylabel() or ax.get_xlabel(), f"{name}: colorbar unlabelled"
                    continue
                assert ax.get_xlabel().strip(), f"{name}: x axis unlabelled"
                assert ax.get_ylabel().strip(), f"{name}: y axis unlabelled"
                assert "(" in ax.get_xlabel() and "(" in ax.get_ylabel(), f"{name}: no unit"
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_report_is_self_contained(run):
    path = build_report(run)
    assert path == run / REPORT_DIR / REPORT_FILE
    page = path.read_text(encoding="utf-8")
    images = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=['\"]?(https?:|file:|//)", page)  # nothing fetched
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    assert len(pngs) == len(images)
    for heading in ("Cost", "Per-diversity table", "Conformity and inconstancy rates"):
        assert heading in page
    assert "stance" in page  # calls per purpose in the cost table
    assert main(["report", str(run), "--out", str(run / "other"), "--network-steps", "0"]) == 0
    assert (run / "other" / REPORT_FILE).is_file()


def test_report_opens_in_headless_chromium(run, tmp_path):
    assert Path(CHROMIUM).exists(), (
        "chromium is missing: .ci/run installs it (apt-get install chromium)"
    )
    page = build_report(run, out_dir=tmp_path / "report")
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1200,2000", page.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1200, 2000)
        colours = rgb.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > MIN_COLOURS, "the screenshot is (nearly) blank"
    most = max(count for count, _ in colours)
    assert most < 0.97 * 1200 * 2000, "one colour fills the page"


def test_a_run_probed_once_gets_no_figures_of_change_over_time(make_scenario, tmp_path):
    topic = {
        "id": "legs",
        "statement": "How many legs does a spider have?",
        "scale": {"type": "choice", "options": {"A": "Six", "B": "Eight"}},
        "truth": "B",
    }
    path = make_scenario(
        {
            "topics": [topic],
            "protocol": {"steps": 2, "mode": "asch", "asch": {"peers": [0, 3]}, "probe_at": [0]},
        }
    )
    run_dir = tmp_path / "run"
    assert run_scenario(path, out_dir=run_dir, cache_path=tmp_path / "c.db").status == "completed"
    figures = report_figures(Run(run_dir))
    try:
        assert set(figures) == {"network_legs", "asch"}
    finally:
        for fig in figures.values():
            plt.close(fig)
