"""The HTML report: labelled figures, self-contained page, and a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pyarrow.parquet as pq
import pytest
from browser import WIDTH, laid_out_width, screenshot
from conftest import BASE_SCENARIO, finished_run

from simworld.analysis.figures import LEGEND_WIDTH, legend_text
from simworld.analysis.report import REPORT_DIR, REPORT_FILE, build_report, report_figures
from simworld.analysis.tables import Run
from simworld.cli import main
from simworld.runs.run import run_scenario
from simworld.runs.tables import run_opinions


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A small group-discussion run with a Likert and a choice topic."""
    root = tmp_path_factory.mktemp("report")
    return finished_run(
        {"protocol.mode": "group", "protocol.group_size": 4, "protocol.rounds": 1,
         "protocol.steps": 3, "llm.cache": "off"},
        root / "s.yaml",
        root / "run",
    )  # fmt: skip


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


def test_a_missing_value_shows_as_a_dash_in_every_kind_of_column():
    from simworld.analysis.report import MISSING, _table

    frame = pd.DataFrame(
        {
            "time_to_consensus": pd.array([3, None], dtype="Int64"),
            "consensus": pd.array([True, None], dtype="boolean"),
            "share": [0.25, None],
            "modal_opinion": ["3", None],
        }
    )
    cells = re.findall(r"<td>(.*?)</td>", _table(frame))
    assert cells == ["3", "True", "0.25", "3", MISSING, MISSING, MISSING, MISSING]


@pytest.mark.slow
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


def test_a_report_made_from_inside_the_run_directory_names_the_run(run, tmp_path, monkeypatch):
    monkeypatch.chdir(run)
    assert main(["report", ".", "--out", str(tmp_path / "page")]) == 0
    page = (tmp_path / "page" / REPORT_FILE).read_text(encoding="utf-8")
    assert re.search(r"<td>run</td>\s*<td>run</td>", page)  # the fixture's folder is "run"


@pytest.mark.slow
def test_report_opens_in_headless_chromium(run, tmp_path):
    page = build_report(run, out_dir=tmp_path / "report")
    screenshot(page, tmp_path / "shot.png", tmp_path / "profile")
    # wide tables (the signal checks have 20 columns) scroll in their box, not the page
    assert laid_out_width(page, tmp_path / "profile") <= WIDTH


