"""``simworld report``: a self-contained HTML report of one run, with figures and tables."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from simworld.analysis.tables import Run, inconstancy_by_diversity, run_rates
from simworld.measures import STATES, asch_table, belief_curve
from simworld.support.rundir import REPORT_DIR

REPORT_FILE = "report.html"
DPI = 100
NETWORK_PANELS = 3
LEGEND_COLUMNS = 4
LAYOUT_SEED = 0
STEP_AXIS = "probe step (simulation steps)"
COUNT_AXIS = "agents (count)"
CATEGORY_COLOURS = plt.get_cmap("tab10")
LIKERT_CMAP = "coolwarm"


def _opinion_axis(topic: Any) -> str:
    if topic.ordinal:
        return f"private opinion (Likert 1–{len(topic.scale.values)})"
    return "share of agents answering (fraction)"


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def figure_trajectories(drift: pd.DataFrame, topic: Any) -> Figure:
    """Private opinions over time on one topic (docs/metrics.md §2).

    Likert: one thin line per agent (slightly jittered so overlaps show) and the mean in
    bold. Choices: the share of agents giving each answer at each probe step.
    """
    fig, ax = plt.subplots(figsize=(8, 4.5))
    df = drift[(drift["topic"] == topic.id) & ~drift["missing"].astype(bool)]
    ax.set_xlabel(STEP_AXIS)
    ax.set_ylabel(_opinion_axis(topic))
    ax.set_title(f"Opinion trajectories — {topic.id}")
    if df.empty:
        _empty(ax, "no answered probes")
        return fig
    if topic.ordinal:
        rng = np.random.default_rng(LAYOUT_SEED)
        for _, series in df.groupby("agent", sort=True):
            jitter = rng.uniform(-0.08, 0.08)
            ax.plot(series["step"], series["value"] + jitter, color="0.6", lw=0.8, alpha=0.6)
        mean = df.groupby("step")["value"].mean()
        ax.plot(mean.index, mean.to_numpy(), color="C3", lw=2.5, label="mean")
        ax.set_yticks(range(1, len(topic.scale.values) + 1))
        ax.legend(loc="upper right")
    else:
        shares = pd.crosstab(df["step"], df["answer"], normalize="index")
        for i, answer in enumerate(shares.columns):
            label = f"{answer}: {topic.scale.label(answer)}"
            ax.plot(
                shares.index, shares[answer], marker="o", color=CATEGORY_COLOURS(i), label=label
            )
        ax.set_ylim(0, 1)
        ax.legend(loc="upper right", fontsize="small")
    return fig


def _chosen_steps(steps: Sequence[int], chosen: Sequence[int] | None) -> list[int]:
    if chosen:
        return [s for s in chosen if s in set(steps)]
    if len(steps) <= NETWORK_PANELS:
        return list(steps)
    return [steps[0], steps[len(steps) // 2], steps[-1]]


def figure_network(
    start: dict[str, Any], drift: pd.DataFrame, topic: Any, *, steps: Sequence[int] | None = None
) -> Figure:
    """The social network coloured by private opinion at chosen probe steps.

    Node positions come from a seeded spring layout (same in every panel); grey nodes
    have no answer at that step (a failed probe).
    """
    graph = nx.Graph()
    keys = [a["agent"] for a in start.get("agents", [])]
    graph.add_nodes_from(range(len(keys)))
    graph.add_edges_from(tuple(e) for e in start.get("edges", []))
    pos = nx.spring_layout(graph, seed=LAYOUT_SEED)
    df = drift[drift["topic"] == topic.id]
    shown = _chosen_steps(sorted(df["step"].unique().tolist()), steps)
    panels = max(len(shown), 1)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 5), gridspec_kw={"wspace": 0.4})
    axes = np.atleast_1d(axes)
    values = topic.scale.values
    norm = matplotlib.colors.Normalize(vmin=1, vmax=len(values))
    cmap = plt.get_cmap(LIKERT_CMAP)
    for ax, step in zip(axes, shown or [None], strict=False):
        ax.set_xlabel("layout x (arbitrary units)")
        ax.set_ylabel("layout y (arbitrary units)")
        if step is None:
            ax.set_title(f"{topic.id}: no probes")
            _empty(ax, "no probes")
            continue
        at = df[df["step"] == step].set_index("agent")
        colours = []
        for key in keys:
            answer = at["answer"].get(key) if key in at.index else None
            if answer is None or pd.isna(answer):
                colours.append("0.8")
            elif topic.ordinal:
                colours.append(cmap(norm(float(answer))))
            else:
                colours.append(CATEGORY_COLOURS(values.index(answer) % 10))
        nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.3)
        nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colours, node_size=90)
        ax.set_title(f"{topic.id} at step {step}")
        ax.tick_params(left=True, bottom=True, labelleft=True, labelbottom=True)
    if topic.ordinal:
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes))
        bar.set_label(_opinion_axis(topic))
    else:
        handles = [
            matplotlib.patches.Patch(
                color=CATEGORY_COLOURS(i % 10), label=f"{v}: {topic.scale.label(v)}"
            )
            for i, v in enumerate(values)
        ]
        rows = -(-len(handles) // LEGEND_COLUMNS)
        fig.subplots_adjust(bottom=0.12 + 0.05 * rows)  # the legend goes under the x label
        columns = min(len(handles), LEGEND_COLUMNS)
        fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize="small")
    return fig


def figure_drift(drift: pd.DataFrame, topics: dict[str, Any]) -> Figure:
    """Distribution over agents of drift at the last probe step (docs/metrics.md §2).

    Left: absolute drift from the first probe; right: distance from the persona's assigned
    opinion. Likert distances are in scale points; on choice topics both are 0/1
    (answer differs or not).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    answered = drift[~drift["missing"].astype(bool)]
    for ax, column, what in (
        (left, "abs_drift", "|drift| since the first probe"),
        (right, "anchored_distance", "distance from assigned opinion"),
    ):
        ax.set_xlabel(f"{what} (Likert points; choices: 0/1)")
        ax.set_ylabel(COUNT_AXIS)
        last = answered[answered["step"] == answered["step"].max()] if len(answered) else answered
        plotted = False
        for i, topic in enumerate(topics):
            vals = last.loc[last["topic"] == topic, column].dropna().to_numpy(dtype=float)
            if vals.size:
                bins = np.arange(-0.25, max(vals.max(), 1) + 0.75, 0.5)
                ax.hist(vals, bins=bins, alpha=0.6, color=f"C{i}", label=topic)
                plotted = True
        if plotted:
            ax.legend(fontsize="small")
        else:
            _empty(ax, "no values")
    fig.suptitle("Drift at the last probe step")
    fig.tight_layout()
    return fig


