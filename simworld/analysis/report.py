"""``simworld report``: a self-contained HTML report of one run, with figures and tables.

The page is a list of sections (:data:`RUN_SECTIONS`), each a function of a
:class:`Page`; a new section is one more function in the list. Everything comes from the
run directory (no model call) and the same directory gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from simworld.analysis.figures import (
    CATEGORY_COLOURS,
    LAYOUT_SEED,
    LIKERT_CMAP,
    MISSING_COLOUR,
    answer_label,
    figure_accuracy,
    figure_asch_reference,
    figure_distributions,
    figure_handles,
    legend_outside,
    network_layout,
    place_labels,
    plain_text,
    time_axis,
)
from simworld.analysis.human_reference import ASCH_1951, Reference
from simworld.analysis.tables import Run, inconstancy_by_diversity, run_rates
from simworld.errors import ConfigError
from simworld.measures import STATES, asch_table, belief_curve
from simworld.runs.state import RunState, run_state
from simworld.runs.tables import read_table, run_agents, run_edges
from simworld.runs.writer import atomic_write_bytes
from simworld.support.events import EventType
from simworld.support.recipients import Recipients
from simworld.support.rundir import REPORT_DIR, TRANSCRIPT

REPORT_FILE = "report.html"
DPI = 100
EXTRA_ROWS = 200
NETWORK_PANELS = 3
MAX_LABELLED_NODES = 30
SMALL_POPULATION = 12
"""Populations up to this size draw nodes at full size; larger ones smaller (by √)."""
MESSAGES_PER_STEP = 3
MESSAGE_CHARS = 400
SAMPLE_SEED = 0
COUNT_AXIS = "agents (count)"
MISSING = "—"
"""What a table cell with no value shows."""


def _opinion_axis(topic: Any) -> str:
    if topic.ordinal:
        return f"private opinion (Likert 1–{len(topic.scale.values)})"
    return "share of agents answering (fraction)"


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


@plain_text
def figure_trajectories(
    drift: pd.DataFrame, topic: Any, interventions: pd.DataFrame | None = None
) -> Figure:
    """Private opinions over time on one Likert topic (docs/metrics.md §2).

    One thin line per agent (slightly jittered so overlaps show) and the mean in bold.
    Choice topics are drawn as answer distributions instead (:func:`figure_distributions`).
    """
    fig, ax = plt.subplots(figsize=(8, 4.5))
    df = drift[(drift["topic"] == topic.id) & ~drift["missing"].astype(bool)]
    ax.set_title(f"Opinion trajectories — {topic.id}")
    time_axis(ax, interventions, _opinion_axis(topic))
    rng = np.random.default_rng(LAYOUT_SEED)
    for i, (_, series) in enumerate(df.groupby("agent", sort=True)):
        jitter = rng.uniform(-0.08, 0.08)
        label = "one agent" if i == 0 else None
        ax.plot(series["step"], series["value"] + jitter, color="0.6", lw=0.8, alpha=0.6,
                label=label)  # fmt: skip
    mean = df.groupby("step")["value"].mean()
    ax.plot(mean.index, mean.to_numpy(), color="C3", lw=2.5, label="mean")
    ax.set_yticks(range(1, len(topic.scale.values) + 1))
    legend_outside(ax)
    return fig


def _chosen_steps(steps: Sequence[int], chosen: Sequence[int] | None) -> list[int]:
    if chosen:
        return [s for s in chosen if s in set(steps)]
    if len(steps) <= NETWORK_PANELS:
        return list(steps)
    return [steps[0], steps[len(steps) // 2], steps[-1]]


def _short_names(agents: pd.DataFrame) -> list[str]:
    """Node labels: the fewest leading words of the names that tell agents apart.

    Falls back to node numbers when even two words do not (generated personas).
    """
    names = [str(n).split() or [str(n)] for n in agents["name"].fillna(agents["agent"])]
    for words in (1, 2):
        short = [" ".join(n[:words]) for n in names]
        if len(set(short)) == len(short):
            return short
    return [f"#{int(n)}" for n in agents["node"]]


def _talk_layout(
    agents: pd.DataFrame, talks: list[list[str]]
) -> tuple[dict[int, np.ndarray], dict[str, tuple[np.ndarray, float]]]:
    """A layout grouping agents by the conversation they were in (pairs, groups)."""
    where = {a: f"conversation {i + 1}" for i, members in enumerate(talks) for a in members}
    grouped = agents.assign(group=[where.get(a, "did not talk") for a in agents["agent"]])
    ties = [(a, b) for members in talks for i, a in enumerate(members) for b in members[i + 1 :]]
    node_of = dict(zip(agents["agent"], agents["node"].astype(int), strict=True))
    edges = pd.DataFrame(
        [(node_of[a], node_of[b]) for a, b in ties if a in node_of and b in node_of],
        columns=["source", "target"],
    )
    return network_layout(grouped, edges)


@plain_text
def figure_network(
    agents: pd.DataFrame,
    edges: pd.DataFrame,
    drift: pd.DataFrame,
    topic: Any,
    *,
    steps: Sequence[int] | None = None,
    conversations: dict[int, list[list[str]]] | None = None,
) -> Figure:
    """The social network coloured by private opinion at chosen probe steps.

    Groups (the network's blocks, else detected communities) are laid out apart and
    outlined (:func:`simworld.analysis.figures.network_layout`); node size grows with degree; nodes
    are labelled with the agent's name when the population is small. Dark grey nodes have
    no answer at that step (a failed probe or a removed agent).

    With ``conversations`` (step → members of each pair or group conversation, as in
    ``pairs`` and ``group`` modes), a panel draws who talked with whom at its step in
    dark lines over the faint network, instead of the whole network alone.
    """
    graph: nx.Graph[int] = nx.Graph()
    nodes = [int(n) for n in agents["node"]]
    keys = list(agents["agent"])
    graph.add_nodes_from(nodes)
    graph.add_edges_from(zip(edges["source"].astype(int), edges["target"].astype(int), strict=True))
    degree = agents["degree"].astype(float).to_numpy()
    # smaller nodes in larger populations, so that they do not cover each other
    scale = min(1.0, math.sqrt(SMALL_POPULATION / max(len(agents), 1)))
    sizes = (40 + 260 * (degree / degree.max() if degree.max() > 0 else degree)) * scale
    df = drift[drift["topic"] == topic.id]
    shown: list[int | None] = [*_chosen_steps(sorted(df["step"].unique().tolist()), steps)]
    shown = shown or [None]
    panels = len(shown)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 5.5), squeeze=False)
    values = topic.scale.values
    norm = matplotlib.colors.Normalize(vmin=1, vmax=len(values))
    cmap = plt.get_cmap(LIKERT_CMAP)
    edge_alpha = max(0.05, min(0.4, 12 / max(len(edges), 1)))
    node_of = dict(zip(keys, nodes, strict=True))
    layouts: list[dict[int, np.ndarray]] = []
    for ax, step in zip(axes[0], shown, strict=True):
        talks = (conversations or {}).get(step, []) if step is not None else []
        pos, boxes = network_layout(agents, edges) if not talks else _talk_layout(agents, talks)
        ax.set_xlabel("layout x (arbitrary units)")
        ax.set_ylabel("layout y (arbitrary units)")
        at = df[df["step"] == step].set_index("agent") if step is not None else df.iloc[0:0]
        colours: list[str | tuple[float, float, float, float]] = []
        for key in keys:
            answer = at["answer"].get(key) if key in at.index else None
            if answer is None or pd.isna(answer):
                colours.append(MISSING_COLOUR)
            elif topic.ordinal:
                colours.append(cmap(norm(float(answer))))
            else:
                colours.append(CATEGORY_COLOURS(values.index(answer) % 10))
        if len(boxes) > 1:
            for label, (centre, radius) in boxes.items():
                xy = (float(centre[0]), float(centre[1]))
                ax.add_patch(matplotlib.patches.Circle(xy, radius, color="0.93", zorder=0))
                ax.annotate(label, (centre[0], centre[1] + radius), ha="center", va="bottom",
                            fontsize="x-small", color="0.35")  # fmt: skip
        nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.06 if talks else edge_alpha)
        if talks:
            ties = [(node_of[a], node_of[b]) for members in talks
                    for i, a in enumerate(members) for b in members[i + 1 :]
                    if a in node_of and b in node_of]  # fmt: skip
            nx.draw_networkx_edges(graph, pos, edgelist=ties, ax=ax,
                                   width=1.6, edge_color="0.15", alpha=0.7)  # fmt: skip
        nx.draw_networkx_nodes(graph, pos, nodelist=nodes, ax=ax, node_color=colours,
                               node_size=sizes, edgecolors="0.3", linewidths=0.5)  # fmt: skip
        layouts.append(pos)
        title = f"{topic.id} at step {step}" if step is not None else f"{topic.id}: no probe"
        ax.set_title(title + (f"\n(dark: {len(talks)} conversations of the step)" if talks else ""))
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(left=True, bottom=True, labelleft=True, labelbottom=True)
    if topic.ordinal:
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[0]))
        bar.set_label(_opinion_axis(topic))
    else:
        handles = [
            matplotlib.patches.Patch(color=CATEGORY_COLOURS(i % 10), label=answer_label(topic, v))
            for i, v in enumerate(values)
        ]
        handles.append(matplotlib.patches.Patch(color=MISSING_COLOUR, label="no answer"))
        axes[0][-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                           fontsize="small", frameon=False)  # fmt: skip
    if len(nodes) <= MAX_LABELLED_NODES:
        _name_nodes(agents, list(axes[0]), layouts, dict(zip(nodes, sizes, strict=True)))
    return fig


def _name_nodes(
    agents: pd.DataFrame,
    axes: list[Any],
    layouts: list[dict[int, np.ndarray]],
    sizes: dict[int, float],
) -> None:
    """Name the nodes of every panel where the names do not overlap (best-linked first);
    a panel that leaves names out says how many under its x axis."""
    names = dict(zip(agents["node"].astype(int), _short_names(agents), strict=True))
    order = sorted(names, key=lambda n: (-sizes[n], n))
    for ax, pos in zip(axes, layouts, strict=True):
        left_out = place_labels(ax, pos, {n: names[n] for n in order}, sizes)
        if left_out:
            ax.set_xlabel(f"{ax.get_xlabel()}\n({left_out} names left out where they would "
                          "overlap)")  # fmt: skip


def last_probe_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of each topic's last probe step (topics probed in turn end at different
    steps)."""
    if frame.empty:
        return frame
    return frame[frame["step"] == frame.groupby("topic")["step"].transform("max")]


@plain_text
def figure_drift(drift: pd.DataFrame, topics: dict[str, Any]) -> Figure | None:
    """Drift over agents at each topic's last probe step (docs/metrics.md §2; None: nothing
    to draw).

    Left: absolute drift from the first probe; right: distance from the persona's assigned
    opinion. Likert distances are in scale points; on choice topics both are 0/1
    (answer differs or not). A panel with no values is left out.
    """
    last = last_probe_rows(drift[~drift["missing"].astype(bool)])
    panels = [
        (column, what)
        for column, what in (
            ("abs_drift", "|drift| since the first probe"),
            ("anchored_distance", "distance from assigned opinion"),
        )
        if last[column].notna().any()
    ]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (column, what) in zip(axes[0], panels, strict=True):
        ax.set_xlabel(f"{what} (Likert points; choices: 0/1)")
        ax.set_ylabel(COUNT_AXIS)
        for i, topic in enumerate(topics):
            vals = last.loc[last["topic"] == topic, column].dropna().to_numpy(dtype=float)
            if vals.size:
                bins = np.arange(-0.25, max(vals.max(), 1) + 0.75, 0.5)
                ax.hist(vals, bins=bins, alpha=0.6, color=f"C{i}", label=topic)
        legend_outside(ax)
    fig.suptitle("Drift at each topic's last probe step")
    fig.tight_layout()
    return fig


@plain_text
def figure_conformity(conformity: pd.DataFrame, statements: pd.DataFrame) -> Figure | None:
    """Distribution over agents of local conformity and public/private mismatch.

    Left: per agent, the share of its counted moves that went toward its neighbours. Right:
    per agent, the share of its messages whose stated stance differs from its private answer.
    A panel with no counted case is left out (None when both are).
    """
    panels = []
    for frame, column, what in (
        (conformity, "conformed", "share of counted moves toward neighbours"),
        (statements, "public_private_mismatch", "share of messages unlike private view"),
    ):
        decided = frame.dropna(subset=[column]) if column in frame else frame.iloc[0:0]
        if not decided.empty:
            panels.append((decided, column, what))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    bins = np.linspace(0, 1, 11)
    for ax, (decided, column, what) in zip(axes[0], panels, strict=True):
        ax.set_xlabel(f"{what} (fraction)")
        ax.set_ylabel(COUNT_AXIS)
        per_agent = decided.groupby("agent")[column].apply(lambda s: s.astype(bool).mean())
        ax.hist(per_agent.to_numpy(dtype=float), bins=bins, color="C2", alpha=0.8)
        ax.set_xlim(0, 1)
    fig.suptitle("Conformity and public/private consistency")
    fig.tight_layout()
    return fig


POPULATION_PANELS = (
    ("bias", "bias (Likert points, 0 = midpoint)", True),
    ("diversity", "diversity (Likert points)", True),
    ("polarization", "polarization (Esteban–Ray)", True),
    ("consensus_share", "consensus share (fraction)", False),
    ("entropy", "entropy (bits)", False),
)
"""Population measures drawn over time: column, axis label, Likert topics only."""


@plain_text
def figure_population(
    population: pd.DataFrame, topics: dict[str, Any], interventions: pd.DataFrame | None = None
) -> Figure | None:
    """Population measures over time (docs/metrics.md §5), a panel per measure, a line per topic.

    Spread measures (bias, diversity, polarization) exist on Likert topics only; a panel
    with no value is left out.
    """
    panels = []
    for column, label, ordinal_only in POPULATION_PANELS:
        lines = []
        for i, topic in enumerate(topics.values()):
            if ordinal_only and not topic.ordinal:
                continue
            df = population[population["topic"] == topic.id].sort_values("step")
            if column in df and df[column].notna().any():
                lines.append((i, topic.id, df))
        if lines:
            panels.append((column, label, lines))
    if not panels:
        return None
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        fig.delaxes(ax)
    for ax, (column, label, lines) in zip(axes.flat, panels, strict=False):
        for i, topic_id, df in lines:
            ax.plot(df["step"], df[column], marker="o", color=CATEGORY_COLOURS(i % 10),
                    label=topic_id)  # fmt: skip
        ax.set_title(column.replace("_", " "))
        time_axis(ax, interventions, label)
        if column == "consensus_share":
            ax.set_ylim(0, 1.05)
    handles, labels = figure_handles(fig)
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
               fontsize="small", title="topic")  # fmt: skip
    fig.tight_layout()
    return fig


