"""``simworld report`` over a sweep or several runs: conditions side by side, with uncertainty.

Runs are grouped into conditions: a sweep's grid points (``sweep.json``), or, for run
directories given one by one, the scenario settings that differ between them (the seed
aside). Each measure is computed per run from its directory alone (tracker frames, re-derived
from the transcript when absent) and summarised per condition across seeds: the mean and a
percentile-bootstrap confidence interval (:func:`simworld.analysis.tables.confidence_interval`,
seeded, so the same runs give the same bytes). A counterfactual branch is drawn against
its parent from the branch step on.

Written beside ``report.html``: ``summary.csv`` and ``summary.parquet``, one row per
condition × measure (× topic × step for measures over time, × p for Asch levels) with the
estimate, its CI and n.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow as pa
from matplotlib.figure import Figure

from simworld.analysis.figures import (
    CATEGORY_COLOURS,
    figure_handles,
    integer_steps,
    legend_outside,
    legend_text,
    mark_interventions,
    plain_text,
    time_axis,
)
from simworld.analysis.human_reference import ASCH_1951
from simworld.analysis.report import REPORT_DIR, Page, Section, _table, section_notes, write_page
from simworld.analysis.tables import DEFAULT_CI, Run, confidence_interval, run_rates
from simworld.config.scenario import EXECUTION_ONLY_LLM_FIELDS
from simworld.errors import ConfigError
from simworld.measures import asch_table, belief_curve
from simworld.runs.writer import atomic_write_bytes, parquet_bytes
from simworld.support.rundir import FINISHED, MANIFEST, SWEEP_MANIFEST, read_sweep_manifest

SUMMARY_CSV = "summary.csv"
SUMMARY_PARQUET = "summary.parquet"
METHOD: Final[Literal["t", "bootstrap"]] = "bootstrap"
LABEL_VALUE_CHARS = 40
BELIEVING = "believing_share"
OVER_TIME = (
    ("bias", "bias (Likert points, 0 = midpoint)", True),
    ("diversity", "diversity (Likert points)", True),
    ("polarization", "polarization (Esteban–Ray)", True),
    ("consensus_share", "consensus share (fraction)", False),
    ("entropy", "entropy (bits)", False),
)
"""Population measures compared over time: column, axis label, Likert topics only."""
ACCURACY = "accuracy"
SUMMARY_SCHEMA = pa.schema(
    [
        ("condition", pa.string()),
        ("measure", pa.string()),
        ("topic", pa.string()),
        ("step", pa.int64()),
        ("p", pa.int64()),
        ("estimate", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n", pa.int64()),
        ("level", pa.float64()),
        ("method", pa.string()),
    ]
)


@dataclass(frozen=True)
class Member:
    """One run of a comparison and its condition.

    Attributes:
        run: The run directory.
        condition: The condition's label.
        branch_step: For a counterfactual branch, the step it branched at (else None).
    """

    run: Run
    condition: str
    branch_step: int | None = None


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out |= _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: json.dumps(node, sort_keys=True) if isinstance(node, list) else node}


def _label(settings: dict[str, Any]) -> str:
    """``key=value, …`` (long values cut; ``unset`` for a setting a run lacks), or ``all
    runs`` when nothing differs."""

    def short(value: Any) -> str:
        text = "unset" if value is None else str(value)
        return text if len(text) <= LABEL_VALUE_CHARS else text[: LABEL_VALUE_CHARS - 1] + "…"

    return ", ".join(f"{k}={short(v)}" for k, v in settings.items()) or "all runs"


def _sweep_members(sweep_dir: Path, skipped: list[str] | None = None) -> list[Member]:
    manifest = read_sweep_manifest(sweep_dir) or {}
    entries = manifest.get("runs", [])
    grid = manifest.get("spec", {}).get("grid") or {}
    varied = [k for k, values in grid.items() if k != "seed" and len(values) > 1]
    members = []
    for entry in entries:
        path = sweep_dir / entry["run_dir"]
        # the run's own manifest has the last word (a driver killed after the run ended
        # left sweep.json behind it)
        status = Run(path).manifest.get("status") if (path / MANIFEST).is_file() else None
        if status in FINISHED:
            params = entry.get("params") or {}
            members.append(Member(Run(path), _label({k: params.get(k) for k in varied})))
        elif skipped is not None:
            skipped.append(f"{entry['run_dir']} ({status or entry.get('status')})")
    return members


def _run_members(run_dirs: Sequence[Path], skipped: list[str] | None = None) -> list[Member]:
    """Finished run directories grouped by the settings that differ between them (seed and
    :data:`~simworld.config.scenario.EXECUTION_ONLY_LLM_FIELDS` aside); the unfinished are
    left out, named in ``skipped``."""
    runs = []
    for path in run_dirs:
        run = Run(path)
        if run.manifest.get("status") in FINISHED:
            runs.append(run)
        elif skipped is not None:
            skipped.append(f"{path} ({run.manifest.get('status')})")
    for run in list(runs):  # a branch is compared with its parent: add the parent if absent
        parent = (run.manifest.get("branch") or {}).get("parent_run")
        known = {r.path.resolve() for r in runs}
        if parent and Path(parent).resolve() not in known and (Path(parent) / MANIFEST).is_file():
            runs.insert(runs.index(run), Run(Path(parent)))
    flat = []
    for run in runs:
        settings = _flatten(run.manifest.get("scenario", {}))
        for key in ("seed", *(f"llm.{f}" for f in EXECUTION_ONLY_LLM_FIELDS)):
            settings.pop(key, None)
        flat.append(settings)
    keys = sorted({k for s in flat for k in s})
    differing = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True) for s in flat}) > 1]
    if "name" in differing:  # runs of different scenario files: their names tell them apart
        differing = ["name"]
    members = []
    for run, settings in zip(runs, flat, strict=True):
        branch = run.manifest.get("branch") or {}
        label = _label({k: settings.get(k) for k in differing})
        if branch:
            label = f"branch from step {branch.get('from_step')}: {label}"
        members.append(Member(run, label, branch.get("from_step") if branch else None))
    return members


def collect(paths: Sequence[str | Path], *, skipped: list[str] | None = None) -> list[Member]:
    """The runs of a comparison: a sweep directory's finished runs, or run directories.

    A sweep's conditions are its grid points, labelled by the grid keys that take more
    than one value.

    Raises:
        ConfigError: A path is neither a sweep nor a run directory, a run is given twice, or
            no run finished.
    """
    sweeps, runs = [], []
    for raw in paths:
        path = Path(raw)
        if (path / SWEEP_MANIFEST).is_file():
            sweeps.append(path)
        elif (path / MANIFEST).is_file():
            runs.append(path)
        else:
            raise ConfigError(path, "", "neither a run directory (manifest.json) nor a sweep")
    members = [m for s in sweeps for m in _sweep_members(s, skipped)] + _run_members(runs, skipped)
    if not members:
        raise ConfigError(paths[0], "", "no finished run to report on")
    seen: set[Path] = set()
    for member in members:
        where = member.run.path.resolve()
        if where in seen:
            msg = "is among the runs twice (given twice, or in a sweep given too); each counts once"
            raise ConfigError(member.run.path, "", msg)
        seen.add(where)
    return members


def _accuracy(drift: pd.DataFrame, topic: Any) -> pd.DataFrame:
    df = drift[(drift["topic"] == topic.id) & ~drift["missing"].astype(bool)]
    correct = (df["answer"].astype(str) == str(topic.truth)).groupby(df["step"]).mean()
    return pd.DataFrame({"step": correct.index, "value": correct.to_numpy(dtype=float)})


def run_series(member: Member) -> pd.DataFrame:
    """One run's measures over time: ``topic, step, measure, value`` (tidy).

    Population measures per topic and probe step (spread measures on Likert topics only),
    for topics with a ``truth`` the share of answered probes that are correct, and with
    ``trackers.belief`` the share of active agents believing the claim.
    """
    run = member.run
    population = run.frame("population")
    parts = []
    for topic in run.topics.values():
        df = population[population["topic"] == topic.id]
        for column, _, ordinal_only in OVER_TIME:
            if ordinal_only and not topic.ordinal:
                continue
            values = df[["step", column]].rename(columns={column: "value"})
            parts.append(values.assign(topic=topic.id, measure=column))
        if topic.truth is not None:
            acc = _accuracy(run.frame("drift"), topic)
            parts.append(acc.assign(topic=topic.id, measure=ACCURACY))
    belief = run.frame("belief")
    if not belief.empty:
        curve = belief_curve(belief)[["step", "share_B"]].rename(columns={"share_B": "value"})
        topic_id = str(belief["topic"].iloc[0])
        parts.append(curve.assign(topic=topic_id, measure=BELIEVING))
    if not parts:
        return pd.DataFrame(columns=["topic", "step", "measure", "value"])
    out = pd.concat(parts, ignore_index=True)
    out["value"] = pd.to_numeric(out["value"], errors="coerce").astype(float)
    out["step"] = out["step"].astype(int)
    return out[["topic", "step", "measure", "value"]]


def _interval(values: Sequence[float], level: float) -> tuple[float, float, float, int]:
    vals = [float(v) for v in values if not math.isnan(float(v))]
    if not vals:
        return math.nan, math.nan, math.nan, 0
    lo, hi = confidence_interval(vals, level=level, method=METHOD)
    return float(np.mean(vals)), lo, hi, len(vals)


@dataclass
class Comparison:
    """Per-run measures of a comparison and their summary per condition.

    Attributes:
        members: The runs and their conditions, in report order.
        series: ``run, condition, topic, step, measure, value`` of every run.
        rates: ``run, condition, measure, value`` (per-run rates, see ``run_rates``).
        summary: The tidy summary (:data:`SUMMARY_SCHEMA` columns).
        level: Confidence level.
        skipped: A sweep's runs left out as not finished (run directory and status).
    """

    members: list[Member]
    series: pd.DataFrame
    rates: pd.DataFrame
    summary: pd.DataFrame
    level: float
    skipped: list[str] = field(default_factory=list)

    @property
    def conditions(self) -> list[str]:
        """Condition labels in the order their first run was given."""
        return list(dict.fromkeys(m.condition for m in self.members))


def compare(paths: Sequence[str | Path], *, level: float = DEFAULT_CI) -> Comparison:
    """Collect the runs, compute their measures and summarise them per condition.

    A branch's measures count from its branch step on (before it, the branch replays its
    parent, so those steps belong to the parent's condition).
    """
    skipped: list[str] = []
    members = collect(paths, skipped=skipped)
    series, rates, asch = [], [], []
    for member in members:
        s = run_series(member)
        if member.branch_step is not None:
            s = s[s["step"] >= member.branch_step - 1]
        series.append(s.assign(run=str(member.run.path), condition=member.condition))
        trials = member.run.frame("asch")
        if not trials.empty:
            levels = asch_table(trials).melt(id_vars=["p"], value_vars=["CL", "RL"])
            asch.append(
                pd.DataFrame(
                    {
                        "condition": member.condition,
                        "p": levels["p"].astype(int),
                        "measure": "asch_" + levels["variable"],
                        "value": levels["value"],
                    }
                )
            )
        r = run_rates(member.run)
        rates.append(
            pd.DataFrame(
                [
                    {
                        "run": str(member.run.path),
                        "condition": member.condition,
                        "measure": k,
                        "value": float(v),
                    }
                    for k, v in r.items()
                    if not k.startswith("n_")
                ]
            )
        )
    all_series = pd.concat(series, ignore_index=True)
    all_asch = pd.concat(asch, ignore_index=True) if asch else None
    all_rates = pd.concat(rates, ignore_index=True)
    order = {c: i for i, c in enumerate(dict.fromkeys(m.condition for m in members))}
    rows: list[tuple[Any, ...]] = []
    for (condition, measure, topic, step), sub in all_series.groupby(
        ["condition", "measure", "topic", "step"], sort=False
    ):
        est, lo, hi, n = _interval(sub["value"].tolist(), level)
        rows.append((condition, measure, topic, int(cast("int", step)), None, est, lo, hi, n))
    for (condition, measure), sub in all_rates.groupby(["condition", "measure"], sort=False):
        est, lo, hi, n = _interval(sub["value"].tolist(), level)
        rows.append((condition, measure, None, None, None, est, lo, hi, n))
    if all_asch is not None:
        for (condition, measure, p), sub in all_asch.groupby(
            ["condition", "measure", "p"], sort=False
        ):
            est, lo, hi, n = _interval(sub["value"].tolist(), level)
            rows.append((condition, measure, None, None, int(cast("int", p)), est, lo, hi, n))
    summary = pd.DataFrame(
        rows,
        columns=[
            "condition",
            "measure",
            "topic",
            "step",
            "p",
            "estimate",
            "ci_low",
            "ci_high",
            "n",
        ],
    )
    summary["level"] = level
    summary["method"] = METHOD
    summary["_c"] = summary["condition"].map(order)
    summary["_t"] = summary["step"].isna()
    summary = (
        summary.sort_values(["_c", "_t", "measure", "topic", "step", "p"], na_position="first")
        .drop(columns=["_c", "_t"])
        .reset_index(drop=True)
    )
    summary["step"] = summary["step"].astype("Int64")
    summary["p"] = summary["p"].astype("Int64")
    return Comparison(members, all_series, all_rates, summary, level, skipped)


def summary_table(comparison: Comparison) -> pa.Table:
    """The summary as an arrow table of :data:`SUMMARY_SCHEMA`."""
    df = comparison.summary
    rows = [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in df.to_dict(orient="records")
    ]
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)


@plain_text
def figure_over_time(comparison: Comparison, topic: str, interventions: pd.DataFrame) -> Figure:
    """One panel per measure on ``topic``: each condition's mean over seeds and its CI band.

    A branch's line starts at its last step shared with the parent; a dashed line marks
    where it branched.
    """
    series = comparison.series[comparison.series["topic"] == topic]
    summary = comparison.summary[comparison.summary["topic"] == topic]
    known = (*[c for c, _, _ in OVER_TIME], ACCURACY, BELIEVING)
    measures = [m for m in known if m in set(series["measure"])]
    labels = {c: lab for c, lab, _ in OVER_TIME} | {
        ACCURACY: "share of answers correct (fraction)",
        BELIEVING: "share believing the claim (fraction)",
    }
    cols = min(len(measures), 3)
    rows = -(-len(measures) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.7 * rows), squeeze=False)
    for ax in axes.flat[len(measures) :]:
        fig.delaxes(ax)
    branch_steps = sorted({m.branch_step for m in comparison.members if m.branch_step})
    for ax, measure in zip(axes.flat, measures, strict=False):
        for i, condition in enumerate(comparison.conditions):
            df = summary[(summary["measure"] == measure) & (summary["condition"] == condition)]
            df = df.dropna(subset=["estimate"]).sort_values("step")
            if df.empty:
                continue
            colour = CATEGORY_COLOURS(i % 10)
            n = int(df["n"].max())
            ax.plot(df["step"], df["estimate"], marker="o", ms=3, color=colour,
                    label=legend_text(f"{condition} (n={n})"))  # fmt: skip
            band = df.dropna(subset=["ci_low", "ci_high"])
            ax.fill_between(band["step"].astype(float), band["ci_low"], band["ci_high"],
                            color=colour, alpha=0.2, lw=0)  # fmt: skip
        for step in branch_steps:
            ax.axvline(step - 0.5, color="k", linestyle="--", lw=0.8)
        ax.set_title(measure.replace("_", " "))
        time_axis(ax, None, labels[measure])
        _mark(ax, comparison, interventions)
    handles, names = figure_handles(fig)
    title = f"condition: mean, {comparison.level:.0%} CI band"
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
               fontsize="small", title=title)  # fmt: skip
    fig.suptitle(f"{topic}: measures over time by condition")
    fig.tight_layout()
    return fig


@plain_text
def figure_rates(comparison: Comparison) -> Figure | None:
    """Each per-run rate by condition: the mean and its CI (None: no rate has a value)."""
    s = comparison.summary
    rates = s[s["step"].isna() & s["p"].isna()].dropna(subset=["estimate"])
    measures = list(dict.fromkeys(rates["measure"]))
    if not measures:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(measures) * len(comparison.conditions)))
    k = len(comparison.conditions)
    for i, condition in enumerate(comparison.conditions):
        df = rates[rates["condition"] == condition].set_index("measure")
        ys, xs, lo, hi = [], [], [], []
        for j, measure in enumerate(measures):
            if measure in df.index:
                row = df.loc[measure]
                ys.append(j + (i - (k - 1) / 2) * 0.8 / max(k, 1))
                xs.append(row["estimate"])
                lo.append(row["estimate"] - row["ci_low"] if pd.notna(row["ci_low"]) else 0)
                hi.append(row["ci_high"] - row["estimate"] if pd.notna(row["ci_high"]) else 0)
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", color=CATEGORY_COLOURS(i % 10), capsize=3,
                    label=condition)  # fmt: skip
    ax.set_yticks(range(len(measures)), [m.replace("_", " ") for m in measures])
    ax.set_xlim(-0.03, 1.03)
    ax.invert_yaxis()
    ax.set_xlabel(f"rate (fraction; mean and {comparison.level:.0%} CI over seeds)")
    ax.set_ylabel("measure (per run)")
    ax.set_title("Rates by condition")
    legend_outside(ax)
    return fig


@plain_text
def figure_asch_levels(comparison: Comparison) -> Figure | None:
    """Asch CL and RL against p per condition (mean, CI band), beside Asch (1951)."""
    s = comparison.summary.dropna(subset=["p", "estimate"])
    if s.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    for ax, measure, what in (
        (axes[0][0], "asch_CL", "CL: answer = peers' answer"),
        (axes[0][1], "asch_RL", "RL: answer = own earlier answer"),
    ):
        for i, condition in enumerate(comparison.conditions):
            df = s[(s["measure"] == measure) & (s["condition"] == condition)].sort_values("p")
            if df.empty:
                continue
            colour = CATEGORY_COLOURS(i % 10)
            ax.plot(df["p"], df["estimate"], marker="o", color=colour,
                    label=legend_text(f"{condition} (n={int(df['n'].max())})"))  # fmt: skip
            band = df.dropna(subset=["ci_low", "ci_high"])
            ax.fill_between(band["p"].astype(float), band["ci_low"], band["ci_high"],
                            color=colour, alpha=0.2, lw=0)  # fmt: skip
        if measure == "asch_CL":
            human = ASCH_1951.frame()
            ax.plot(human["p"], human["CL"], marker="D", color="k", linestyle="--",
                    label=ASCH_1951.label)  # fmt: skip
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(what)
        ax.set_xlabel("unanimous scripted peers p (count)")
        ax.set_ylabel("share of trials (fraction)")
        integer_steps(ax)
    handles, names = figure_handles(fig)
    axes[0][1].legend(handles, names, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                      frameon=False, fontsize="small")  # fmt: skip
    fig.tight_layout()
    return fig


def _interventions(comparison: Comparison) -> pd.DataFrame:
    """Every (step, kind) of intervention, with the conditions whose runs had it.

    Returns:
        ``step, index, kind, topic, conditions`` (a tuple of condition indices).
    """
    frames = []
    for member in comparison.members:
        frame = member.run.frame("interventions")
        if not frame.empty:
            i = comparison.conditions.index(member.condition)
            frames.append(frame.assign(condition=i))
    if not frames:
        return pd.DataFrame(columns=["step", "index", "kind", "topic", "conditions"])
    both = pd.concat(frames, ignore_index=True)
    rows = []
    for (step, kind), sub in both.groupby(["step", "kind"], sort=True):
        first = sub.iloc[0]
        conditions = tuple(sorted(set(sub["condition"])))
        rows.append({"step": step, "index": first["index"], "kind": kind,
                     "topic": first["topic"], "conditions": conditions})  # fmt: skip
    return pd.DataFrame(rows)


def _mark(ax: Any, comparison: Comparison, interventions: pd.DataFrame) -> None:
    """Interventions every condition had in grey; those of some conditions only in those
    conditions' colours (dash-dotted, side by side); each labelled once above the plot."""
    n = len(comparison.conditions)
    everyone = tuple(range(n))
    shared = interventions[[c == everyone for c in interventions["conditions"]]]
    mark_interventions(ax, shared)
    own = interventions[[c != everyone for c in interventions["conditions"]]]
    trans = ax.get_xaxis_transform()
    for j, row in enumerate(own.to_dict("records"), start=len(shared)):
        for i in row["conditions"]:
            x = float(row["step"]) - 0.5 + 0.08 * (i - (n - 1) / 2)
            ax.axvline(x, color=CATEGORY_COLOURS(i % 10), linestyle="-.", lw=1.1, zorder=0)
        # one label per intervention, however many conditions had it (the lines' colours say
        # which): a label per condition would print the same word over itself
        only = row["conditions"][0] if len(row["conditions"]) == 1 else None
        colour = CATEGORY_COLOURS(only % 10) if only is not None else "0.3"
        ax.text(float(row["step"]) - 0.5, 1.01 + 0.06 * (j % 2), str(row["kind"]),
                transform=trans, color=colour, fontsize="x-small", va="bottom", ha="center",
                clip_on=False)  # fmt: skip
    ax.set_title(ax.get_title(), pad=30)


