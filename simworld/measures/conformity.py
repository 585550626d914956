"""Conformity: local moves toward neighbours, and Asch-style conformity/resistance levels.

Source: docs/metrics.md §3. Local conformity follows the definition there; the Asch-style levels
follow Zhu et al. 2024, "Conformity in Large Language Models", arXiv 2410.12428.

Missing answers (None/NaN from failed calls) are never values: an event needing one is not
counted (not eligible), a neighbour without a stated opinion is left out of the mean or
majority, and an Asch trial without an answer is excluded and counted in ``n_missing``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd

from simworld.measures._common import (
    CATEGORICAL,
    ORDINAL,
    Answer,
    Rate,
    ScaleKind,
    infer_scale,
    is_missing,
    ordinal_array,
    plurality,
    present,
    rate_of,
)

__all__ = [
    "ConformitySummary",
    "asch_table",
    "conformity_event",
    "conformity_summary",
    "conformity_table",
    "local_conformity",
    "neighbour_opinion",
]

Neighbours = Mapping[Hashable, Iterable[Hashable]] | nx.Graph


def neighbour_opinion(
    stated: Iterable[Answer | None], *, scale: ScaleKind | None = None
) -> Answer | float | None:
    """``m_N(i)(t)``: the neighbours' mean (ordinal) or majority (categorical) stated opinion.

    Source: docs/metrics.md §3 (notation ``m_N(i)(t)``).

    Args:
        stated: The neighbours' stated opinions at t; missing ones are dropped.
        scale: ``"ordinal"`` or ``"categorical"``; inferred when None.

    Returns:
        The mean (float) for ordinal answers; the unique plurality answer for categorical
        ones (None on a tie, see :func:`simworld.measures.inconstancy.group_answer`); None
        when no neighbour stated an opinion.
    """
    vals = present(stated)
    if not vals:
        return None
    if infer_scale(vals, scale) == CATEGORICAL:
        return plurality(vals)
    return float(np.mean(ordinal_array(vals, "neighbour mean")))


def local_conformity(
    current: Answer | None,
    following: Answer | None,
    neighbours: Answer | float | None,
    *,
    scale: ScaleKind | None = None,
) -> bool | None:
    """Local conformity ``c_i(t)``: did agent i move toward its neighbours from t to t+1?

    Source: docs/metrics.md §3: ``c_i(t) = sign(o_i(t+1) - o_i(t)) == sign(m_N(i)(t) - o_i(t))``,
    counted only where both differences are non-zero.

    Choice for categorical answers (no sign): ``m`` is the neighbours' majority and the
    two "differences" are non-zero when ``o_i(t) != m`` and ``o_i(t+1) != o_i(t)``; then
    ``c_i(t) = [o_i(t+1) == m]`` ("moved to it" rather than to some third answer).

    Args:
        current: ``o_i(t)``.
        following: ``o_i(t+1)``.
        neighbours: ``m_N(i)(t)`` from :func:`neighbour_opinion`.
        scale: ``"ordinal"`` or ``"categorical"``; inferred when None.

    Returns:
        The flag; None when the event is not counted (a value is missing, the majority is
        undefined, or either difference is zero).
    """
    if is_missing(current) or is_missing(following) or is_missing(neighbours):
        return None
    kind = infer_scale([current, following] if scale is None else [], scale)
    if kind == CATEGORICAL:
        if current == neighbours or following == current:
            return None
        return bool(following == neighbours)
    cur, nxt, m = ordinal_array([current, following, neighbours], "local conformity")
    move, pull = nxt - cur, m - cur
    if move == 0 or pull == 0:
        return None
    return bool(np.sign(move) == np.sign(pull))


def _neighbour_map(neighbours: Neighbours) -> Mapping[Hashable, list[Hashable]]:
    if isinstance(neighbours, nx.Graph):
        if neighbours.is_directed():
            raise ValueError(
                "directed graph: pass a mapping {agent: neighbours} stating who i listens to"
            )
        return {n: list(neighbours.neighbors(n)) for n in neighbours.nodes}
    return {k: list(v) for k, v in neighbours.items()}


def conformity_table(
    frame: pd.DataFrame,
    neighbours: Neighbours,
    *,
    stated: pd.DataFrame | None = None,
    step_col: str = "step",
    agent_col: str = "agent",
    topic_col: str = "topic",
    value_col: str = "value",
    scale: ScaleKind | Mapping[Hashable, ScaleKind] | None = None,
) -> pd.DataFrame:
    """Per-agent, per-step local conformity events over a tidy frame.

    Source: docs/metrics.md §3.

    For each (topic, agent) and each step t that has a later step, the event compares
    ``o_i(t)`` with ``o_i(t+1)`` (the agent's next step in the frame) and with
    ``m_N(i)(t)`` computed from the neighbours' answers at the same step t.

    Args:
        frame: Agents' own opinions, one row per (step, agent, topic).
        neighbours: ``{agent: neighbours}`` or an undirected networkx graph.
        stated: The opinions neighbours stated, same columns; None uses ``frame``.
        step_col: Step column.
        agent_col: Agent column.
        topic_col: Topic column.
        value_col: Answer column.
        scale: One kind for all topics, ``{topic: kind}``, or None to infer per topic.

    Returns:
        Columns ``topic, agent, step, next_step, value, next_value, neighbour_opinion,
        n_neighbours, conformed, step_toward``. ``n_neighbours`` counts neighbours with a
        present stated opinion; ``conformed`` is a nullable boolean (``<NA>``: not counted);
        ``step_toward = sign(m - o(t)) · (o(t+1) - o(t))`` for counted ordinal events (positive
        toward the neighbours, negative away), NaN otherwise.

    Raises:
        ValueError: A column is missing or a (step, agent, topic) appears twice.
    """
    stated = frame if stated is None else stated
    for df in (frame, stated):
        missing_cols = {step_col, agent_col, topic_col, value_col} - set(df.columns)
        if missing_cols:
            raise ValueError(f"frame lacks columns {sorted(missing_cols)}")
        if df.duplicated([topic_col, agent_col, step_col]).any():
            raise ValueError("more than one answer for some (step, agent, topic)")
    nmap = _neighbour_map(neighbours)
    said = {
        (t, a, s): v
        for t, a, s, v in stated[[topic_col, agent_col, step_col, value_col]].itertuples(
            index=False
        )
    }
    rows: list[dict[str, object]] = []
    for topic, by_topic in frame.groupby(topic_col, sort=True):
        topic_scale = scale.get(topic) if isinstance(scale, Mapping) else scale
        kind = infer_scale(
            [*by_topic[value_col], *stated.loc[stated[topic_col] == topic, value_col]],
            topic_scale,
        )
        for agent, series in by_topic.groupby(agent_col, sort=True):
            series = series.sort_values(step_col)
            steps, values = list(series[step_col]), list(series[value_col])
            for k in range(len(steps) - 1):
                heard = [said.get((topic, j, steps[k])) for j in nmap.get(agent, [])]
                rows.append(
                    conformity_event(
                        topic,
                        agent,
                        (steps[k], steps[k + 1]),
                        (values[k], values[k + 1]),
                        heard,
                        kind=kind,
                    )
                )
    cols = [
        "topic", "agent", "step", "next_step", "value", "next_value", "neighbour_opinion",
        "n_neighbours", "conformed", "step_toward",
    ]  # fmt: skip
    out = pd.DataFrame(rows, columns=cols)
    out["conformed"] = out["conformed"].astype("boolean")
    return out


def conformity_event(
    topic: Hashable,
    agent: Hashable,
    steps: tuple[Hashable, Hashable],
    values: tuple[Answer | None, Answer | None],
    heard: Sequence[Answer | None],
    *,
    kind: ScaleKind,
) -> dict[str, object]:
    """One local conformity event: one row of :func:`conformity_table`.

    Source: docs/metrics.md §3.

    Args:
        topic: The topic (copied into the row).
        agent: Agent i (copied into the row).
        steps: ``(t, t')``: the step and the agent's next step.
        values: ``(o_i(t), o_i(t'))``.
        heard: The neighbours' stated opinions at t (one entry per neighbour, None when it
            stated none).
        kind: The topic's scale kind.
    """
    cur, nxt = values
    m = neighbour_opinion(heard, scale=kind)
    flag = local_conformity(cur, nxt, m, scale=kind)
    toward = math.nan
    if flag is not None and kind == ORDINAL:
        toward = float(np.sign(float(m) - float(cur))) * (float(nxt) - float(cur))  # type: ignore[arg-type]
    return {
        "topic": topic,
        "agent": agent,
        "step": steps[0],
        "next_step": steps[1],
        "value": None if is_missing(cur) else cur,
        "next_value": None if is_missing(nxt) else nxt,
        "neighbour_opinion": m,
        "n_neighbours": len(present(heard)),
        "conformed": flag,
        "step_toward": toward,
    }


@dataclass(frozen=True)
class ConformitySummary:
    """Rate of local conformity and step sizes toward neighbours.

    Attributes:
        rate: Conforming events over counted events; ``excluded`` = events not counted.
        mean_step_toward: Mean of ``step_toward`` over counted ordinal events (net movement
            toward the neighbours per counted event; NaN for categorical or none counted).
        mean_conforming_step: Mean ``|o(t+1) - o(t)|`` over the conforming ordinal events.
    """

    rate: Rate
    mean_step_toward: float
    mean_conforming_step: float


def conformity_summary(table: pd.DataFrame) -> ConformitySummary:
    """Summarise a :func:`conformity_table`: the rate and the mean step toward neighbours.

    Source: docs/metrics.md §3 ("report the rate and the mean step size toward neighbours").

    Choice: the "mean step size toward neighbours" is read as the mean signed step
    ``sign(m - o(t)) · (o(t+1) - o(t))`` over the counted events (moves away count
    negative); the mean absolute step of the conforming events alone is also given.

    Args:
        table: Output of :func:`conformity_table` (may be filtered, e.g. to one topic).

    Returns:
        The :class:`ConformitySummary`.
    """
    flags = [None if pd.isna(f) else bool(f) for f in table["conformed"]]
    steps = table["step_toward"].to_numpy(dtype=float)
    counted = steps[~np.isnan(steps)]
    conforming = counted[counted > 0]
    return ConformitySummary(
        rate=rate_of(flags),
        mean_step_toward=float(counted.mean()) if counted.size else math.nan,
        mean_conforming_step=float(conforming.mean()) if conforming.size else math.nan,
    )


def asch_table(
    frame: pd.DataFrame,
    *,
    p_col: str = "p",
    answer_col: str = "answer",
    peer_col: str = "peer_answer",
    own_col: str = "own_answer",
    drop_agreeing: bool = False,
) -> pd.DataFrame:
    """Asch-style conformity level CL and resistance level RL as functions of p.

    Source: docs/metrics.md §3; Zhu et al. 2024, "Conformity in Large Language Models",
    arXiv 2410.12428: after p unanimous peers give answer c, ``CL = mean[answer == c]`` and
    ``RL = mean[answer == own earlier answer]``. Works for both kinds (equality only).

    Choices: a trial counts only if its answer, c and the own earlier answer are all present,
    so CL and RL share one denominator ``n``; the rest are counted in ``n_missing``. Trials
    where c equals the agent's own earlier answer score 1 on both CL and RL; they are kept
    by default and counted in ``n_agreeing``, and ``drop_agreeing=True`` removes them (the
    classic Asch condition, where the peers contradict the agent).

    Args:
        frame: One row per trial.
        p_col: Number of unanimous peers.
        answer_col: The agent's answer after hearing the peers.
        peer_col: The peers' unanimous answer c.
        own_col: The agent's own earlier answer.
        drop_agreeing: Drop trials with ``c == own earlier answer``.

    Returns:
        Columns ``p, CL, RL, n, n_missing, n_agreeing``, one row per p, sorted by p;
        CL and RL are NaN when ``n`` is 0.
    """
    missing_cols = {p_col, answer_col, peer_col, own_col} - set(frame.columns)
    if missing_cols:
        raise ValueError(f"frame lacks columns {sorted(missing_cols)}")
    rows: list[dict[str, object]] = []
    for p, trials in frame.groupby(p_col, sort=True):
        n = n_missing = n_agreeing = cl = rl = 0
        for answer, c, own in trials[[answer_col, peer_col, own_col]].itertuples(index=False):
            if is_missing(answer) or is_missing(c) or is_missing(own):
                n_missing += 1
                continue
            if c == own:
                n_agreeing += 1
                if drop_agreeing:
                    continue
            n += 1
            cl += int(answer == c)
            rl += int(answer == own)
        rows.append(
            {
                "p": p,
                "CL": cl / n if n else math.nan,
                "RL": rl / n if n else math.nan,
                "n": n,
                "n_missing": n_missing,
                "n_agreeing": n_agreeing,
            }
        )
    return pd.DataFrame(rows, columns=["p", "CL", "RL", "n", "n_missing", "n_agreeing"])