@plain_text
def figure_belief(curve: pd.DataFrame, interventions: pd.DataFrame) -> Figure:
    """Shares of susceptible, believing and recovered agents per probe step.

    Dotted lines mark interventions: one at step k happens before step k's interaction,
    i.e. between the probes k-1 and k.
    """
    fig, ax = plt.subplots(figsize=(8, 4))
    names = {"S": "susceptible", "B": "believing", "R": "recovered"}
    for state in STATES:
        ax.plot(curve["step"], curve[f"share_{state}"], marker="o", label=names[state])
    ax.set_ylim(0, 1.1)
    ax.set_title("belief states (dotted: interventions)")
    time_axis(ax, interventions, "share of active agents (fraction)")
    legend_outside(ax)
    return fig


@plain_text
def figure_asch(levels: pd.DataFrame, reference: Reference | None = None) -> Figure:
    """Asch conformity level CL and resistance level RL as functions of p (docs/metrics.md §3).

    With a ``reference``, the published human values are drawn beside (dashed, black).
    """
    return figure_asch_reference(levels, reference)


def report_figures(
    run: Run, *, steps: Sequence[int] | None = None, notes: list[str] | None = None
) -> dict[str, Figure]:
    """Every figure of the report, by file stem (open; the caller closes them).

    Figures of change over time (trajectories, answer distributions, accuracy, drift,
    conformity, population measures) need at least two probe steps; a run probed once (an
    Asch design) gets its networks and its own figures only. A figure or panel with no
    data is left out, and one line saying why is appended to ``notes``.
    """
    notes = [] if notes is None else notes
    topics = run.topics
    drift = run.frame("drift")
    interventions = run.frame("interventions")
    over_time = drift["step"].nunique() >= 2
    figs: dict[str, Figure] = {}
    agents, edges = run_agents(run.path), run_edges(run.path)
    talks = conversations(run) if run.setting("protocol.mode") in {"pairs", "group"} else None
    for topic in topics.values():
        answered = drift[(drift["topic"] == topic.id) & ~drift["missing"].astype(bool)]
        if over_time and topic.ordinal and not answered.empty:
            figs[f"trajectories_{topic.id}"] = figure_trajectories(drift, topic, interventions)
        elif over_time and topic.ordinal:
            notes.append(f"Trajectories of {topic.id}: no probe of it was answered.")
        if (drift["topic"] == topic.id).any():
            figs[f"network_{topic.id}"] = figure_network(
                agents, edges, drift, topic, steps=steps, conversations=talks
            )
        else:
            notes.append(f"Network of {topic.id} left out: the topic was never probed.")
    if over_time:
        figs["distributions"] = figure_distributions(drift, list(topics.values()), interventions)
        with_truth = [t for t in topics.values() if t.truth is not None]
        if with_truth:
            figs["accuracy"] = figure_accuracy(drift, with_truth, interventions)
        else:
            notes.append("Accuracy over time: no topic has a truth.")
        optional = {
            "drift": (figure_drift(drift, topics), "no answered probe at the last step"),
            "conformity": (
                figure_conformity(run.frame("conformity"), run.frame("statements")),
                "no move between probes and no stated stance was counted",
            ),
            "population": (
                figure_population(run.frame("population"), topics, interventions),
                "no population measure has a value",
            ),
        }
        for stem, (fig, why) in optional.items():
            if fig is None:
                notes.append(f"{stem.capitalize()} figure left out: {why}.")
            else:
                figs[stem] = fig
    else:
        notes.append("Figures of change over time left out: the run was probed at one step only.")
    belief = run.frame("belief")
    if not belief.empty:
        figs["belief"] = figure_belief(belief_curve(belief), interventions)
    trials = run.frame("asch")
    if not trials.empty:
        figs["asch"] = figure_asch(asch_table(trials), ASCH_1951)
    return figs