def figure_conformity(conformity: pd.DataFrame, statements: pd.DataFrame) -> Figure:
    """Distribution over agents of local conformity (§3) and public/private mismatch (§1).

    Left: per agent, the share of its counted moves that went toward its neighbours. Right:
    per agent, the share of its messages whose stated stance differs from its private answer.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bins = np.linspace(0, 1, 11)
    for ax, frame, column, what in (
        (left, conformity, "conformed", "share of counted moves toward neighbours"),
        (right, statements, "public_private_mismatch", "share of messages unlike private view"),
    ):
        ax.set_xlabel(f"{what} (fraction)")
        ax.set_ylabel(COUNT_AXIS)
        decided = frame.dropna(subset=[column]) if column in frame else frame.iloc[0:0]
        if decided.empty:
            _empty(ax, "no counted cases")
            continue
        per_agent = decided.groupby("agent")[column].apply(lambda s: s.astype(bool).mean())
        ax.hist(per_agent.to_numpy(dtype=float), bins=bins, color="C2", alpha=0.8)
        ax.set_xlim(0, 1)
    fig.suptitle("Conformity and public/private consistency")
    fig.tight_layout()
    return fig


def figure_population(population: pd.DataFrame, topics: dict[str, Any]) -> Figure:
    """Population measures over time per topic (docs/metrics.md §5)."""
    n = max(len(topics), 1)
    fig, axes = plt.subplots(n, 3, figsize=(13, 3.6 * n), squeeze=False)
    for row, topic in zip(axes, topics.values(), strict=False):
        df = population[population["topic"] == topic.id].sort_values("step")
        a, b, c = row
        a.set_ylabel("bias, diversity, polarization (Likert points)")
        b.set_ylabel("consensus share (fraction)")
        c.set_ylabel("entropy (bits)")
        for ax in row:
            ax.set_xlabel(STEP_AXIS)
        a.set_title(f"{topic.id}: spread")
        b.set_title(f"{topic.id}: consensus")
        c.set_title(f"{topic.id}: entropy")
        if df.empty:
            for ax in row:
                _empty(ax, "no probes")
            continue
        if topic.ordinal:
            for col in ("bias", "diversity", "polarization"):
                a.plot(df["step"], df[col], marker="o", label=col)
            a.legend(fontsize="small")
        else:
            _empty(a, "ordinal measures only")
        b.plot(df["step"], df["consensus_share"], marker="o", color="C4")
        b.set_ylim(0, 1.05)
        c.plot(df["step"], df["entropy"], marker="o", color="C5")
    fig.tight_layout()
    return fig


def figure_belief(curve: pd.DataFrame, interventions: pd.DataFrame) -> Figure:
    """Shares of susceptible, believing and recovered agents per probe step.

    Dotted lines mark interventions: one at step k happens before step k's interaction,
    i.e. between the probes k-1 and k.
    """
    fig, ax = plt.subplots(figsize=(8, 4))
    names = {"S": "susceptible", "B": "believing", "R": "recovered"}
    for state in STATES:
        ax.plot(curve["step"], curve[f"share_{state}"], marker="o", label=names[state])
    for i, (step, kind) in enumerate(interventions[["step", "kind"]].itertuples(index=False)):
        ax.axvline(step - 0.5, color="0.5", linestyle=":")
        ax.annotate(kind, (step - 0.5, 1.02 - 0.06 * (i % 3)), fontsize="small", ha="center")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel(STEP_AXIS)
    ax.set_ylabel("share of active agents (fraction)")
    ax.set_title("belief states (dotted: interventions)")
    ax.legend(fontsize="small", loc="center right")
    fig.tight_layout()
    return fig


def figure_asch(levels: pd.DataFrame) -> Figure:
    """Asch conformity level CL and resistance level RL as functions of p (docs/metrics.md §3)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(levels["p"], levels["CL"], marker="o", label="CL: answer = peers' answer")
    ax.plot(levels["p"], levels["RL"], marker="s", label="RL: answer = own earlier answer")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("unanimous scripted peers p (count)")
    ax.set_ylabel("share of trials (fraction)")
    ax.set_title("Asch-style conformity")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def report_figures(run: Run, *, steps: Sequence[int] | None = None) -> dict[str, Figure]:
    """Every figure of the report, by file stem (open; the caller closes them).

    Figures of change over time (trajectories, drift, conformity, population measures) need
    at least two probe steps; a run probed once (an Asch design) gets its networks and its
    own figures only.
    """
    topics = run.topics
    drift = run.frame("drift")
    over_time = drift["step"].nunique() >= 2
    figs: dict[str, Figure] = {}
    start = run.start_event()
    for topic in topics.values():
        if over_time:
            figs[f"trajectories_{topic.id}"] = figure_trajectories(drift, topic)
        figs[f"network_{topic.id}"] = figure_network(start, drift, topic, steps=steps)
    if over_time:
        figs["drift"] = figure_drift(drift, topics)
        figs["conformity"] = figure_conformity(run.frame("conformity"), run.frame("statements"))
        figs["population"] = figure_population(run.frame("population"), topics)
    belief = run.frame("belief")
    if not belief.empty:
        figs["belief"] = figure_belief(belief_curve(belief), run.frame("interventions"))
    trials = run.frame("asch")
    if not trials.empty:
        figs["asch"] = figure_asch(asch_table(trials))
    return figs


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p class='none'>(no rows)</p>"
    return df.to_html(index=False, na_rep="—", float_format=lambda x: f"{x:.3g}", border=0)


