"""Figure helpers shared by the single-run and the comparison reports.

Every time axis gets integer step ticks and the interventions marked (a dotted line
between the probes around the intervention, labelled by its kind); legends sit outside the
plotting area (figures are saved with a tight bounding box, so they are never cut off).
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox

from simworld.analysis.human_reference import Reference

P = ParamSpec("P")
R = TypeVar("R")

STEP_AXIS = "probe step (simulation steps)"
SHARE_AXIS = "share of agents (fraction)"
LAYOUT_SEED = 0
MAX_GROUP_SPREAD = 2.4
"""Largest radius of a group in the network layout, per √(its share of the agents)."""
MISSING_COLOUR = "0.45"  # darker than the neutral middle of LIKERT_CMAP
CATEGORY_COLOURS = plt.get_cmap("tab10")
LIKERT_CMAP = "coolwarm"
LEGEND_WIDTH = 40
"""Characters per line of a legend entry: a long option or condition is wrapped, so the
legend does not squeeze the plots beside it."""


def legend_text(text: str) -> str:
    """``text`` wrapped to :data:`LEGEND_WIDTH` characters a line, for a legend."""
    return "\n".join(textwrap.wrap(text, LEGEND_WIDTH, break_long_words=True)) or text


def answer_label(topic: Any, answer: Any) -> str:
    """A legend entry for one answer of ``topic``: ``B: Affordable housing`` (wrapped)."""
    return legend_text(f"{answer}: {topic.scale.label(answer)}")


def plain_text(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` (one that builds or saves figures) with matplotlib's math text off:
    a ``$`` in an option, a statement or a condition label ("cut the fare by $1 or by $2")
    is text, not the start of a formula (which would garble the label or fail to parse)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context({"text.parse_math": False}):
            return function(*args, **kwargs)

    return wrapper


def integer_steps(ax: Any) -> None:
    """Only whole steps as ticks on the x axis."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def mark_interventions(ax: Any, interventions: pd.DataFrame) -> None:
    """A dotted line per intervention, labelled by its kind above the plotting area.

    An intervention at step k happens before step k's interaction, i.e. between the
    probes of steps k-1 and k: the line is drawn at k - 0.5. Labels sit above the axes
    (alternating between two heights), so they never cover data.
    """
    if interventions is None or interventions.empty:
        return
    trans = ax.get_xaxis_transform()
    ordered = interventions.sort_values(["step", "index"])
    for i, (step, kind) in enumerate(zip(ordered["step"], ordered["kind"], strict=True)):
        x = float(step) - 0.5
        ax.axvline(x, color="0.35", linestyle=":", lw=1.2, zorder=0)
        ax.text(x, 1.01 + 0.06 * (i % 2), str(kind), transform=trans, fontsize="x-small",
                color="0.3", va="bottom", ha="center", clip_on=False)  # fmt: skip
    ax.set_title(ax.get_title(), pad=30)


def time_axis(ax: Any, interventions: pd.DataFrame | None, ylabel: str) -> None:
    """Label a time axis, make its ticks whole steps and mark the interventions.

    Call it after setting the title (the title is moved up above the labels).
    """
    ax.set_xlabel(STEP_AXIS)
    ax.set_ylabel(ylabel)
    integer_steps(ax)
    if interventions is not None:
        mark_interventions(ax, interventions)


def legend_outside(ax: Any, **kwargs: Any) -> None:
    """The axes' legend to the right of the plotting area (never over the data)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  fontsize="small", frameon=False, **kwargs)  # fmt: skip


def figure_handles(fig: Figure) -> tuple[list[Any], list[str]]:
    """Legend handles and labels of every axes of a figure, each label once."""
    seen: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


@plain_text
def figure_accuracy(
    drift: pd.DataFrame, topics: Sequence[Any], interventions: pd.DataFrame
) -> Figure:
    """Share of answered probes equal to the topic's ``truth``, per probe step and topic."""
    fig, ax = plt.subplots(figsize=(8, 4))
    answered = drift[~drift["missing"].astype(bool)]
    for i, topic in enumerate(topics):
        df = answered[answered["topic"] == topic.id]
        if df.empty:
            continue
        correct = (df["answer"].astype(str) == str(topic.truth)).groupby(df["step"]).mean()
        ax.plot(correct.index, correct.to_numpy(), marker="o", color=CATEGORY_COLOURS(i % 10),
                label=f"{topic.id} (truth {topic.truth})")  # fmt: skip
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("Accuracy: answers equal to the truth")
    time_axis(ax, interventions, "share of answers correct (fraction)")
    legend_outside(ax)
    return fig