@plain_text
def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p class='none'>(no rows)</p>"
    shown = df.copy()
    for name, column in df.items():  # na_rep does not reach a nullable column's <NA>
        if isinstance(column.dtype, pd.api.extensions.ExtensionDtype):
            shown[name] = column.astype(object).where(column.notna(), MISSING)
    return shown.to_html(index=False, na_rep=MISSING, float_format=lambda x: f"{x:.3g}", border=0)


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
    """Model calls per purpose (``post``, ``probe``, ``stance`` …): count, tokens, cost (USD).

    Reads ``llm_calls.parquet`` of any version (the call key was named ``key`` before it
    was named ``call`` like in every other table).
    """
    path = run.path / "llm_calls.parquet"
    if not path.is_file():
        return pd.DataFrame()
    calls = read_table(path).to_pandas()
    if calls.empty:
        return pd.DataFrame()
    calls = calls.rename(columns={"key": "call"})
    calls["kind"] = calls["purpose"].str.split(":").str[0]
    calls["failed"] = calls["status"] != "ok"
    return (
        calls.groupby("kind", sort=True)
        .agg(
            calls=("call", "size"),
            failed=("failed", "sum"),
            prompt_tokens=("prompt_tokens", "sum"),
            completion_tokens=("completion_tokens", "sum"),
            cost_usd=("cost_usd", "sum"),
        )
        .reset_index()
    )


