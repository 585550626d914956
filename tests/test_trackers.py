"""Trackers: measures on hand-built transcripts, stance extraction, re-derivation, extras."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from conftest import LIKERT, TOPICS

from simworld.cli import main
from simworld.config.scenario import Scenario
from simworld.errors import ConfigError
from simworld.runs.run import run_scenario
from simworld.trackers.tracker_set import TRACKERS_DIR, TrackerSet, analyze_run, derive

FIVE = {"openness": 3.0, "conscientiousness": 3.0, "extraversion": 4.0,
        "agreeableness": 3.0, "neuroticism": 2.0}  # fmt: skip


def scenario(**trackers: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "hand",
            "population": {"library": "unused.yaml", "size": 4},
            "network": {"generator": "complete"},
            "topics": TOPICS,
            "protocol": {"steps": 3},
            "trackers": trackers,
        }
    )


def start(agents: dict[str, tuple[str, dict[str, Any]]], edges: list[list[int]]) -> dict:
    return {
        "type": "run_start",
        "agents": [
            {
                "agent": k,
                "name": k.title(),
                "node": i,
                "nationality": nat,
                "opinions": ops,
                "big_five": FIVE,
            }
            for i, (k, (nat, ops)) in enumerate(agents.items())
        ],
        "edges": edges,
    }


def probe(step: int, agent: str, topic: str, answer: str | None) -> dict:
    value = float(answer) if answer is not None and topic == "lik" else None
    return {"type": "probe", "step": step, "agent": agent, "topic": topic, "answer": answer,
            "value": value, "ok": answer is not None}  # fmt: skip


def message(
    step: int, agent: str, topic: str, turn: int = 0, text: str = "hi", to: list[str] | None = None
) -> dict:
    return {"type": "message", "step": step, "agent": agent, "topic": topic, "turn": turn,
            "to": to or [], "text": text}  # fmt: skip


def stance(step: int, agent: str, topic: str, answer: str | None, turn: int = 0) -> dict:
    status = "stated" if answer is not None else "none"
    return {"type": "stance", "step": step, "agent": agent, "topic": topic, "turn": turn,
            "status": status, "answer": answer}  # fmt: skip


def tracked(events: list[dict], **trackers: Any) -> TrackerSet:
    ts = TrackerSet(scenario(**trackers))
    ts.observe_all(events)
    return ts


def rows(ts: TrackerSet, name: str) -> list[dict]:
    return ts.trackers[name].rows()


def keyed(ts: TrackerSet, name: str, *cols: str) -> dict[Any, SimpleNamespace]:
    """A frame's rows (plain Python values, None for missing) by the value of ``cols``."""
    out = {}
    for r in rows(ts, name):
        key = r[cols[0]] if len(cols) == 1 else tuple(r[c] for c in cols)
        out[key] = SimpleNamespace(**r)
    return out


def column(ts: TrackerSet, name: str, col: str, **where: Any) -> list[Any]:
    return [r[col] for r in rows(ts, name) if all(r[k] == v for k, v in where.items())]


# -- drift (docs/metrics.md §2) ------------------------------------------------------------------
def test_drift_by_hand_with_a_failed_probe():
    events = [
        start({"a": ("Japan", {"lik": 5, "cat": "B"})}, []),
        probe(0, "a", "lik", "2"), probe(1, "a", "lik", "4"), probe(2, "a", "lik", None),
        probe(3, "a", "lik", "3"),
        probe(0, "a", "cat", "A"), probe(1, "a", "cat", "B"), probe(2, "a", "cat", "B"),
        probe(3, "a", "cat", "A"),
    ]  # fmt: skip
    ts = tracked(events)
    lik = keyed(ts, "drift", "topic", "step")
    assert [lik["lik", s].answer for s in range(4)] == ["2", "4", None, "3"]
    gap = lik["lik", 2]
    assert gap.missing and gap.drift is None and gap.path_length is None and gap.flips is None
    ok = [lik["lik", s] for s in (0, 1, 3)]
    assert [r.drift for r in ok] == [0.0, 2.0, 1.0]
    assert [r.path_length for r in ok] == [0.0, 2.0, 3.0]  # 2→4→(gap)→3
    assert [r.flips for r in ok] == [0.0, 1.0, 2.0]
    assert [r.anchored_distance for r in ok] == [3.0, 1.0, 2.0]  # from the assigned 5
    assert column(ts, "drift", "drift", topic="cat") == [None] * 4  # no sign for categories
    assert column(ts, "drift", "flips", topic="cat") == [0.0, 1.0, 1.0, 2.0]
    assert column(ts, "drift", "anchored_distance", topic="cat") == [1.0, 0.0, 0.0, 1.0]


