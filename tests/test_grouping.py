"""Group composition: seeded random partitions and groups balanced by onboarding diversity."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from simworld.engine.grouping import balanced_groups, compositions, group_sizes, random_groups
from simworld.measures import shannon_entropy


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [(20, 5, [5, 5, 5, 5]), (21, 5, [5, 5, 5, 6]), (22, 5, [5, 5, 5, 5, 2]), (3, 5, [3])],
)
def test_group_sizes(n, size, expected):
    assert group_sizes(n, size) == expected


def test_random_groups_partition_the_nodes_reproducibly():
    nodes = list(range(3, 25))
    a = random_groups(nodes, 5, np.random.default_rng(1))
    b = random_groups(nodes, 5, np.random.default_rng(1))
    assert a == b
    assert sorted(n for g in a for n in g) == nodes
    assert [len(g) for g in a] == group_sizes(len(nodes), 5)


def test_compositions_are_ordered_by_diversity():
    found = compositions(5, 4)
    assert found == ((5,), (4, 1), (3, 2), (3, 1, 1), (2, 2, 1), (2, 1, 1, 1))
    entropies = [shannon_entropy([i for i, k in enumerate(p) for _ in range(k)]) for p in found]
    assert entropies == sorted(entropies)
    assert compositions(5, 2) == ((5,), (4, 1), (3, 2))


def _s(group: list[int], answers: list[str]) -> float:
    return round(shannon_entropy([answers[n] for n in group]), 3)


def test_balanced_groups_hit_their_target_diversity():
    answers = [a for a in "ABCD" for _ in range(5)]
    groups = balanced_groups(list(range(20)), answers, 5, np.random.default_rng(0))
    assert sorted(n for g in groups for n in g) == list(range(20))
    parts = [tuple(sorted(Counter(answers[n] for n in g).values(), reverse=True)) for g in groups]
    assert parts[:3] == [(5,), (4, 1), (3, 2)]  # the first targets are reachable exactly
    assert len({_s(g, answers) for g in groups}) == 4


def test_balanced_groups_rotate_with_the_offset_and_spread_diversity():
    rng = np.random.default_rng(7)
    answers = [str(x) for x in rng.choice(list("ABCD"), size=20)]
    levels: Counter[float] = Counter()
    random_levels: Counter[float] = Counter()
    for step in range(1, 7):
        for g in balanced_groups(list(range(20)), answers, 5, rng, offset=step):
            levels[_s(g, answers)] += 1
        for g in random_groups(list(range(20)), 5, rng):
            random_levels[_s(g, answers)] += 1
    assert len(levels) > len(random_levels)
    assert min(levels) == 0.0  # unanimous groups exist only because they were composed


def test_balanced_groups_place_agents_without_an_answer():
    answers = ["A", None, "B", None, "A", "B", "C"]
    groups = balanced_groups(list(range(7)), answers, 3, np.random.default_rng(3))
    assert sorted(n for g in groups for n in g) == list(range(7))
    assert [len(g) for g in groups] == [3, 4]  # 7 = 3 + 3 + 1: the lone one joins the last


def test_balanced_grouping_in_a_run_composes_by_onboarding_answers(
    make_scenario, tmp_path, monkeypatch
):
    import json

    import simworld.engine.protocols
    from simworld.runs.run import run_scenario

    calls = []

    def spy(nodes, answers, size, rng, *, offset=0):
        groups = balanced_groups(nodes, answers, size, rng, offset=offset)
        calls.append((list(answers), offset, groups))
        return groups

    monkeypatch.setattr(simworld.engine.protocols, "balanced_groups", spy)
    path = make_scenario(
        {
            "population.size": 12,
            "network": {"generator": "complete"},
            "protocol": {"steps": 2, "mode": "group", "group_size": 4, "grouping": "balanced"},
        }
    )
    run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    events = [json.loads(x) for x in (tmp_path / "run" / "transcript.jsonl").open()]
    agents = [a["agent"] for a in events[0]["agents"]]
    for step, topic in ((1, "remote_work"), (2, "city_priority")):
        onboarding = {
            e["agent"]: e["answer"]
            for e in events
            if e["type"] == "probe" and e["topic"] == topic and e["step"] == step - 1
        }
        answers, offset, groups = calls[step - 1]
        assert offset == step
        assert answers == [onboarding[a] for a in agents]  # the answers just before the step
        conversations = [e for e in events if e["type"] == "conversation" and e["step"] == step]
        assert [c["members"] for c in conversations] == [[agents[n] for n in g] for g in groups]