def conversations(run: Run) -> dict[int, list[list[str]]]:
    """Step → the members of each pair or group conversation of that step (transcript)."""
    import json

    out: dict[int, list[list[str]]] = {}
    with open(run.path / TRANSCRIPT, encoding="utf-8") as fh:
        for line in fh:
            if f'"type": "{EventType.CONVERSATION}"' in line:
                event = json.loads(line)
                if event.get("type") == EventType.CONVERSATION:
                    out.setdefault(int(event["step"]), []).append(list(event["members"]))
    return out


def sampled_messages(run: Run, *, per_step: int = MESSAGES_PER_STEP) -> pd.DataFrame:
    """A few of what agents actually said at each step (a seeded sample, in spoken order).

    Returns:
        ``step, agent, name, topic, listeners, text`` (text cut at ``MESSAGE_CHARS``).
    """
    import json

    names = dict(zip(*(run_agents(run.path)[c] for c in ("agent", "name")), strict=True))
    by_step: dict[int, list[dict[str, Any]]] = {}
    # the network events too: a compact ``to`` names a neighbourhood (support.recipients)
    wanted = [
        f'"type": "{t}"' for t in (EventType.MESSAGE, EventType.RUN_START, EventType.INTERVENTION)
    ]
    recipients = Recipients()
    with open(run.path / TRANSCRIPT, encoding="utf-8") as fh:
        for line in fh:
            if not any(w in line for w in wanted):
                continue
            event = json.loads(line)
            recipients.observe(event)
            if event.get("type") == EventType.MESSAGE and event.get("text"):
                event["listeners"] = len(recipients.of(event))
                by_step.setdefault(int(event["step"]), []).append(event)
    rows = []
    for step in sorted(by_step):
        said = by_step[step]
        rng = np.random.default_rng([SAMPLE_SEED, step])
        picked = sorted(rng.choice(len(said), size=min(per_step, len(said)), replace=False))
        for i in picked:
            e = said[int(i)]
            text = str(e["text"]).strip()
            rows.append(
                {
                    "step": step,
                    "agent": e["agent"],
                    "name": names.get(e["agent"], e["agent"]),
                    "topic": e.get("topic"),
                    "listeners": e["listeners"],
                    "text": text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "…",
                }
            )
    columns = ["step", "agent", "name", "topic", "listeners", "text"]
    return pd.DataFrame(rows, columns=columns)


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