# -- population (docs/metrics.md §5) -------------------------------------------------------------
def test_population_by_hand_ties_missing_and_time_to_consensus():
    agents = {k: ("Kenya", {}) for k in "abcd"}
    events = [start(agents, [])]
    events += [probe(0, k, "lik", v) for k, v in zip("abcd", "1155", strict=True)]
    events += [probe(1, k, "lik", "3") for k in "abc"] + [probe(1, "d", "lik", None)]
    ts = tracked(events)
    s0, s1 = keyed(ts, "population", "step").values()
    assert s0.n == 4 and s0.n_missing == 0
    assert s0.bias == pytest.approx(0.0)  # mean 3 centred on the 1..5 scale
    assert s0.diversity == pytest.approx(math.sqrt(16 / 3))
    assert s0.consensus_share == 0.5 and s0.modal_opinion is None  # a tie has no mode
    assert s0.entropy == pytest.approx(1.0)
    assert s0.polarization == pytest.approx(4 * 0.5**2.6)  # 2 groups of 1/2 at distance 4
    assert s0.consensus is False
    assert s1.n == 3 and s1.n_missing == 1  # the failed probe is not a value
    assert s1.consensus_share == 1.0 and s1.consensus is True and s1.entropy == 0.0
    assert column(ts, "population", "time_to_consensus") == [1, 1]


def test_population_threshold_from_the_scenario():
    events = [start({k: ("Kenya", {}) for k in "abcd"}, [])]
    events += [probe(0, k, "cat", v) for k, v in zip("abcd", "AAAB", strict=True)]
    row = keyed(tracked(events, consensus_threshold=0.75), "population", "topic")["cat"]
    assert row.consensus_share == 0.75 and row.modal_opinion == "A" and row.time_to_consensus == 0
    assert row.bias is None and row.polarization is None  # ordinal only


# -- local conformity (docs/metrics.md §3) -------------------------------------------------------
def line_events(with_stances: bool) -> list[dict]:
    events = [start({k: ("Kenya", {}) for k in "abc"}, [[0, 1], [1, 2]])]  # a - b - c
    events += [probe(0, k, "lik", v) for k, v in zip("abc", "155", strict=True)]
    to = {"a": ["b"], "b": ["a", "c"], "c": ["b"]}  # broadcast along the edges
    for k, said in zip("abc", "155", strict=True):
        events.append(message(1, k, "lik", to=to[k]))
        if with_stances:
            events.append(stance(1, k, "lik", said))
    events += [probe(1, k, "lik", v) for k, v in zip("abc", "354", strict=True)]
    return events


def test_local_conformity_from_stated_opinions():
    df = keyed(tracked(line_events(True)), "conformity", "agent")
    assert {r.source for r in df.values()} == {"stated"}
    a, b, c = df["a"], df["b"], df["c"]
    assert a.neighbour_mean == 5.0 and a.conformed is True and a.step_toward == 2.0
    assert b.neighbour_mean == 3.0 and b.conformed is None  # b did not move: not counted
    assert c.neighbour_mean == 5.0 and c.conformed is None  # already at m: not counted
    assert a.n_neighbours == 1 and b.n_neighbours == 2
    # in broadcast everyone hears every neighbour: the graph version agrees
    for r in df.values():
        assert (r.graph_neighbour_mean, r.graph_conformed, r.n_graph_neighbours) == (
            r.neighbour_mean, r.conformed, r.n_neighbours)  # fmt: skip