def answer_shares(df: pd.DataFrame, values: Sequence[Any]) -> pd.DataFrame:
    """Step × answer share of the active agents' probes (``no answer``: failed probes)."""
    answers = df["answer"].astype("object").where(~df["missing"].astype(bool), "no answer")
    table = pd.crosstab(df["step"], answers, normalize="index")
    columns = [str(v) for v in values if str(v) in table.columns]
    if "no answer" in table.columns:
        columns.append("no answer")
    return table[columns]


@plain_text
def figure_distributions(
    drift: pd.DataFrame, topics: Sequence[Any], interventions: pd.DataFrame
) -> Figure:
    """Per topic, the distribution of private answers at each probe step (stacked bars)."""
    fig, axes = plt.subplots(len(topics), 1, figsize=(9, 3.2 * len(topics)), squeeze=False)
    for ax, topic in zip(axes[:, 0], topics, strict=True):
        df = drift[drift["topic"] == topic.id]
        shares = answer_shares(df, topic.scale.values)
        bottom = np.zeros(len(shares))
        n = len(topic.scale.values)
        cmap = plt.get_cmap(LIKERT_CMAP)
        order = [str(v) for v in topic.scale.values]
        for answer in shares.columns:
            if answer == "no answer":
                colour: Any = MISSING_COLOUR
                label = "no answer (failed probe)"
            else:
                j = order.index(answer)
                colour = cmap(j / max(n - 1, 1)) if topic.ordinal else CATEGORY_COLOURS(j % 10)
                label = answer_label(topic, answer)
            ax.bar(shares.index, shares[answer], bottom=bottom, color=colour, width=0.8,
                   label=label, edgecolor="white", linewidth=0.5)  # fmt: skip
            bottom += shares[answer].to_numpy()
        ax.set_ylim(0, 1)
        ax.set_title(f"{topic.id}: answers at each probe")
        time_axis(ax, interventions, SHARE_AXIS)
        legend_outside(ax)
    fig.tight_layout()
    return fig


def _groups(agents: pd.DataFrame) -> tuple[list[str], str]:
    """Each agent's group label (network block, else detected community) and what it is."""
    if "group" in agents and agents["group"].notna().any():
        return [str(g) for g in agents["group"].fillna("—")], "block"
    return [f"community {int(c)}" for c in agents["community"]], "community"


def network_layout(
    agents: pd.DataFrame, edges: pd.DataFrame
) -> tuple[dict[int, np.ndarray], dict[str, tuple[np.ndarray, float]]]:
    """Positions that show the structure: each group laid out apart (group-in-a-box).

    Groups (network blocks, else Louvain communities) are placed on a circle, largest
    first, each laid out with a seeded spring layout of its own edges and scaled by the
    square root of its size. A single group is one spring layout.

    Returns:
        Node → position, and group label → (centre, radius) for drawing the groups.
    """
    labels, _ = _groups(agents)
    nodes = [int(n) for n in agents["node"]]
    graph: nx.Graph[int] = nx.Graph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(zip(edges["source"].astype(int), edges["target"].astype(int), strict=True))
    members: dict[str, list[int]] = {}
    for node, label in zip(nodes, labels, strict=True):
        members.setdefault(label, []).append(node)
    order = sorted(members, key=lambda g: (-len(members[g]), min(members[g])))
    pos: dict[int, np.ndarray] = {}
    boxes: dict[str, tuple[np.ndarray, float]] = {}
    k = len(order)
    ring = 0.0 if k == 1 else 1.5 + 0.6 * math.sqrt(k)
    shares = [math.sqrt(len(members[g]) / max(len(nodes), 1)) for g in order]
    spread = 1.0 if k == 1 else _group_spread(shares, ring)
    for i, label in enumerate(order):
        sub = graph.subgraph(members[label])
        radius = spread * shares[i]
        angle = 2 * math.pi * i / k
        centre = np.array([ring * math.cos(angle), ring * math.sin(angle)])
        if len(sub) > 1:
            local = nx.spring_layout(sub, seed=LAYOUT_SEED)
        else:
            local = {members[label][0]: np.zeros(2)}
        for node, xy in local.items():
            pos[int(node)] = centre + radius * np.asarray(xy)
        boxes[label] = (centre, radius * 1.15 + 0.05)
    return pos, boxes