STYLE = """
body { font-family: sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #c33; } h2 { margin-top: 2em; color: #833; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em;
        display: block; max-width: 100%; overflow-x: auto; }  /* wide tables scroll */
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3eaea; } img { max-width: 100%; border: 1px solid #eee; }
.none { color: #888; } .meta td { text-align: left; } .notes li { color: #666; }
.warning { color: #a00; }
table.messages td { text-align: left; vertical-align: top; } .cite { font-size: 0.85em; }
"""


@dataclass
class Page:
    """What report sections draw on: the run(s), the output directory and the notes.

    Args:
        out: The report directory (figures are written there as PNG too).
        run: The run (None in a comparison report).
        steps: Probe steps at which to draw the network.
    """

    out: Path
    run: Run | None = None
    steps: Sequence[int] | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def image(self, stem: str, fig: Figure) -> str:
        """Write the figure as ``<stem>.png`` and return it inlined in an ``<img>``."""
        try:
            data = _png(fig)
        finally:
            plt.close(fig)
        atomic_write_bytes(self.out / f"{stem}.png", data, durable=False)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        return (
            f"<h3>{html.escape(stem.replace('_', ' '))}</h3>"
            f"<img alt='{html.escape(stem)}' src='{uri}'>"
        )


Section = Callable[[Page], list[str]]