def pair_events(with_stances: bool) -> list[dict]:
    """A triangle a, b, c talking in pairs: a with b (both ways), c heard by nobody."""
    events = [start({k: ("Kenya", {}) for k in "abc"}, [[0, 1], [1, 2], [0, 2]])]
    events += [probe(0, k, "lik", v) for k, v in zip("abc", "351", strict=True)]
    said = {"a": ("3", ["b"]), "b": ("5", ["a"])}
    for turn, (k, (value, to)) in enumerate(said.items()):
        events.append(message(1, k, "lik", turn=turn, to=to))
        if with_stances:
            events.append(stance(1, k, "lik", value, turn=turn))
    events += [probe(1, k, "lik", v) for k, v in zip("abc", "451", strict=True)]
    return events


@pytest.mark.parametrize("with_stances", [True, False])
def test_local_conformity_counts_only_what_the_agent_heard(with_stances):
    # a (3) heard only b (5) and moved to 4: conformed. Its graph neighbours b (5) and
    # c (1 in private; said nothing) give m = 3 (private: no pull, not counted) or 5.
    df = keyed(tracked(pair_events(with_stances)), "conformity", "agent")
    a, c = df["a"], df["c"]
    assert a.neighbour_mean == 5.0 and a.n_neighbours == 1 and a.conformed is True
    assert a.step_toward == 1.0
    if with_stances:  # c stated nothing: only b counts in the graph version too
        assert a.graph_neighbour_mean == 5.0 and a.graph_conformed is True
    else:  # the graph version averages b (5) with c (1), whom a never heard
        assert a.graph_neighbour_mean == 3.0 and a.n_graph_neighbours == 2
        assert a.graph_conformed is None  # m equals o(t): the move is not counted
    # c heard nobody: no event is counted, whatever its graph neighbours said
    assert c.n_neighbours == 0 and c.neighbour_mean is None and c.conformed is None
    assert c.n_graph_neighbours == 2 and c.graph_neighbour_mean is not None


def test_local_conformity_without_public_statements_uses_private_answers():
    ts = tracked(line_events(False))
    df = keyed(ts, "conformity", "agent")
    assert {r.source for r in df.values()} == {"private"}
    assert df["a"].neighbour_mean == 5.0 and df["a"].conformed is True
    c = df["c"]  # c (5) hears b (5 in private) and moves away to 4
    assert c.neighbour_mean == 5.0 and c.conformed is None  # no pull: m equals o(t)
    assert set(column(ts, "statements", "stance_status")) == {"absent"}
    assert set(column(ts, "statements", "stance")) == {None}


# -- inconstancy in discussions (docs/metrics.md §1) ---------------------------------------------
def conversation(step: int, index: int, members: list[str], topic: str = "cat") -> dict:
    return {"type": "conversation", "step": step, "index": index, "topic": topic,
            "mode": "group", "members": members}  # fmt: skip


def test_private_public_conformity_and_confabulation_by_hand():
    agents = {"a": ("Japan", {}), "b": ("France", {}), "c": ("Kenya", {}), "d": ("Peru", {})}
    events = [start(agents, [[0, 1], [0, 2], [1, 2]])]
    events += [probe(0, k, "cat", v) for k, v in zip("abcd", "ABBA", strict=True)]
    events += [conversation(1, 0, ["a", "b", "c"]), conversation(1, 1, ["d"])]
    for k, turn, said in (("a", 0, "B"), ("b", 1, "B"), ("c", 2, None), ("d", 0, "C")):
        events += [message(1, k, "cat", turn), stance(1, k, "cat", said, turn)]
    events += [probe(1, k, "cat", v) for k, v in zip("abcd", "BBCA", strict=True)]
    df = keyed(tracked(events), "inconstancy", "agent")
    a, b, c, d = (df[k] for k in "abcd")
    assert a.group == "B"  # plurality of stated B, B; c's "none" is not a value
    assert a.diversity == pytest.approx(-(1 / 3) * math.log2(1 / 3) - (2 / 3) * math.log2(2 / 3))
    assert (a.changed, a.private_conformity, a.public_conformity, a.confabulation) == (
        True, True, False, False,
    )  # fmt: skip
    assert (b.changed, b.private_conformity, b.public_conformity) == (False, False, False)
    assert (c.changed, c.private_conformity, c.confabulation) == (True, False, True)
    assert c.n_stated == 0 and a.position == 1 and c.position == 3
    # one-agent group: d said C in public but kept A in private
    assert d.group_size == 1 and d.diversity == 0.0
    assert (d.changed, d.public_conformity, d.confabulation) == (False, True, False)
    assert {(r.before_step, r.after_step) for r in df.values()} == {(0, 1)}