def cost_table(run: Run) -> pd.DataFrame:
    """The run's totals from the manifest: calls, tokens, cost (USD) and wall time (s)."""
    m = run.manifest
    totals = dict(m.get("totals") or {})
    totals["wall_time_s"] = m.get("wall_time_s")
    rows = [
        {"quantity": k.replace("_usd", " (USD)").replace("_s", " (s)").replace("_", " "),
         "value": _number(v)}
        for k, v in sorted(totals.items())
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["quantity", "value"])


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


def calls_by_purpose(run: Run) -> pd.DataFrame:
    """Model calls per purpose (``post``, ``probe``, ``stance`` …): count, tokens, cost (USD)."""
    path = run.path / "llm_calls.parquet"
    if not path.is_file():
        return pd.DataFrame()
    calls = pd.read_parquet(path)
    if calls.empty:
        return pd.DataFrame()
    calls["kind"] = calls["purpose"].str.split(":").str[0]
    calls["failed"] = calls["status"] != "ok"
    return (
        calls.groupby("kind", sort=True)
        .agg(
            calls=("key", "size"),
            failed=("failed", "sum"),
            prompt_tokens=("prompt_tokens", "sum"),
            completion_tokens=("completion_tokens", "sum"),
            cost_usd=("cost_usd", "sum"),
        )
        .reset_index()
    )