def section_compare_header(page: Page) -> list[str]:
    """What is compared: conditions, their runs and seeds (unfinished runs go to the notes)."""
    comparison: Comparison = page.extra["comparison"]
    if comparison.skipped:
        page.notes.append(
            f"{len(comparison.skipped)} run(s) left out, not finished: "
            + ", ".join(comparison.skipped)
        )
    rows = []
    for condition in comparison.conditions:
        runs = [m.run for m in comparison.members if m.condition == condition]
        rows.append(
            {
                "condition": condition,
                "runs": len(runs),
                "seeds": ", ".join(str(s) for s in sorted({r.seed for r in runs})),
                "scenario": runs[0].manifest.get("scenario", {}).get("name"),
            }
        )
    return [
        f"<h1>simworld comparison report — {len(comparison.members)} runs, "
        f"{len(comparison.conditions)} condition(s)</h1>",
        "<p>Each measure per condition: the mean over runs (seeds) with a "
        f"{comparison.level:.0%} percentile-bootstrap confidence interval. The same numbers "
        f"are in <code>{SUMMARY_CSV}</code> and <code>{SUMMARY_PARQUET}</code> beside this "
        "page.</p>",
        f"<div class='meta'>{_table(pd.DataFrame(rows))}</div>",
    ]


def section_compare_figures(page: Page) -> list[str]:
    """Measures over time per topic, and the per-run rates, by condition."""
    comparison: Comparison = page.extra["comparison"]
    interventions = _interventions(comparison)
    out = ["<h2>Measures over time</h2>"]
    for topic in dict.fromkeys(comparison.series["topic"]):
        out.append(
            page.image(f"compare_{topic}", figure_over_time(comparison, topic, interventions))
        )
    asch = figure_asch_levels(comparison)
    if asch is not None:
        out += [
            "<h2>Asch-style conformity by p</h2>",
            page.image("compare_asch", asch),
            f"<p class='cite'>Human reference: {html.escape(ASCH_1951.note)} "
            f"{html.escape(ASCH_1951.citation)}</p>",
        ]
    fig = figure_rates(comparison)
    if fig is None:
        page.notes.append("Rates figure left out: no rate could be decided in any run.")
    else:
        out += ["<h2>Rates</h2>", page.image("compare_rates", fig)]
    if any(m.branch_step for m in comparison.members):
        out.append(
            "<p class='none'>Dashed vertical line: where a branch left its parent; the "
            "branch is drawn from its last step shared with the parent.</p>"
        )
    return out