def test_tie_and_failed_probe_are_undecided_never_values():
    agents = {"a": ("Japan", {}), "b": ("France", {}), "c": ("Kenya", {})}
    events = [start(agents, [])]
    events += [probe(0, "a", "cat", "A"), probe(0, "b", "cat", "B"), probe(0, "c", "cat", None)]
    events += [conversation(1, 0, ["a", "b", "c"])]
    for k, turn, said in (("a", 0, "A"), ("b", 1, "B"), ("c", 2, "C")):
        events += [message(1, k, "cat", turn), stance(1, k, "cat", said, turn)]
    events += [probe(1, "a", "cat", "B"), probe(1, "b", "cat", "B"), probe(1, "c", "cat", "C")]
    df = keyed(tracked(events), "inconstancy", "agent")
    assert df["a"].group is None  # A, B, C: a three-way tie
    assert df["a"].changed is True and df["a"].private_conformity is None
    assert df["c"].onboarding is None and df["c"].changed is None  # failed probe: undecided
    assert df["a"].n_missing_onboarding == 1


# -- statements: impersonation, public/private (docs/metrics.md §1) ------------------------------
def test_statements_impersonation_and_public_private_mismatch():
    agents = {"aiko": ("Japan", {}), "hugo": ("France", {})}
    events = [start(agents, [[0, 1]])]
    events += [probe(0, "aiko", "cat", "A"), probe(0, "hugo", "cat", "B")]
    events += [
        message(1, "aiko", "cat", 0, "As a French citizen, I would pick Bananas."),
        stance(1, "aiko", "cat", "B", 0),
        message(1, "hugo", "cat", 1, "As a French voter I want Bananas."),
        stance(1, "hugo", "cat", "B", 1),
        {"type": "impersonation_judge", "step": 1, "agent": "aiko", "turn": 0, "verdict": True},
    ]
    df = keyed(tracked(events), "statements", "agent")
    aiko, hugo = df["aiko"], df["hugo"]
    assert aiko.impersonation is True and aiko.impersonation_hits == "French"
    assert hugo.impersonation is False  # speaking as itself
    assert aiko.public_private_mismatch is True  # said B, holds A
    assert hugo.public_private_mismatch is False
    assert aiko.judge is True and hugo.judge is None
    assert aiko.private_after is None  # no probe after the message


# -- personality (docs/metrics.md §4) ------------------------------------------------------------
def test_bfi10_scores_by_hand_and_failed_administration():
    events = [start({"a": ("Japan", {})}, [])]
    answers = {str(i): 4 for i in range(1, 11)}
    events.append({"type": "bfi", "step": 0, "agent": "a", "inventory": "bfi10", "seed": 5,
                   "item_order": list(range(10, 0, -1)), "option_order": [5, 4, 3, 2, 1],
                   "responses": answers, "ok": True})  # fmt: skip
    events.append({"type": "bfi", "step": 2, "agent": "a", "inventory": "bfi10", "seed": 6,
                   "item_order": list(range(1, 11)), "option_order": [1, 2, 3, 4, 5],
                   "responses": dict.fromkeys(answers), "ok": False})  # fmt: skip
    df = keyed(tracked(events), "personality", "step", "trait")
    # extraversion: items 1 (reverse-keyed: 6-4=2) and 6 (4) → 3.0
    assert df[0, "extraversion"].score == 3.0
    assert df[0, "extraversion"].distance == pytest.approx(1.0)  # assigned 4.0
    assert df[0, "neuroticism"].score == 3.0  # items 4 (rev: 2) and 9 (4)
    assert df[0, "neuroticism"].distance == pytest.approx(1.0)  # assigned 2.0
    assert df[0, "openness"].item_order == "10,9,8,7,6,5,4,3,2,1"
    failed = [r for (step, _), r in df.items() if step == 2]
    assert len(failed) == 5 and all(r.score is None and r.answered == 0 for r in failed)