def _rates_table(run: Run) -> pd.DataFrame:
    rates = run_rates(run)
    rows = [
        {"measure": k, "rate": rates[k], "cases": rates[f"n_{k}"]}
        for k in rates
        if not k.startswith("n_")
    ]
    return pd.DataFrame(rows, columns=["measure", "rate", "cases"])


def _personality_table(run: Run) -> pd.DataFrame:
    df = run.frame("personality")
    if df.empty:
        return df
    return (
        df.groupby(["step", "trait"], sort=True)
        .agg(mean_score=("score", "mean"), mean_distance=("distance", "mean"), n=("score", "count"))
        .reset_index()
    )


def _scripted_tables(run: Run) -> list[str]:
    """Interventions, belief states and Asch levels, for runs that have them."""
    out = []
    interventions = run.frame("interventions")
    if not interventions.empty:
        out += ["<h2>Interventions</h2>", _table(interventions)]
    belief = run.frame("belief")
    if not belief.empty:
        out += ["<h2>Belief states per probe step</h2>", _table(belief_curve(belief))]
    trials = run.frame("asch")
    if not trials.empty:
        out += [
            "<h2>Asch-style conformity by p (docs/metrics.md §3)</h2>",
            _table(asch_table(trials)),
        ]
    return out


STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #c33; } h2 { margin-top: 2em; color: #833; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3eaea; } img { max-width: 100%; border: 1px solid #eee; }
.none { color: #888; } .meta td { text-align: left; } .warning { color: #a00; }
"""


def signal_section(run: Run) -> list[str]:
    """The report's signal-check section (docs/metrics.md §8): a warning in plain words per
    topic whose probe answers look degenerate or position-driven, then the checks' table."""
    frame = run.frame("signal")
    out = ["<h2>Do the answers carry an opinion? (signal checks, docs/metrics.md §8)</h2>"]
    warnings = [w for w in frame["warning"] if isinstance(w, str)] if len(frame) else []
    out += [f"<p class='warning'><b>Warning:</b> {html.escape(w)}</p>" for w in warnings]
    if len(frame) and not warnings:
        out.append("<p>No topic's answers look degenerate or position-driven.</p>")
    out.append(_table(frame.drop(columns=["warning"]) if len(frame) else frame))
    return out


def build_report(
    run_dir: str | Path, *, out_dir: str | Path | None = None, steps: Sequence[int] | None = None
) -> Path:
    """Write ``<run_dir>/report/report.html`` (self-contained) and its PNG figures.

    Figures (matplotlib, Agg backend; every axis labelled with its unit): opinion
    trajectories and the network coloured by opinion per topic, drift and conformity
    distributions, population measures over time, belief states and Asch levels when the
    run has them. Tables: the run's cost (manifest totals and calls per purpose),
    conformity/inconstancy rates, the per-diversity tables of docs/metrics.md §1, the last
    population measures, BFI scores when administered, interventions, belief states and
    Asch levels by p when present.

    Args:
        run_dir: A run directory (tracker frames are re-derived if absent).
        out_dir: Where to write (default ``<run_dir>/report``).
        steps: Probe steps at which to draw the network (default first, middle, last).

    Returns:
        The HTML file.
    """
    run = Run(Path(run_dir))
    out = Path(out_dir) if out_dir is not None else run.path / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    figures = report_figures(run, steps=steps)
    sections = []
    try:
        for stem, fig in figures.items():
            data = _png(fig)
            (out / f"{stem}.png").write_bytes(data)
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            sections.append(
                f"<h3>{html.escape(stem.replace('_', ' '))}</h3>"
                f"<img alt='{html.escape(stem)}' src='{uri}'>"
            )
    finally:
        for fig in figures.values():
            plt.close(fig)
    m = run.manifest
    population = run.frame("population")
    last = (
        population[population["step"] == population["step"].max()]
        if len(population)
        else population
    )
    meta = pd.DataFrame(
        [
            ("scenario", m.get("scenario", {}).get("name")),
            ("run", run.id),
            ("seed", run.seed),
            ("model", m.get("model")),
            ("status", m.get("status")),
            ("agents", m.get("agents")),
            ("steps completed", m.get("steps_completed")),
            ("started", m.get("started_at")),
        ],
        columns=["field", "value"],
    )
    body = [
        f"<h1>simworld report — {html.escape(str(m.get('scenario', {}).get('name')))}</h1>",
        f"<div class='meta'>{_table(meta)}</div>",
        "<h2>Cost</h2>",
        _table(cost_table(run)),
        _table(calls_by_purpose(run)),
        "<h2>Figures</h2>",
        *sections,
        *signal_section(run),
        "<h2>Conformity and inconstancy rates</h2>",
        _table(_rates_table(run)),
        "<h2>Per-diversity table (docs/metrics.md §1)</h2>",
        "<p>By seat order:</p>",
        _table(inconstancy_by_diversity(run.path)),
        "<p>By the share of the group holding the agent's own onboarding answer "
        "(the grouping of the paper's released code):</p>",
        _table(inconstancy_by_diversity(run.path, by="own_share")),
        "<h2>Population measures at the last probe step</h2>",
        _table(last),
        "<h2>Big Five (BFI) scores</h2>",
        _table(_personality_table(run)),
        *_scripted_tables(run),
        f"<p class='none'>Generated {datetime.now(UTC).isoformat(timespec='seconds')}.</p>",
    ]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>simworld report — {html.escape(run.id)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>"
    )
    path = out / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


__all__ = [
    "build_report",
    "calls_by_purpose",
    "cost_table",
    "figure_asch",
    "figure_belief",
    "figure_conformity",
    "figure_drift",
    "figure_network",
    "figure_population",
    "figure_trajectories",
    "report_figures",
    "signal_section",
]