def _group_spread(shares: list[float], ring: float) -> float:
    """How large groups are drawn (radius = spread × √share): as large as
    :data:`MAX_GROUP_SPREAD`, and small enough that neighbours on the ring do not touch."""
    k = len(shares)
    gap = 2 * ring * math.sin(math.pi / k)  # between neighbouring centres
    fits = [0.95 * (gap - 0.1) / (1.15 * (shares[i] + shares[(i + 1) % k])) for i in range(k)]
    return min(MAX_GROUP_SPREAD, *fits)


def place_labels(
    ax: Any,
    pos: dict[int, np.ndarray],
    labels: dict[int, str],
    sizes: dict[int, float],
    *,
    fontsize: float = 7,
) -> int:
    """Name nodes where the name overlaps no other name, no other node and no border.

    Nodes are taken in ``labels``' order (put the most important first); each name is tried
    above its node, then below, right, left and at the four corners, and left out where all
    eight collide. Call it
    once the figure's layout is final (after colour bars and legends): positions are
    measured on the drawn figure.

    Args:
        ax: The axes the nodes are drawn in.
        pos: Node → position (data coordinates).
        labels: Node → name, in the order to place them.
        sizes: Node → marker area as ``scatter`` takes it (points²).
        fontsize: Font size of the names (points).

    Returns:
        How many names were left out.
    """
    fig = ax.figure
    fig.canvas.draw()  # settle the limits an equal aspect sets at drawing time
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72.0  # pixels per point
    frame = ax.get_window_extent(renderer)
    centre = {n: ax.transData.transform(pos[n]) for n in labels}
    radius = {n: math.sqrt(sizes[n]) / 2 * px for n in labels}
    nodes = {
        n: Bbox.from_extents(x - radius[n], y - radius[n], x + radius[n], y + radius[n])
        for n, (x, y) in centre.items()
    }
    placed: list[Bbox] = []
    left_out = 0
    for node, name in labels.items():
        gap = radius[node] / px + 1.0  # points
        diag = gap * 0.7
        for dx, dy, ha, va in (
            (0, gap, "center", "bottom"),
            (0, -gap, "center", "top"),
            (gap, 0, "left", "center"),
            (-gap, 0, "right", "center"),
            (diag, diag, "left", "bottom"),
            (-diag, diag, "right", "bottom"),
            (diag, -diag, "left", "top"),
            (-diag, -diag, "right", "top"),
        ):
            text = ax.annotate(name, xy=pos[node], xytext=(dx, dy), textcoords="offset points",
                               ha=ha, va=va, fontsize=fontsize)  # fmt: skip
            box = text.get_window_extent(renderer)
            clear = (
                frame.contains(box.x0, box.y0)
                and frame.contains(box.x1, box.y1)
                and not any(box.overlaps(other) for other in placed)
                and not any(box.overlaps(b) for n, b in nodes.items() if n != node)
            )
            if clear:
                placed.append(box)
                break
            text.remove()
        else:
            left_out += 1
    return left_out


@plain_text
def figure_asch_reference(levels: pd.DataFrame, reference: Reference | None) -> Figure:
    """Asch conformity level CL and resistance level RL as functions of p, with humans.

    Args:
        levels: ``simworld.measures.asch_table`` (``p``, ``CL``, ``RL``).
        reference: Published human values of CL by p, drawn beside (None: none).
    """
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(levels["p"], levels["CL"], marker="o", label="CL: answer = peers' answer (simulated)")
    ax.plot(levels["p"], levels["RL"], marker="s", label="RL: answer = own earlier answer")
    if reference is not None:
        human = reference.frame()
        ax.plot(human[reference.variable], human[reference.measure], marker="D", color="k",
                linestyle="--", label=f"CL, {reference.label}")  # fmt: skip
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("unanimous scripted peers p (count)")
    ax.set_ylabel("share of trials (fraction)")
    integer_steps(ax)
    ax.set_title("Asch-style conformity")
    legend_outside(ax)
    return fig


__all__ = [
    "STEP_AXIS",
    "answer_shares",
    "figure_accuracy",
    "figure_asch_reference",
    "figure_distributions",
    "figure_handles",
    "integer_steps",
    "legend_outside",
    "mark_interventions",
    "network_layout",
    "place_labels",
    "time_axis",
]