def section_compare_summary(page: Page) -> list[str]:
    """The summary at the last probe step of each measure over time, the rates, and the
    Asch levels by p when the runs have Asch trials."""
    comparison: Comparison = page.extra["comparison"]
    s = comparison.summary
    timed = s.dropna(subset=["step"])
    last = timed[
        timed["step"] == timed.groupby(["condition", "measure", "topic"])["step"].transform("max")
    ]
    rates = s[s["step"].isna() & s["p"].isna()]
    cols = ["condition", "measure", "topic", "step", "estimate", "ci_low", "ci_high", "n"]
    out = [
        "<h2>Summary at the last probe step</h2>",
        _table(last[cols]),
        "<h2>Rates per condition</h2>",
        _table(rates[["condition", "measure", "estimate", "ci_low", "ci_high", "n"]]),
    ]
    asch = s.dropna(subset=["p"])
    if not asch.empty:
        columns = ["condition", "measure", "p", "estimate", "ci_low", "ci_high", "n"]
        out += ["<h2>Asch levels by p per condition</h2>", _table(asch[columns])]
    return out


COMPARE_SECTIONS: list[Section] = [
    section_compare_header,
    section_compare_figures,
    section_compare_summary,
    section_notes,
]
"""The sections of a comparison report, in page order."""


