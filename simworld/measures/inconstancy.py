"""Persona inconstancy in group discussion: change, conformity, confabulation, impersonation.

Source: docs/metrics.md §1; Baltaji, Hemmatian & Varshney 2024, "Persona Inconstancy in
Multi-Agent LLM Collaboration: Conformity, Confabulation, and Impersonation", arXiv 2405.03862.

Notation: ``O_i`` private onboarding answer, ``D_i`` the answers i states in public (one per
message, may be empty), ``R_i`` private reflection answer, ``G`` the group's answer.
Every measure here compares answers only for equality, so it works unchanged for
categorical (letters) and ordinal (Likert ints) answers.

Missing answers (``None``/NaN from failed model calls) are never a value: a measure that
needs a missing answer returns ``None`` ("undecided") for that agent, rates exclude such
agents from the denominator and report how many were excluded.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from simworld.measures._common import (
    Answer,
    Rate,
    is_missing,
    plurality,
    present,
    rate_of,
    shannon_entropy,
)
from simworld.measures.impersonation import (
    DEMONYMS,
    IMPERSONATION_WINDOW_WORDS,
    find_impersonations,
    impersonation_rate,
    is_impersonation,
    persona_descriptors,
)

__all__ = [
    "DEMONYMS",
    "DIVERSITY_DECIMALS",
    "IMPERSONATION_WINDOW_WORDS",
    "AgentRecord",
    "Discussion",
    "confabulation",
    "confabulation_rate",
    "discussion_rows",
    "diversity_table",
    "find_impersonations",
    "group_answer",
    "group_diversity",
    "impersonation_rate",
    "inconstancy_table",
    "is_impersonation",
    "opinion_change",
    "own_answer_share",
    "persona_descriptors",
    "private_conformity",
    "public_conformity",
]

DIVERSITY_DECIMALS = 3
"""Decimals S is rounded to before grouping the per-S table (floats from log2 differ in ulps)."""


def group_answer(stated: Iterable[Answer | None]) -> Answer | None:
    """The group's answer G: the majority of all answers stated in public.

    Source: docs/metrics.md §1 (``G``); Baltaji et al. 2024, arXiv 2405.03862.

    Choice: "majority" is read as plurality (the most frequent stated answer, one vote per
    message, so an agent that speaks more weighs more; pass one answer per agent to weigh
    agents equally). A tie for the top count, or no stated answer at all, leaves G
    undefined (``None``) rather than breaking the tie: picking e.g. the smallest value would
    invent a group answer (and for letters, favour "A"), inflating private conformity. Agents
    whose G is undefined are excluded from every R=G count and the exclusions are reported.

    Args:
        stated: Every answer stated in public during the block; missing ones are dropped.

    Returns:
        The unique plurality answer, or None on a tie or with nothing stated.
    """
    return plurality(stated)


def opinion_change(onboarding: Answer | None, reflection: Answer | None) -> bool | None:
    """Opinion change ``[R_i != O_i]``.

    Source: docs/metrics.md §1; Baltaji et al. 2024, arXiv 2405.03862.

    Args:
        onboarding: ``O_i``.
        reflection: ``R_i``.

    Returns:
        Whether the private answer changed; None when either answer is missing.
    """
    if is_missing(onboarding) or is_missing(reflection):
        return None
    return bool(reflection != onboarding)


def private_conformity(
    onboarding: Answer | None, reflection: Answer | None, group: Answer | None
) -> bool | None:
    """Private conformity: ``changed_i and R_i == G`` (moved to the group's answer).

    Source: docs/metrics.md §1; Baltaji et al. 2024, arXiv 2405.03862.

    Args:
        onboarding: ``O_i``.
        reflection: ``R_i``.
        group: ``G`` (None when undefined, see :func:`group_answer`).

    Returns:
        False when the agent did not change (whatever G is); otherwise ``R_i == G``.
        None when ``O_i`` or ``R_i`` is missing, or the agent changed and G is undefined.
    """
    changed = opinion_change(onboarding, reflection)
    if changed is None:
        return None
    if not changed:
        return False
    if is_missing(group):
        return None
    return bool(reflection == group)


def public_conformity(
    onboarding: Answer | None, stated: Iterable[Answer | None], reflection: Answer | None
) -> bool | None:
    """Public conformity: some ``d in D_i`` with ``d != O_i``, and ``R_i == O_i``.

    Said something else in public but kept its view in private.

    Source: docs/metrics.md §1; Baltaji et al. 2024, arXiv 2405.03862.

    Args:
        onboarding: ``O_i``.
        stated: ``D_i``; missing entries (unparsed messages) are skipped.
        reflection: ``R_i``.

    Returns:
        The flag; False when nothing was stated (an empty ``D_i`` holds no deviating
        statement, as the definition reads literally). None when ``O_i`` or ``R_i`` is missing.
    """
    if is_missing(onboarding) or is_missing(reflection):
        return None
    deviated = any(d != onboarding for d in present(stated))
    return bool(deviated and reflection == onboarding)


def confabulation(
    reflection: Answer | None,
    *,
    onboardings: Iterable[Answer | None],
    stated: Iterable[Answer | None],
) -> bool | None:
    """Confabulation: ``R_i`` is in no ``O_j`` and no ``d in D_j`` of anyone in the group.

    The final answer was never held or voiced by anyone (the agent itself included).

    Source: docs/metrics.md §1; Baltaji et al. 2024, arXiv 2405.03862.

    Args:
        reflection: ``R_i``.
        onboardings: ``O_j`` for every group member (i included); missing ones are skipped.
        stated: Every ``d`` in every ``D_j`` (i included); missing ones are skipped.

    Returns:
        The flag; None when ``R_i`` is missing. A missing ``O_j`` adds nothing to the set
        of held answers (it cannot be known), so it can only make a hit more likely; the
        number of missing onboardings is reported by :func:`inconstancy_table`.
    """
    if is_missing(reflection):
        return None
    seen = set(present(onboardings)) | set(present(stated))
    return reflection not in seen


@dataclass(frozen=True)
class AgentRecord:
    """One agent's answers on one topic in one discussion.

    Attributes:
        agent: Agent id.
        onboarding: ``O_i`` (None when the call failed).
        reflection: ``R_i`` (None when the call failed).
        stated: ``D_i``, one entry per message (None for a message without a parsable answer).
        position: The focal agent's position in the group (e.g. speaking order, 1-based);
            None means its 1-based index in :attr:`Discussion.agents`.
    """

    agent: Hashable
    onboarding: Answer | None
    reflection: Answer | None
    stated: tuple[Answer | None, ...] = ()
    position: int | None = None


@dataclass(frozen=True)
class Discussion:
    """One group discussion on one topic.

    Attributes:
        agents: The group members.
        id: Discussion id, copied to the output tables.
        recorded_group: G as the protocol recorded it; None means "compute it with
            :func:`group_answer` from all stated answers".
    """

    agents: tuple[AgentRecord, ...]
    id: Hashable = None
    recorded_group: Answer | None = None

    def group(self) -> Answer | None:
        """G: the recorded group answer, else the plurality of all stated answers."""
        if not is_missing(self.recorded_group):
            return self.recorded_group
        return group_answer(d for a in self.agents for d in a.stated)


def group_diversity(onboardings: Iterable[Answer | None]) -> float:
    """Group diversity ``S = -Σ_o p(o) log2 p(o)`` over the onboarding answers.

    Source: docs/metrics.md §1; Baltaji et al. 2024, arXiv 2405.03862.

    Args:
        onboardings: ``O_j`` of the group members; missing ones are dropped (the
            distribution is over the answers actually given).

    Returns:
        S in bits; 0.0 for a one-agent group or a unanimous one; NaN if no answer is present.
    """
    return shannon_entropy(onboardings, base=2.0)


def own_answer_share(
    onboarding: Answer | None, onboardings: Iterable[Answer | None]
) -> float | None:
    """Share of the group that held the agent's own answer at onboarding (agent included).

    Source: the grouping used by the code released with Baltaji et al. 2024 (arXiv
    2405.03862), which tabulates results by how many group members shared the focal
    agent's onboarding answer rather than by seat order (docs/metrics.md §1).

    Choice: the denominator is the members whose ``O_j`` is present (the released code
    assumes a fixed group of 5); a member whose onboarding call failed is neither "same"
    nor "different".

    Args:
        onboarding: ``O_i``.
        onboardings: ``O_j`` of every member of the group, i included.

    Returns:
        ``#{j : O_j = O_i} / #{j : O_j present}``; None when ``O_i`` is missing.
    """
    if is_missing(onboarding):
        return None
    given = present(onboardings)
    return sum(o == onboarding for o in given) / len(given)


def inconstancy_table(discussions: Iterable[Discussion]) -> pd.DataFrame:
    """Per-agent §1 flags for a set of discussions, one row per agent per discussion.

    Source: docs/metrics.md §1; Baltaji et al. 2024, arXiv 2405.03862.

    Args:
        discussions: The discussions.

    Returns:
        Columns ``discussion, agent, position, onboarding, reflection, group, n_stated,
        diversity, n_missing_onboarding, changed, private_conformity, public_conformity,
        confabulation, own_share`` (``own_share``: :func:`own_answer_share`); the four
        flags are pandas nullable booleans (``<NA>`` = undecided because an answer is
        missing or G is undefined). ``n_stated`` counts present stated
        answers; ``n_missing_onboarding`` counts the group's missing ``O_j``.
    """
    rows = [row for disc in discussions for row in discussion_rows(disc)]
    cols = [
        "discussion", "agent", "position", "onboarding", "reflection", "group", "n_stated",
        "diversity", "n_missing_onboarding", "changed", "private_conformity",
        "public_conformity", "confabulation", "own_share",
    ]  # fmt: skip
    out = pd.DataFrame(rows, columns=cols)
    for flag in ("changed", "private_conformity", "public_conformity", "confabulation"):
        out[flag] = out[flag].astype("boolean")
    return out


def discussion_rows(disc: Discussion) -> list[dict[str, object]]:
    """The §1 flags of one discussion, one row per agent: its rows of :func:`inconstancy_table`.

    Source: docs/metrics.md §1. The flags are ``True``/``False``, or ``None`` when undecided.
    """
    g = disc.group()
    onboardings = [a.onboarding for a in disc.agents]
    all_stated = [d for a in disc.agents for d in a.stated]
    s = group_diversity(onboardings)
    n_missing_o = sum(is_missing(o) for o in onboardings)
    return [
        {
            "discussion": disc.id,
            "agent": rec.agent,
            "position": rec.position if rec.position is not None else idx,
            "onboarding": None if is_missing(rec.onboarding) else rec.onboarding,
            "reflection": None if is_missing(rec.reflection) else rec.reflection,
            "group": g,
            "n_stated": len(present(rec.stated)),
            "diversity": s,
            "n_missing_onboarding": n_missing_o,
            "changed": opinion_change(rec.onboarding, rec.reflection),
            "private_conformity": private_conformity(rec.onboarding, rec.reflection, g),
            "public_conformity": public_conformity(rec.onboarding, rec.stated, rec.reflection),
            "confabulation": confabulation(
                rec.reflection, onboardings=onboardings, stated=all_stated
            ),
            "own_share": own_answer_share(rec.onboarding, onboardings),
        }
        for idx, rec in enumerate(disc.agents, start=1)
    ]


def confabulation_rate(discussions: Iterable[Discussion]) -> Rate:
    """Confabulation rate = confabulations / (group size × number of discussions).

    Source: docs/metrics.md §1; Baltaji et al. 2024, arXiv 2405.03862.

    Choice: the denominator counts agents whose ``R_i`` is present, so it equals group
    size × discussions when no reflection call failed; agents with a missing ``R_i`` are
    reported in ``excluded`` rather than counted as "did not confabulate".

    Args:
        discussions: The discussions (group sizes may differ; each agent counts once).

    Returns:
        The :class:`Rate` (``.value`` is the rate).
    """
    flags: list[bool | None] = []
    for disc in discussions:
        onboardings = [a.onboarding for a in disc.agents]
        stated = [d for a in disc.agents for d in a.stated]
        flags.extend(
            confabulation(a.reflection, onboardings=onboardings, stated=stated) for a in disc.agents
        )
    return rate_of(flags)


def diversity_table(
    table: pd.DataFrame,
    *,
    decimals: int = DIVERSITY_DECIMALS,
    by: Literal["position", "own_share"] = "position",
) -> pd.DataFrame:
    """The per-S table: for each S and focal position, % with R=O; among the rest, R=G vs R≠G.

    Source: docs/metrics.md §1; Baltaji et al. 2024, arXiv 2405.03862.

    Choices: the focal agent position is :attr:`AgentRecord.position` (by default the
    agent's 1-based index in the discussion, i.e. the order the protocol lists/seats it;
    record the speaking order there if that is what should be tabulated). With
    ``by="own_share"`` the rows are grouped instead by the share of the group that held the
    focal agent's own onboarding answer (:func:`own_answer_share`), the grouping of the
    code released with the paper, so the two can be compared. An agent enters a cell only
    if both ``O_i`` and ``R_i`` are present. Among the
    agents that changed (R≠O), those whose G is undefined (tie or nothing stated) are left
    out of both R=G and R≠G and counted in ``n_group_undefined``, so the two percentages sum
    to 100 over ``n_changed - n_group_undefined``. Percentages are NaN when their
    denominator is 0. Discussions whose S is NaN (no onboarding present) have no agent with
    ``O_i`` present, so they never appear.

    Args:
        table: Output of :func:`inconstancy_table`.
        decimals: S (and ``own_share``) are rounded to this many decimals before grouping.
        by: ``position`` (seat order) or ``own_share`` (the paper code's grouping).

    Returns:
        Columns ``diversity, <by>, n, pct_kept, n_changed, n_group_undefined,
        pct_changed_to_group, pct_changed_elsewhere``, sorted by S then ``by``.
    """
    if by not in ("position", "own_share"):
        raise ValueError(f"by must be 'position' or 'own_share', got {by!r}")
    cols = [
        "diversity", by, "n", "pct_kept", "n_changed", "n_group_undefined",
        "pct_changed_to_group", "pct_changed_elsewhere",
    ]  # fmt: skip
    decided = table[table["changed"].notna()].copy()
    if decided.empty:
        return pd.DataFrame(columns=cols)
    decided["diversity"] = decided["diversity"].round(decimals)
    if by == "own_share":
        decided["own_share"] = decided["own_share"].astype(float).round(decimals)
    rows: list[dict[str, object]] = []
    for (s, pos), cell in decided.groupby(["diversity", by], sort=True):
        n = len(cell)
        changed = cell.loc[cell["changed"].to_numpy(dtype=bool)]
        defined = changed.loc[[not is_missing(g) for g in changed["group"]]]
        to_group = sum(r == g for r, g in zip(defined["reflection"], defined["group"], strict=True))
        rows.append(
            {
                "diversity": s,
                by: pos,
                "n": n,
                "pct_kept": 100.0 * (n - len(changed)) / n,
                "n_changed": len(changed),
                "n_group_undefined": len(changed) - len(defined),
                "pct_changed_to_group": _pct(to_group, len(defined)),
                "pct_changed_elsewhere": _pct(len(defined) - to_group, len(defined)),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def _pct(count: int, total: int) -> float:
    return 100.0 * count / total if total else math.nan