def _run(page: Page) -> Run:
    if page.run is None:
        raise ValueError("a run section needs page.run")
    return page.run


def builds_text(builds: object) -> str | None:
    """The manifest's ``model_builds`` in words, one clause a build (the embedded model's
    answers depend on them); ``None`` when it lists none."""
    if not isinstance(builds, list):
        return None
    texts = []
    for build in builds:
        if isinstance(build, dict):
            features = build.get("compiled_for")
            texts.append(
                f"llama-cpp-python {build.get('llama_cpp_python')} compiled for "
                f"{' '.join(map(str, features)) if isinstance(features, list) else features} "
                f"on {build.get('cpu') or 'a CPU not named'}, extra buffer types "
                f"{build.get('extra_bufts')}"
            )
    return "; ".join(texts) or None


def section_header(page: Page) -> list[str]:
    """Title and what was run (scenario, seed, model, status, branch)."""
    run = _run(page)
    m = run.manifest
    branch = m.get("branch") or {}
    description = m.get("scenario", {}).get("description")
    rows = [
        ("scenario", m.get("scenario", {}).get("name")),
        # folded or literal YAML text keeps line ends, which a table cell would show as "\n"
        ("description", " ".join(str(description).split()) if description else None),
        ("run", run.id),
        ("seed", run.seed),
        ("model", m.get("model")),
        ("answered by", builds_text(m.get("model_builds"))),
        ("status", m.get("status")),
        ("agents", m.get("agents")),
        ("steps completed", m.get("steps_completed")),
        ("started", m.get("started_at")),
        ("finished", m.get("finished_at")),
    ]
    if branch:
        rows.append(("branch of", f"{Path(branch.get('parent_run', '')).name} "
                                  f"from step {branch.get('from_step')}"))  # fmt: skip
    meta = pd.DataFrame([r for r in rows if r[1] is not None], columns=["field", "value"])
    title = html.escape(str(m.get("scenario", {}).get("name")))
    return [f"<h1>simworld report — {title}</h1>", f"<div class='meta'>{_table(meta)}</div>"]


def section_cost(page: Page) -> list[str]:
    """Manifest totals and model calls per purpose."""
    run = _run(page)
    return [
        "<h2>Cost</h2>",
        "<p>cost: what the run's answers cost when the model gave them, cached answers "
        "included (as recorded); spent: what the calls sent to the model in this run cost "
        "(0 for answers from the cache). Both are 0 unless <code>llm.price</code> is set or "
        "litellm knows the provider's prices.</p>",
        _table(cost_table(run)),
        _table(calls_by_purpose(run)),
    ]