def default_out(paths: Sequence[str | Path]) -> Path:
    """``<sweep>/report`` for one sweep, else ``report`` in the runs' common parent."""
    if len(paths) == 1 and (Path(paths[0]) / SWEEP_MANIFEST).is_file():
        return Path(paths[0]) / REPORT_DIR
    return Path(os.path.commonpath([Path(p).resolve().parent for p in paths])) / REPORT_DIR


def build_comparison(
    paths: Sequence[str | Path],
    *,
    out_dir: str | Path | None = None,
    level: float = DEFAULT_CI,
    skipped: list[str] | None = None,
) -> Path:
    """Write a comparison report of a sweep or several runs, and its summary files.

    Args:
        paths: One sweep directory, or run directories (or several sweeps).
        out_dir: Where to write (default :func:`default_out`).
        level: Confidence level of the intervals.
        skipped: When given, receives the runs left out as not finished (run directory and
            status), as the report's notes name them.

    Returns:
        The HTML file (``summary.csv`` and ``summary.parquet`` beside it).
    """
    comparison = compare(paths, level=level)
    if skipped is not None:
        skipped.extend(comparison.skipped)
    out = Path(out_dir) if out_dir is not None else default_out(paths)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(comparison)
    atomic_write_bytes(out / SUMMARY_PARQUET, parquet_bytes(table), durable=False)
    csv = comparison.summary.to_csv(index=False, float_format="%.6g", lineterminator="\n")
    atomic_write_bytes(out / SUMMARY_CSV, csv.encode("utf-8"), durable=False)
    page = Page(out=out, extra={"comparison": comparison})
    return write_page(page, COMPARE_SECTIONS, "simworld comparison report")


__all__ = [
    "COMPARE_SECTIONS",
    "SUMMARY_SCHEMA",
    "Comparison",
    "Member",
    "build_comparison",
    "collect",
    "compare",
    "run_series",
    "summary_table",
]