# -- extra trackers ----------------------------------------------------------------------------
EXTRA = """
class MessageCounter:
    name = "message_counts"

    def __init__(self, context):
        self.context = context
        self.counts = {}

    def observe(self, event):
        if event.get("type") == "message":
            self.counts[event["agent"]] = self.counts.get(event["agent"], 0) + 1

    def rows(self):
        return [{"agent": a, "messages": n} for a, n in sorted(self.counts.items())]


class NotATracker:
    pass
"""


@pytest.fixture
def extra_module(tmp_path, monkeypatch):
    (tmp_path / "my_trackers.py").write_text(EXTRA, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_trackers"


def test_extra_tracker_from_the_scenario(extra_module):
    ts = tracked(
        [start({"a": ("Japan", {})}, []), message(1, "a", "lik"), message(2, "a", "lik")],
        extra=[f"{extra_module}:MessageCounter"],
    )
    assert ts.frame("message_counts").to_dict("records") == [{"agent": "a", "messages": 2}]
    for bad in (f"{extra_module}:NotATracker", f"{extra_module}:Missing", "no_such_mod:X"):
        with pytest.raises(ConfigError, match=r"trackers\.extra"):
            TrackerSet(scenario(extra=[bad]))
    with pytest.raises(ValueError):
        scenario(extra=["os.system('x')"])  # a spec is a dotted path, never code


# -- in the engine -----------------------------------------------------------------------------
def read_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


def test_stance_recorded_then_replayed_from_the_cache(make_scenario, tmp_path):
    cache = tmp_path / "c.db"
    path = make_scenario({"protocol.mode": "pairs", "protocol.steps": 2})
    first = run_scenario(path, out_dir=tmp_path / "rec", cache_path=cache)
    events = read_events(tmp_path / "rec")
    messages = {(e["step"], e["agent"], e["turn"]): e for e in events if e["type"] == "message"}
    stances = {(e["step"], e["agent"], e["turn"]): e for e in events if e["type"] == "stance"}
    assert messages and set(stances) == set(messages)
    labels = {"remote_work": LIKERT, "city_priority": ["Public transport", "Affordable housing",
              "Policing and safety", "Parks and green space"]}  # fmt: skip
    for key, s in stances.items():
        assert s["status"] == "stated"
        value, topic_labels = s["answer"], labels[s["topic"]]
        label = topic_labels[int(value) - 1 if value.isdigit() else "ABCD".index(value)]
        assert label in messages[key]["text"]  # the fake states its label; the stance finds it
    calls = [e for e in events if e["type"] == "llm_call"]
    stance_calls = [c for c in calls if c["identity"]["purpose"].startswith("stance:")]
    assert len(stance_calls) == len(stances)
    assert {(c["identity"]["step"], c["identity"]["agent"], c["identity"]["index"])
            for c in stance_calls} == set(stances)  # fmt: skip
    second = run_scenario(
        path, out_dir=tmp_path / "rep", cache_path=cache, overrides={"llm.cache": "replay"}
    )
    assert second.accounting.model_calls == 0 and second.accounting.calls == first.accounting.calls
    for name in ("transcript.jsonl", f"{TRACKERS_DIR}/statements.parquet"):
        assert (tmp_path / "rec" / name).read_bytes() == (tmp_path / "rep" / name).read_bytes()


def test_stance_off_makes_no_stance_calls(make_scenario, tmp_path):
    path = make_scenario({"trackers.stance": False, "llm.cache": "off", "protocol.steps": 1})
    run_scenario(path, out_dir=tmp_path / "run")
    events = read_events(tmp_path / "run")
    assert not [e for e in events if e["type"] == "stance"]
    assert not [e for e in events if e["type"] == "llm_call"
                and e["identity"]["purpose"].startswith("stance")]  # fmt: skip


def test_failed_stance_calls_are_missing_never_values(make_scenario, tmp_path):
    path = make_scenario({"llm.model": "fake/default?failure_rate=0.3", "llm.max_retries": 0,
                          "llm.max_invalid_retries": 0, "llm.cache": "off",
                          "protocol.steps": 2})  # fmt: skip
    run_scenario(path, out_dir=tmp_path / "run")
    stances = [e for e in read_events(tmp_path / "run") if e["type"] == "stance"]
    failed = [s for s in stances if s["status"] == "failed"]
    assert failed and all(s["answer"] is None and s["value"] is None for s in failed)
    statements = pd.read_parquet(tmp_path / "run" / TRACKERS_DIR / "statements.parquet")
    assert statements[statements.stance_status == "failed"].stance.isna().all()


def test_tracker_frames_identical_across_concurrency(make_scenario, tmp_path):
    outs = []
    for conc in (1, 32):
        path = make_scenario({"llm.model": "fake/default?latency_ms=1&latency_jitter_ms=10",
                              "llm.concurrency": conc, "llm.cache": "off", "protocol.mode": "group",
                              "protocol.group_size": 4, "protocol.rounds": 1,
                              "protocol.steps": 2})  # fmt: skip
        run_scenario(path, out_dir=tmp_path / f"r{conc}")
        outs.append(tmp_path / f"r{conc}" / TRACKERS_DIR)
    names = sorted(p.name for p in outs[0].iterdir())
    assert "inconstancy.parquet" in names
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_analyze_rederives_identical_frames_and_datacollector(make_scenario, tmp_path):
    models = []
    path = make_scenario(
        {"protocol.mode": "group", "protocol.group_size": 4, "protocol.rounds": 2,
         "network": {"generator": "complete"}, "llm.cache": "off",
         "trackers.bfi": {"steps": [0, 3], "inventory": "bfi10"}}
    )  # fmt: skip
    run = tmp_path / "run"
    run_scenario(path, out_dir=run, before_step=lambda m: models.append(m))
    frames = {p.stem: p for p in (run / TRACKERS_DIR).iterdir()}
    assert set(frames) >= {"drift", "population", "conformity", "inconstancy", "statements",
                           "personality", "memory"}  # fmt: skip
    assert analyze_run(run, check=True) == dict.fromkeys(derive(run).names, "identical")
    assert main(["analyze", str(run), "--check"]) == 0
    inconstancy = pd.read_parquet(frames["inconstancy"])
    assert len(inconstancy) == 8 * 3 and inconstancy.changed.notna().any()
    personality = pd.read_parquet(frames["personality"])
    assert len(personality) == 8 * 2 * 5  # agents × administrations × traits
    orders = personality.drop_duplicates(["agent", "step"]).item_order
    assert orders.nunique() > 1  # seeded per administration
    assert all(sorted(map(int, o.split(","))) == list(range(1, 11)) for o in orders)
    # mesa data collection
    model = models[0]
    mv = model.datacollector.get_model_vars_dataframe()
    assert list(mv["step"]) == [0, 1, 2, 3]
    population = pd.read_parquet(frames["population"])
    last = population[(population.topic == "remote_work") & (population.step == 3)].iloc[0]
    assert mv["diversity:remote_work"].iloc[-1] == pytest.approx(last.diversity)
    av = model.datacollector.get_agent_vars_dataframe()
    assert av.index.names == ["Step", "AgentID"] and len(av) == 8 * 4
    drift = pd.read_parquet(frames["drift"])
    final = drift[(drift.topic == "remote_work") & (drift.step == 3)].set_index("agent")
    at3 = av.xs(3, level="Step").set_index("agent")
    for agent, row in at3.iterrows():
        assert row["opinion:remote_work"] == final.loc[agent, "value"]
        assert row["flips:remote_work"] == final.loc[agent, "flips"]
    # an analyze of a run without tracker files writes them again, byte for byte
    saved = {name: p.read_bytes() for name, p in frames.items()}
    for p in frames.values():
        p.unlink()
    assert set(analyze_run(run).values()) == {"new"}
    assert {name: p.read_bytes() for name, p in frames.items()} == saved


def test_llm_judge_reported_beside_the_pattern_measure(make_scenario, tmp_path):
    path = make_scenario({"trackers.judge": True, "llm.cache": "off", "protocol.steps": 1})
    run_scenario(path, out_dir=tmp_path / "run")
    events = read_events(tmp_path / "run")
    judged = [e for e in events if e["type"] == "impersonation_judge"]
    messages = [e for e in events if e["type"] == "message"]
    assert len(judged) == len(messages) and all(isinstance(e["verdict"], bool) for e in judged)
    statements = pd.read_parquet(tmp_path / "run" / TRACKERS_DIR / "statements.parquet")
    assert statements.judge.notna().all() and statements.impersonation.notna().all()
