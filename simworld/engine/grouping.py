"""Group composition for group discussions: seeded random, or balanced by onboarding diversity."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from functools import cache

import numpy as np

from simworld.measures import shannon_entropy


def group_sizes(n: int, size: int) -> list[int]:
    """Sizes of the groups for ``n`` agents: chunks of ``size``; a lone remainder joins the last."""
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    if len(sizes) > 1 and sizes[-1] == 1:
        lone = sizes.pop()
        sizes[-1] += lone
    return sizes


def random_groups(nodes: Sequence[int], size: int, rng: np.random.Generator) -> list[list[int]]:
    """A seeded random partition of ``nodes`` into groups of :func:`group_sizes`."""
    order = [nodes[int(i)] for i in rng.permutation(len(nodes))]
    groups, start = [], 0
    for k in group_sizes(len(order), size):
        groups.append(order[start : start + k])
        start += k
    return groups


@cache
def compositions(size: int, kinds: int) -> tuple[tuple[int, ...], ...]:
    """Ways to split a group of ``size`` among at most ``kinds`` answers, by diversity.

    Each is a partition of ``size`` (parts descending); they are ordered by the Shannon
    entropy of the answer shares they give (docs/metrics.md §1's S), then by the parts.
    """

    def partitions(rest: int, largest: int) -> list[tuple[int, ...]]:
        if rest == 0:
            return [()]
        out: list[tuple[int, ...]] = []
        for part in range(min(rest, largest), 0, -1):
            out.extend((part, *tail) for tail in partitions(rest - part, part))
        return out

    found = [p for p in partitions(size, size) if len(p) <= max(kinds, 1)]
    return tuple(sorted(found, key=lambda p: (_entropy(p), p)))


def _entropy(parts: tuple[int, ...]) -> float:
    return shannon_entropy([i for i, part in enumerate(parts) for _ in range(part)])


def balanced_groups(
    nodes: Sequence[int],
    answers: Sequence[Hashable | None],
    size: int,
    rng: np.random.Generator,
    *,
    offset: int = 0,
) -> list[list[int]]:
    """Groups whose onboarding diversity S cycles through every level.

    Baltaji et al. 2024 compose groups so that results can be tabulated by the diversity of
    the members' onboarding answers. Here group ``j`` targets composition
    ``compositions(k, m)[(offset + j) % len]`` (k its size, m the number of distinct answers
    given); the model passes the step as ``offset``, so levels rotate across steps too. A
    target is filled part by part, largest part first, from the answer with the most agents
    left; when no answer has enough agents left the group is completed from the largest
    remainders (agents with a missing answer last), so the result is a partition of ``nodes``
    whatever the answers. Within an answer, agents are taken in a seeded random order.

    Args:
        nodes: The agents to place (graph nodes).
        answers: Their onboarding answers, aligned with ``nodes`` (None: unknown).
        size: Target group size (:func:`group_sizes`).
        rng: The model's seeded generator.
        offset: Rotation of the composition cycle.

    Returns:
        The groups, each a list of nodes.
    """
    order = [int(i) for i in rng.permutation(len(nodes))]
    buckets: dict[Hashable, list[int]] = {}
    unknown: list[int] = []
    for i in order:
        if answers[i] is None:
            unknown.append(nodes[i])
        else:
            buckets.setdefault(answers[i], []).append(nodes[i])
    kinds = sorted(buckets, key=str)
    groups = []
    for j, k in enumerate(group_sizes(len(nodes), size)):
        options = compositions(k, len(kinds))
        target = options[(offset + j) % len(options)]
        group: list[int] = []
        used: set[Hashable] = set()
        for part in target:
            free = [a for a in kinds if a not in used and buckets[a]]
            if not free:
                break
            best = max(free, key=lambda a: (len(buckets[a]), -kinds.index(a)))
            used.add(best)
            group.extend(buckets[best][:part])
            del buckets[best][:part]
        while len(group) < k:
            left = [a for a in kinds if buckets[a]]
            if not left:
                group.append(unknown.pop(0))
                continue
            best = max(left, key=lambda a: (len(buckets[a]), -kinds.index(a)))
            group.append(buckets[best].pop(0))
        groups.append(group)
    return groups


__all__ = ["balanced_groups", "compositions", "group_sizes", "random_groups"]