def section_figures(page: Page) -> list[str]:
    """Every figure (:func:`report_figures`); left-out figures are listed in the notes."""
    run = _run(page)
    figures = report_figures(run, steps=page.steps, notes=page.notes)
    out = ["<h2>Figures</h2>"]
    try:
        for stem, fig in figures.items():
            out.append(page.image(stem, fig))
            if stem == "asch":
                out.append(
                    f"<p class='cite'>Human reference: {html.escape(ASCH_1951.note)} "
                    f"{html.escape(ASCH_1951.citation)}</p>"
                )
    finally:
        for fig in figures.values():
            plt.close(fig)
    return out


def section_messages(page: Page) -> list[str]:
    """A few sampled messages per step: what the agents actually said."""
    messages = sampled_messages(_run(page))
    if messages.empty:
        page.notes.append("Sampled messages left out: no agent spoke (no message events).")
        return []
    rows = "".join(
        f"<tr><td>{r.step}</td><td>{html.escape(str(r.name))}</td>"
        f"<td>{html.escape(str(r.topic))}</td><td>{r.listeners}</td>"
        f"<td>{html.escape(str(r.text))}</td></tr>"
        for r in messages.itertuples(index=False)
    )
    return [
        f"<h2>What agents said (up to {MESSAGES_PER_STEP} sampled messages per step)</h2>",
        "<table class='messages'><tr><th>step</th><th>speaker</th><th>topic</th>"
        f"<th>listeners</th><th>message</th></tr>{rows}</table>",
    ]


def section_rates(page: Page) -> list[str]:
    """Conformity and inconstancy rates and the per-diversity table."""
    run = _run(page)
    rates = ["<h2>Conformity and inconstancy rates</h2>", _table(_rates_table(run))]
    if run.frame("inconstancy").empty:
        page.notes.append(
            "Per-diversity tables left out, and the inconstancy rates have no case: the run "
            "has no conversation (pairs or group) with a probe before and after it "
            "(docs/metrics.md §1)."
        )
        return rates
    return [
        *rates,
        "<h2>Per-diversity table (docs/metrics.md §1)</h2>",
        "<p>By seat order:</p>",
        _table(inconstancy_by_diversity(run.path)),
        "<p>By the share of the group holding the agent's own onboarding answer "
        "(the grouping of the paper's released code):</p>",
        _table(inconstancy_by_diversity(run.path, by="own_share")),
    ]


def section_signal(page: Page) -> list[str]:
    """Signal checks (docs/metrics.md §8): a warning in plain words per topic whose probe
    answers look degenerate or position-driven, then the checks' table."""
    frame = _run(page).frame("signal")
    out = ["<h2>Do the answers carry an opinion? (signal checks, docs/metrics.md §8)</h2>"]
    warnings = [w for w in frame["warning"] if isinstance(w, str)] if len(frame) else []
    out += [f"<p class='warning'><b>Warning:</b> {html.escape(w)}</p>" for w in warnings]
    if len(frame) and not warnings:
        out.append("<p>No topic's answers look degenerate or position-driven.</p>")
    out.append(_table(frame.drop(columns=["warning"]) if len(frame) else frame))
    return out


def section_population(page: Page) -> list[str]:
    """Population measures at each topic's last probe step."""
    last = last_probe_rows(_run(page).frame("population"))
    return ["<h2>Population measures at each topic's last probe step</h2>", _table(last)]


def section_personality(page: Page) -> list[str]:
    """Big Five scores, when administered."""
    table = _personality_table(_run(page))
    if table.empty:
        return []
    return ["<h2>Big Five (BFI) scores</h2>", _table(table)]


def section_scripted(page: Page) -> list[str]:
    """Interventions, belief states and Asch levels, for runs that have them."""
    run = _run(page)
    out = []
    interventions = run.frame("interventions")
    if not interventions.empty:
        out += ["<h2>Interventions</h2>", _table(interventions)]
    belief = run.frame("belief")
    if not belief.empty:
        out += ["<h2>Belief states per probe step</h2>", _table(belief_curve(belief))]
    trials = run.frame("asch")
    if not trials.empty:
        levels = asch_table(trials).merge(
            ASCH_1951.frame().rename(columns={"CL": "CL_humans", "n": "n_humans"}),
            on="p",
            how="left",
        )
        out += [
            "<h2>Asch-style conformity by p (docs/metrics.md §3), beside Asch (1951)</h2>",
            _table(levels),
        ]
    return out