@pytest.mark.slow
def test_report_is_deterministic_and_marks_what_it_leaves_out(run, tmp_path):
    a = build_report(run, out_dir=tmp_path / "a")
    b = build_report(run, out_dir=tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    for png in sorted(a.parent.glob("*.png")):
        assert png.read_bytes() == (b.parent / png.name).read_bytes(), png.name
    page = a.read_text(encoding="utf-8")
    assert "Accuracy over time: no topic has a truth." in page  # one line saying why
    assert "What agents said" in page and "sampled messages" in page


def test_each_topic_is_summarised_at_its_own_last_probe_step():
    from simworld.analysis.report import last_probe_rows

    frame = pd.DataFrame(
        {"topic": ["a", "a", "b", "b", "c"], "step": [0, 4, 0, 3, 2], "bias": [1, 2, 3, 4, 5]}
    )
    assert last_probe_rows(frame)["bias"].tolist() == [2, 4, 5]
    assert last_probe_rows(frame.iloc[:0]).empty


def test_a_run_without_discussions_says_why_its_inconstancy_tables_are_missing(run, tmp_path):
    from simworld.analysis.report import Page, section_rates

    broadcast = finished_run({"llm.cache": "off"}, tmp_path / "s.yaml", tmp_path / "run")
    for run_dir, discussed in ((run, True), (broadcast, False)):
        page = Page(out=tmp_path, run=Run(run_dir))
        html = "".join(section_rates(page))
        assert ("Per-diversity table" in html) is discussed
        said_why = any(n.startswith("Per-diversity tables left out") for n in page.notes)
        assert said_why is not discussed


def test_time_axes_have_integer_steps_and_interventions_marked(make_scenario, tmp_path):
    path = make_scenario(
        {"protocol.steps": 4,
         "interventions": [{"step": 2, "kind": "broadcast", "topic": "remote_work",
                            "text": "A statement from outside."}],
         "topics": [BASE_SCENARIO["topics"][0], {**BASE_SCENARIO["topics"][1], "truth": "B"}]},
    )  # fmt: skip
    run_dir = tmp_path / "run"
    assert run_scenario(path, out_dir=run_dir, cache_path=tmp_path / "c.db").status == "completed"
    notes: list[str] = []
    figures = report_figures(Run(run_dir), notes=notes)
    try:
        assert "accuracy" in figures and "distributions" in figures
        timed = 0
        for name, fig in figures.items():
            for ax in fig.axes:
                if not ax.get_xlabel().startswith("probe step"):
                    continue
                timed += 1
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert all(float(t).is_integer() for t in ticks), f"{name}: {ticks}"
                marks = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [1.5, 1.5]]
                assert marks, f"{name}: the broadcast at step 2 is not marked"
                legend = ax.get_legend()
                if legend is not None:  # legends sit outside the plotting area
                    fig.canvas.draw()
                    box = legend.get_window_extent()
                    assert box.x0 >= ax.get_window_extent().x1 - 1, name
        assert timed >= 4
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_a_dollar_sign_in_options_and_condition_labels_is_drawn_as_text(make_scenario, tmp_path):
    """Matplotlib reads ``$...$`` as a formula: an option "by $1 (20% off) or by $2" failed
    to parse (no report), and "from $5 to $10" was drawn as "from 5to10"."""
    dollars = {"A": "Cut the fare by $1 (20% off) or by $2", "B": "Keep it at $5 to $10"}
    options = {**BASE_SCENARIO["topics"][1]["scale"]["options"], **dollars}
    topic = {**BASE_SCENARIO["topics"][1], "scale": {"type": "choice", "options": options}}
    runs = []
    for price in ("$5", "$10"):
        path = make_scenario({"protocol.instruction": f"The fare is {price} today.",
                              "topics": [BASE_SCENARIO["topics"][0], topic]})  # fmt: skip
        runs.append(tmp_path / price.strip("$"))
        assert run_scenario(path, out_dir=runs[-1]).status == "completed"
    assert main(["report", str(runs[0])]) == 0
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "both")]) == 0
    figures = report_figures(Run(runs[0]))
    try:
        texts = [
            t for fig in figures.values() for t in fig.findobj(plt.Text) if "$" in t.get_text()
        ]
        shown = {t.get_text().replace("\n", " ") for t in texts}  # long entries are wrapped
        assert shown >= {f"{k}: {v}" for k, v in dollars.items()}
        assert not any(t.get_parse_math() for t in texts)
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_a_long_option_or_condition_is_wrapped_in_its_legend():
    """A 146-character option in one legend line squeezed the network plots to half width."""
    long = "Invest in " + " and ".join(["much better public transport"] * 5)
    lines = legend_text(f"B: {long}").split("\n")
    assert " ".join(lines) == f"B: {long}" and max(map(len, lines)) <= LEGEND_WIDTH
    assert legend_text("A: Parks") == "A: Parks"


def test_group_discussions_are_drawn_as_who_talked_with_whom(run):
    figures = report_figures(Run(run), steps=[0, 2])
    try:
        first, later = figures["network_remote_work"].axes[:2]
        assert not any(t.get_text().startswith("conversation") for t in first.texts)
        groups = {t.get_text() for t in later.texts if t.get_text().startswith("conversation")}
        assert groups == {"conversation 1", "conversation 2"}  # 8 agents in groups of 4
        assert "conversations of the step" in later.get_title()
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_an_old_run_directory_still_reports(run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("report", "other", "trackers"))
    (old / "agents.parquet").unlink()
    (old / "edges.parquet").unlink()
    calls = pq.read_table(old / "llm_calls.parquet")
    pq.write_table(calls.rename_columns(["key" if c == "call" else c for c in calls.column_names]),
                   old / "llm_calls.parquet")  # fmt: skip
    opinions = pd.read_parquet(old / "opinions.parquet")
    opinions["probs"] = [
        None if p is None else json.dumps({c["option"]: c["prob"] for c in p})
        for p in opinions["probs"]
    ]
    opinions.to_parquet(old / "opinions.parquet")
    page = build_report(old).read_text(encoding="utf-8")
    assert "network remote work" in page and "stance" in page
    assert run_opinions(old)["probs"].dropna().map(len).gt(0).all()


