"""Incremental trackers: the frames of a full recomputation, at any feeding pace, in O(events)."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import TOPICS

import simworld.trackers.opinion as tracker_opinion
from simworld.config.scenario import Scenario
from simworld.measures import (
    AgentRecord,
    Discussion,
    conformity_table,
    drift_table,
    inconstancy_table,
    modal_opinion,
    population_table,
    time_to_consensus,
)
from simworld.measures.conformity import conformity_event
from simworld.measures.drift import DriftSeries
from simworld.trackers.base import Observations, RunContext, tidy
from simworld.trackers.tracker_set import TrackerSet

AGENTS = "abcdef"
NATIONS = ["Japan", "France", "Kenya", "Peru", "Norway", "India"]
ORACLE_FRAMES = ("drift", "population", "conformity", "inconstancy")


def scenario(threshold: float = 1.0) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "incremental",
            "population": {"library": "unused.yaml", "size": len(AGENTS)},
            "network": {"generator": "complete"},
            "topics": TOPICS,
            "protocol": {"steps": 3},
            "trackers": {"consensus_threshold": threshold},
        }
    )


def answer(rng: random.Random, topic: str) -> str | None:
    if rng.random() < 0.15:
        return None  # a failed call
    return str(rng.randint(1, 5)) if topic == "lik" else rng.choice("ABC")


def linked(edges: list[tuple[int, ...]], a: str, b: str) -> bool:
    """Whether agents ``a`` and ``b`` share an edge (a group member hears only those)."""
    return tuple(sorted((AGENTS.index(a), AGENTS.index(b)))) in edges


def transcript(seed: int, *, steps: int = 5, stances: bool = True) -> list[dict[str, Any]]:
    """A random run in engine order: talk, stances, judges, memory, probes, BFI, per step."""
    rng = random.Random(seed)
    agents = [
        {"agent": k, "name": k.title(), "node": i, "nationality": NATIONS[i],
         "opinions": {"lik": rng.randint(1, 5), "cat": rng.choice("ABC")},
         "big_five": dict.fromkeys(("openness", "conscientiousness", "extraversion",
                                    "agreeableness", "neuroticism"), 3.0)}
        for i, k in enumerate(AGENTS)
    ]  # fmt: skip
    edges = sorted({tuple(sorted(rng.sample(range(len(AGENTS)), 2))) for _ in range(8)})
    events: list[dict[str, Any]] = [
        {"type": "run_start", "agents": agents, "edges": [list(e) for e in edges]}
    ]
    probe_steps = {0, steps} | {s for s in range(1, steps) if rng.random() < 0.6}
    for step in range(steps + 1):
        topic = "lik" if step % 2 else "cat"
        if step > 0:
            members = rng.sample(AGENTS, len(AGENTS))
            groups = [members[:3], members[3:]]
            for index, group in enumerate(groups):
                events.append({"type": "conversation", "step": step, "index": index,
                               "topic": topic, "mode": "group", "members": group})  # fmt: skip
            talk = []
            for group in groups:
                for turn, agent in enumerate(group * 2):
                    if rng.random() < 0.85:
                        talk.append((agent, turn))
                        text = rng.choice(["I agree.", "As a French citizen, no.", "Maybe."])
                        to = [m for m in group if m != agent and linked(edges, m, agent)]
                        events.append({"type": "message", "step": step, "agent": agent,
                                       "topic": topic, "turn": turn, "to": to, "mode": "group",
                                       "text": text})  # fmt: skip
            for agent, turn in talk if stances else ():
                said = answer(rng, topic)
                status = rng.choice(["none", "failed"]) if said is None else "stated"
                events.append({"type": "stance", "step": step, "agent": agent, "topic": topic,
                               "turn": turn, "status": status, "answer": said})  # fmt: skip
                if rng.random() < 0.3:
                    events.append({"type": "impersonation_judge", "step": step, "agent": agent,
                                   "turn": turn, "verdict": rng.random() < 0.5})  # fmt: skip
            for agent in rng.sample(AGENTS, 2):
                kind = rng.choice(["memory_forgotten", "reflection"])
                events.append({"type": kind, "step": step, "agent": agent})
        if step in probe_steps:
            for agent in AGENTS:
                for t in ("lik", "cat"):
                    if rng.random() < 0.95:
                        events.append({"type": "probe", "step": step, "agent": agent,
                                       "topic": t, "answer": answer(rng, t)})  # fmt: skip
        if step in (0, steps):
            for agent in AGENTS[:2]:
                responses = {str(i): rng.randint(1, 5) for i in range(1, 11)}
                events.append({"type": "bfi", "step": step, "agent": agent, "inventory": "bfi10",
                               "seed": step, "item_order": list(range(1, 11)),
                               "option_order": [1, 2, 3, 4, 5], "responses": responses,
                               "ok": True})  # fmt: skip
        events.append({"type": "step_end", "step": step})
    return events


# -- the oracle: every frame recomputed from all events with the measures' batch tables --------
def probe_frame(store: Observations, context: RunContext) -> pd.DataFrame:
    rows = [
        {"step": p["step"], "agent": p["agent"], "topic": p["topic"], "answer": p.get("answer"),
         "value": context.topics[p["topic"]].measure_value(p.get("answer"))}
        for p in store.probes
        if p["topic"] in context.topics
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["step", "agent", "topic", "answer", "value"])


def answers_of(frame: pd.DataFrame) -> dict[tuple[str, str, int], Any]:
    cols = frame[["topic", "agent", "step", "answer"]]
    return {(t, a, s): ans for t, a, s, ans in cols.itertuples(index=False)}


def drift_oracle(store: Observations, context: RunContext) -> list[dict[str, Any]]:
    frame = probe_frame(store, context)
    assigned = context.assigned()
    table = drift_table(frame, assigned=assigned, scale=context.scales)
    answers = answers_of(frame)
    return [
        r | {"answer": answers[(r["topic"], r["agent"], r["step"])],
             "value": r["value"] if context.topics[r["topic"]].ordinal else None,
             "assigned": assigned.get(r["agent"], {}).get(r["topic"])}
        for r in table.to_dict("records")
    ]  # fmt: skip


def population_oracle(store: Observations, context: RunContext) -> list[dict[str, Any]]:
    centre = {t.id: t.scale_range for t in context.topics.values() if t.ordinal}
    table = population_table(probe_frame(store, context), centre_on=centre, scale=context.scales)
    threshold = context.config.consensus_threshold
    rows = []
    for _, by_topic in table.groupby("topic", sort=True):
        shares = pd.Series(by_topic["consensus_share"].to_numpy(), index=by_topic["step"])
        reached = time_to_consensus(shares, threshold=threshold)
        for r in by_topic.to_dict("records"):
            rows.append(r | {"consensus": bool(r["consensus_share"] >= threshold),
                             "time_to_consensus": reached})  # fmt: skip
    return rows


def stated_frame(store: Observations, context: RunContext) -> pd.DataFrame:
    said: dict[tuple[str, str, int], list[Any]] = defaultdict(list)
    for m in store.messages:
        stance, start = store.stance_of(m), store.probe_before(m["step"])
        if stance is None or start is None or m["topic"] not in context.topics:
            continue
        value = context.topics[m["topic"]].measure_value(stance.get("answer"))
        if value is not None:
            said[(m["topic"], m["agent"], start)].append(value)
    rows = [
        {"step": s, "agent": a, "topic": t,
         "value": float(np.mean(v)) if context.topics[t].ordinal else modal_opinion(v)}
        for (t, a, s), v in sorted(said.items())
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["step", "agent", "topic", "value"])


def conformity_oracle(store: Observations, context: RunContext) -> list[dict[str, Any]]:
    frame = probe_frame(store, context)
    source = "stated" if store.stances else "private"
    stated = stated_frame(store, context) if source == "stated" else None
    cols = frame[["step", "agent", "topic", "value"]]
    table = conformity_table(cols, context.neighbours, stated=stated, scale=context.scales)
    answers = answers_of(frame)
    values = {(t, a, s): v for s, a, t, v in cols.itertuples(index=False)}
    rows = []
    for g in table.to_dict("records"):
        topic, agent, step = g["topic"], g["agent"], g["step"]
        info = context.topics[topic]
        heard: dict[str, list[Any]] = {}  # speaker → what the agent heard it state
        for m in store.messages:
            if (m["topic"], store.probe_before(m["step"])) != (topic, step):
                continue
            if agent not in m["to"]:
                continue
            stance = store.stance_of(m)
            said = None if stance is None else info.measure_value(stance.get("answer"))
            heard.setdefault(m["agent"], [])
            if said is not None:
                heard[m["agent"]].append(said)
        if source == "stated":
            opinions = [
                None if not v else float(np.mean(v)) if info.ordinal else modal_opinion(v)
                for v in heard.values()
            ]
        else:
            opinions = [values.get((topic, j, step)) for j in heard]
        pair = (g["value"], g["next_value"])
        r = conformity_event(topic, agent, (step, g["next_step"]), pair, opinions,
                             kind=info.kind)  # fmt: skip
        ordinal, m, gm = info.ordinal, r["neighbour_opinion"], g["neighbour_opinion"]
        rows.append(r | {"answer": answers[(topic, agent, step)],
                         "next_answer": answers[(topic, agent, g["next_step"])],
                         "neighbour_mean": m if ordinal else None,
                         "neighbour_majority": None if ordinal else m,
                         "source": source,
                         "graph_neighbour_mean": gm if ordinal else None,
                         "graph_neighbour_majority": None if ordinal else gm,
                         "n_graph_neighbours": g["n_neighbours"],
                         "graph_conformed": g["conformed"],
                         "graph_step_toward": g["step_toward"]})  # fmt: skip
    return rows


def inconstancy_oracle(store: Observations, context: RunContext) -> list[dict[str, Any]]:
    said: dict[tuple[int, str], list[tuple[int, Any]]] = defaultdict(list)
    for m in store.messages:
        stance = store.stance_of(m)
        said[(m["step"], m["agent"])].append((m["turn"], stance and stance.get("answer")))
    rows = []
    for conv in store.conversations:
        step, topic = conv["step"], conv["topic"]
        before, after = store.probe_before(step), store.probe_at_or_after(step)
        records = tuple(
            AgentRecord(agent=a, onboarding=store.private_answer(topic, a, before),
                        reflection=store.private_answer(topic, a, after),
                        stated=tuple(x for _, x in sorted(said[(step, a)])), position=pos)
            for pos, a in enumerate(conv["members"], start=1)
        )  # fmt: skip
        table = inconstancy_table([Discussion(agents=records, id=conv["index"])])
        rows += [
            r | {"step": step, "conversation": conv["index"], "topic": topic, "mode": conv["mode"],
                 "before_step": before, "after_step": after, "group_size": len(records)}
            for r in table.to_dict("records")
        ]  # fmt: skip
    return rows


ORACLES = {
    "drift": drift_oracle,
    "population": population_oracle,
    "conformity": conformity_oracle,
    "inconstancy": inconstancy_oracle,
}


def oracle(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    ts = TrackerSet(scenario())
    ts.observe_all(events)
    return tidy(ORACLES[name](ts.store, ts.context), ts.trackers[name].schema)


# -- feeding -------------------------------------------------------------------------------------
def at_once(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    ts = TrackerSet(scenario())
    ts.observe_all(events)
    return {name: ts.trackers[name].rows() for name in ts.names}


def piecemeal(events: list[dict[str, Any]], seed: int) -> dict[str, list[dict[str, Any]]]:
    """Rows asked for after random events, as a run asks after every step."""
    rng = random.Random(seed)
    ts = TrackerSet(scenario())
    for event in events:
        ts.observe(event)
        if rng.random() < 0.3:
            for name in ts.names:
                ts.trackers[name].rows()
    return {name: ts.trackers[name].rows() for name in ts.names}


def by_step(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    steps, current = [], []
    for event in events:
        current.append(event)
        if event["type"] in ("run_start", "step_end"):
            steps.append(current)
            current = []
    return steps + ([current] if current else [])


@pytest.mark.parametrize("seed", range(6))
def test_any_feeding_pace_gives_the_frames_of_a_full_recomputation(seed):
    events = transcript(seed, stances=seed != 3)
    whole, pieces = at_once(events), piecemeal(events, seed)
    assert pieces == whole
    assert all(whole[name] for name in ("drift", "conformity", "inconstancy", "statements"))
    for name in ORACLE_FRAMES:
        assert whole[name] == oracle(events, name), name


def late(events: list[dict[str, Any]], kind: str, seed: int) -> list[dict[str, Any]]:
    """The events with some of one kind moved to the end (arriving after later steps)."""
    rng = random.Random(seed)
    moved = [e for e in events if e["type"] == kind and rng.random() < 0.3]
    assert moved
    ids = {id(e) for e in moved}
    return [e for e in events if id(e) not in ids] + moved


@pytest.mark.parametrize(
    ("kind", "stances"), [("probe", True), ("probe", False), ("stance", True),
                          ("message", True), ("message", False), ("conversation", True)]
)  # fmt: skip
def test_events_out_of_order_still_give_the_full_recomputation(kind, stances):
    events = late(transcript(7, stances=stances), kind, seed=1)
    whole = at_once(events)
    assert piecemeal(events, seed=2) == whole
    for name in ORACLE_FRAMES:
        assert whole[name] == oracle(events, name), (kind, name)


def test_a_probe_step_arriving_after_later_talk_refiles_what_was_stated():
    events = transcript(8, steps=6)
    probe_steps = sorted({e["step"] for e in events if e["type"] == "probe"})
    middle = probe_steps[1]  # the statements after it were filed under the probe before it
    moved = [e for e in events if e["type"] == "probe" and e["step"] == middle]
    events = [e for e in events if not (e["type"] == "probe" and e["step"] == middle)] + moved
    ts = TrackerSet(scenario())
    for step in by_step(events[: -len(moved)]):
        ts.observe_all(step)
        ts.trackers["conformity"].rows()
    ts.observe_all(moved)
    assert ts.trackers["conformity"].rows() == oracle(events, "conformity")


def test_first_stances_arriving_late_switch_conformity_to_stated_everywhere():
    events = transcript(4)
    stances = [e for e in events if e["type"] == "stance"]
    events = [e for e in events if e["type"] != "stance"]
    ts = TrackerSet(scenario())
    ts.observe_all(events)
    assert {r["source"] for r in ts.trackers["conformity"].rows()} == {"private"}
    ts.observe_all(stances)
    assert {r["source"] for r in ts.trackers["conformity"].rows()} == {"stated"}
    assert ts.trackers["conformity"].rows() == oracle(events + stances, "conformity")


def test_a_second_run_start_recomputes_with_the_new_agents():
    events = transcript(5)
    ts = TrackerSet(scenario())
    ts.observe_all(events)
    before = ts.trackers["drift"].rows()
    start = dict(events[0])
    start["agents"] = [a | {"opinions": {"lik": 1, "cat": "C"}} for a in start["agents"]]
    ts.observe(start)
    after = ts.trackers["drift"].rows()
    assert after != before and {r["assigned"] for r in after} == {"1", "C"}
    assert after == oracle([start, *events[1:]], "drift")


def test_a_duplicate_probe_is_refused_as_the_batch_tables_refuse_it():
    events = transcript(2)
    first = next(e for e in events if e["type"] == "probe")
    ts = TrackerSet(scenario())
    ts.observe_all([*events, dict(first)])
    with pytest.raises(ValueError, match="more than one answer"):
        ts.trackers["drift"].rows()
    with pytest.raises(ValueError, match="more than one answer"):
        ts.trackers["conformity"].rows()


def test_rows_are_the_same_list_until_an_event_they_read_arrives():
    events = transcript(1)
    ts = TrackerSet(scenario())
    ts.observe_all(events)
    drift, statements = ts.trackers["drift"].rows(), ts.trackers["statements"].rows()
    ts.observe({"type": "message", "step": 9, "agent": "a", "topic": "lik", "turn": 0,
                "to": [], "text": "late"})  # fmt: skip
    assert ts.trackers["drift"].rows() is drift  # drift reads probes only
    assert ts.trackers["statements"].rows() is not statements


def test_a_step_costs_its_own_events_not_the_history(monkeypatch):
    """Each drift, population and conformity row is computed once when fed step by step."""
    calls: dict[str, int] = defaultdict(int)

    def counted(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(DriftSeries, "add", counted("drift", DriftSeries.add))
    for name in ("population_row", "conformity_event"):
        monkeypatch.setattr(tracker_opinion, name, counted(name, getattr(tracker_opinion, name)))
    events = transcript(0, steps=8)
    ts = TrackerSet(scenario())
    for step in by_step(events):
        ts.observe_all(step)
        for name in ts.names:
            ts.trackers[name].rows()
    probes = [e for e in events if e["type"] == "probe"]
    assert calls["drift"] == len(probes) == len(ts.trackers["drift"].rows())
    assert calls["population_row"] == len(ts.trackers["population"].rows())
    # two events per row: over what the agent heard, and over its graph neighbours
    assert calls["conformity_event"] == 2 * len(ts.trackers["conformity"].rows())
