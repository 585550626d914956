"""The report's header and network figure read well: a folded YAML description is one line of
text, and node names never cover each other (30 agents in five communities)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import yaml

from simworld.analysis.report import build_report, report_figures
from simworld.analysis.tables import Run
from simworld.runs.run import run_scenario
from simworld.runs.tables import run_agents

DESCRIPTION = """\
description: >
  Thirty personas talk on a small world.

  A second paragraph, after a blank line.
"""


@pytest.fixture(scope="module")
def thirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 30 agents on a small world (two steps), described in folded YAML."""
    from conftest import BASE_SCENARIO, deep_update

    tmp = tmp_path_factory.mktemp("thirty")
    data = deep_update(
        BASE_SCENARIO,
        {"population.size": 30, "protocol.steps": 1, "network.k": 4, "network.p": 0.1},
    )
    text = DESCRIPTION + yaml.safe_dump(data, sort_keys=False)
    path = tmp / "thirty.yaml"
    path.write_text(text, encoding="utf-8")
    run = tmp / "run"
    assert run_scenario(path, out_dir=run, cache_path=tmp / "c.db").status == "completed"
    return run


def test_a_folded_description_is_one_line_of_text(thirty: Path) -> None:
    page = build_report(thirty).read_text(encoding="utf-8")
    cell = re.search(r"<td>description</td>\s*<td>(.*?)</td>", page, re.DOTALL)
    assert cell is not None
    text = cell.group(1)
    assert "\\n" not in text and "\n" not in text
    assert text == (
        "Thirty personas talk on a small world. A second paragraph, after a blank line."
    )


def test_network_names_do_not_overlap(thirty: Path, tmp_path: Path) -> None:
    figures = report_figures(Run(thirty))
    try:
        fig = figures["network_remote_work"]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes[:-1]:  # the panels (the last axes is the colour bar)
            names = [t for t in ax.texts if not t.get_text().startswith("community")]
            boxes = [t.get_window_extent(renderer) for t in names]
            overlapping = [
                (names[i].get_text(), names[j].get_text())
                for i in range(len(boxes))
                for j in range(i + 1, len(boxes))
                if boxes[i].overlaps(boxes[j])
            ]
            assert overlapping == []
            found = re.search(r"\((\d+) names left out", ax.get_xlabel())
            left_out = int(found.group(1)) if found else 0
            assert len(names) + left_out == 30
            assert len(names) >= 20  # most agents are named
        fig.savefig(tmp_path / "network.png")
    finally:
        for figure in figures.values():
            plt.close(figure)


def test_names_fit_with_room_to_spare(make_scenario: Callable[..., Path], tmp_path: Path) -> None:
    """Eight agents in two blocks: the blocks outlined and named, every agent named (nothing
    left out), node sizes by degree."""
    path = make_scenario(
        {"protocol.steps": 1,
         "network": {"generator": "stochastic_block", "p_in": 0.9, "p_out": 0.05,
                     "sizes": [4, 4]}},
    )  # fmt: skip
    run = tmp_path / "run"
    assert run_scenario(path, out_dir=run, cache_path=tmp_path / "c.db").status == "completed"
    figures = report_figures(Run(run))
    try:
        ax = figures["network_remote_work"].axes[0]
        texts = [t.get_text() for t in ax.texts]
        assert {"block 0", "block 1"} <= set(texts)
        names = [t for t in texts if not t.startswith("block")]
        agents = run_agents(run)
        assert len(names) == len(agents) == 8 and "left out" not in ax.get_xlabel()
        sizes = ax.collections[-1].get_sizes()
        assert len(set(sizes)) > 1 or agents["degree"].nunique() == 1
    finally:
        for figure in figures.values():
            plt.close(figure)