def section_extra(page: Page) -> list[str]:
    """One table per frame of the scenario's extra trackers (at most :data:`EXTRA_ROWS`
    rows each)."""
    run = _run(page)
    if run.own_frames_unwritten:
        page.notes.append(
            "Frames of the run's own trackers (trackers.extra): the run wrote no trackers/ "
            f"folder; simworld analyze {run.path} writes them (it runs the trackers' code)."
        )
    out = []
    for name in run.own_frame_names():
        frame = run.frame(name)
        note = f" (first {EXTRA_ROWS} of {len(frame)} rows)" if len(frame) > EXTRA_ROWS else ""
        out += [f"<h2>Tracker {html.escape(name)}{note}</h2>", _table(frame.head(EXTRA_ROWS))]
    return out


def section_notes(page: Page) -> list[str]:
    """One line per figure or panel left out, saying why."""
    if not page.notes:
        return []
    items = "".join(f"<li>{html.escape(n)}</li>" for n in page.notes)
    return ["<h2>Left out</h2>", f"<ul class='notes'>{items}</ul>"]


RUN_SECTIONS: list[Section] = [
    section_header,
    section_cost,
    section_figures,
    section_signal,
    section_messages,
    section_rates,
    section_population,
    section_personality,
    section_scripted,
    section_extra,
    section_notes,
]
"""The sections of a single-run report, in page order (``section_notes`` last)."""


def write_page(page: Page, sections: Sequence[Section], title: str) -> Path:
    """Render ``sections`` into ``<page.out>/report.html`` (atomically) and return it."""
    body: list[str] = []
    for section in sections:
        body += section(page)
    text = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>"
    )
    path = page.out / REPORT_FILE
    atomic_write_bytes(path, text.encode("utf-8"), durable=False)
    return path


def build_report(
    run_dir: str | Path, *, out_dir: str | Path | None = None, steps: Sequence[int] | None = None
) -> Path:
    """Write ``<run_dir>/report/report.html`` (self-contained) and its PNG figures.

    Figures (matplotlib, Agg backend; every axis labelled with its unit; integer steps;
    interventions marked on every time axis; legends outside the data): opinion
    trajectories, answer distributions over time, accuracy against ``truth``, the network
    laid out by group and coloured by opinion, drift and conformity distributions,
    population measures over time, belief states and Asch levels (beside Asch 1951) when
    the run has them. Tables: the run's cost, a few sampled messages per step,
    conformity/inconstancy rates, the per-diversity table, the last population measures,
    BFI scores, interventions, belief states and Asch levels, and one table per frame of
    the scenario's extra trackers. Figures with no data are left out and listed with the
    reason.

    Args:
        run_dir: A run directory (tracker frames are re-derived if absent).
        out_dir: Where to write (default ``<run_dir>/report``).
        steps: Probe steps at which to draw the network (default first, middle, last).

    A run that did not finish (crashed, interrupted, still going) gets a report of the steps
    it recorded, marked incomplete at the top.

    Returns:
        The HTML file.

    Raises:
        ConfigError: The directory holds no run, or a run that recorded nothing yet, or
            ``steps`` names a step at which the run took no probe.
    """
    state = run_state(run_dir)
    run = Run(Path(run_dir))
    if steps:
        probed = sorted({int(s) for s in run.frame("drift")["step"]})
        wrong = [s for s in steps if s not in probed]
        if wrong:
            known = ", ".join(map(str, probed)) or "none"
            msg = f"{wrong[0]}: not a probe step of this run (its probe steps: {known})"
            raise ConfigError(run.path, "--network-steps", msg)
    out = Path(out_dir) if out_dir is not None else run.path / REPORT_DIR
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    page = Page(out=out, run=run, steps=steps)
    sections = RUN_SECTIONS
    if not state.complete:
        sections = [RUN_SECTIONS[0], _incomplete(state), *RUN_SECTIONS[1:]]
    try:
        return write_page(page, sections, f"simworld report — {run.id}")
    except BaseException:
        if made:  # no half-written report: a damaged run, a stop
            shutil.rmtree(out, ignore_errors=True)
        raise


def _incomplete(state: RunState) -> Section:
    """A section saying the run did not finish and how far it got."""

    def section(page: Page) -> list[str]:
        return [f"<p class='warning'><b>{html.escape(state.describe())}</b></p>"]

    return section


__all__ = [
    "RUN_SECTIONS",
    "Page",
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
    "sampled_messages",
    "section_notes",
    "section_signal",
    "write_page",
]