def _damage(copy: Path, how: str) -> list[str]:
    """Damage a copy of a run one way; the command-line arguments that meet the damage."""
    manifest = copy / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if how == "scenario-missing":
        del data["scenario"]
    elif how == "scenario-bad":
        data["scenario"]["population"]["size"] = "x"
    manifest.write_text(json.dumps(data), encoding="utf-8")
    if how in ("agents.parquet", "trackers/drift.parquet"):
        (copy / how).write_text("garbage", encoding="utf-8")
    if how == "out-is-a-file":
        (copy / "a-file").write_text("", encoding="utf-8")
        return ["--out", str(copy / "a-file" / "report")]
    if how == "network-steps":
        return ["--network-steps", "0", "99"]
    return []


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("scenario-missing", "manifest.json: scenario: missing"),
        ("scenario-bad", "manifest.json: scenario.population.size: "),
        ("agents.parquet", "agents.parquet: damaged: not a readable parquet file"),
        ("trackers/drift.parquet", "drift.parquet: damaged: not a readable parquet file"),
        ("out-is-a-file", "a-file/report: Not a directory"),
        ("network-steps", "--network-steps: 99: not a probe step of this run"),
    ],
)
def test_a_damaged_run_or_a_bad_option_is_one_line_exit_2(run, tmp_path, capsys, how, says):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report", "other"))
    args = _damage(copy, how)
    capsys.readouterr()
    assert main(["report", str(copy), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not (copy / "report").exists()


def test_the_report_names_the_build_that_answered(run, tmp_path):
    """A run on the embedded model lists its llama.cpp build in the manifest; the report's
    header says it (a fake run lists none, and the row is left out)."""
    assert "answered by" not in build_report(run).read_text(encoding="utf-8")
    local = tmp_path / "local"
    shutil.copytree(run, local, ignore=shutil.ignore_patterns("report"))
    manifest = json.loads((local / "manifest.json").read_text(encoding="utf-8"))
    manifest["model_builds"] = [
        {"model": "local/gemma3-270m", "llama_cpp_python": "0.3.36",
         "compiled_for": ["AVX2", "AVX512"], "cpu": "AMD EPYC", "extra_bufts": "off"},
        {"model": "local/gemma3-270m", "llama_cpp_python": "0.3.36", "compiled_for": ["AVX2"],
         "cpu": None, "extra_bufts": "off"},
        "damaged",
    ]  # fmt: skip
    (local / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    page = build_report(local).read_text(encoding="utf-8")
    assert (
        "llama-cpp-python 0.3.36 compiled for AVX2 AVX512 on AMD EPYC, extra buffer types off; "
        "llama-cpp-python 0.3.36 compiled for AVX2 on a CPU not named, extra buffer types off"
    ) in page


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
    notes: list[str] = []
    figures = report_figures(Run(run_dir), notes=notes)
    try:
        assert set(figures) == {"network_legs", "asch"}
        assert notes == [
            "Figures of change over time left out: the run was probed at one step only."
        ]
        # the published human rates by majority size are drawn beside the simulated ones
        lines = {ln.get_label(): ln for ln in figures["asch"].axes[0].get_lines()}
        human = lines["CL, humans, Asch (1951)"]
        assert list(human.get_xdata()) == [0, 1, 2, 3, 4, 8]
        errors = [0.08, 0.33, 1.53, 4.0, 4.2, 3.84]  # mean errors of 12 critical trials
        assert list(human.get_ydata()) == pytest.approx([e / 12 for e in errors], abs=1e-4)
    finally:
        for fig in figures.values():
            plt.close(fig)
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "Groups, leadership and men" in page and "CL_humans" in page
