"""Counterbalanced probes and the signal checks on the fake provider, with and without bias."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from simworld.analysis.report import build_report
from simworld.cli import main
from simworld.config.scenario import Topic, recorded_scenario
from simworld.engine.counterbalance import ShownOrder, options_lines, shown_order
from simworld.llm.providers.fake import FakeOptions
from simworld.llm.types import CallIdentity
from simworld.runs.run import run_scenario
from simworld.trackers.tracker_set import TRACKERS_DIR, analyze_run

LIKERT = ["Strongly disagree", "Disagree", "Neutral", "Agree", "Strongly agree"]
LIK = Topic.model_validate(
    {"id": "lik", "statement": "Agree?", "scale": {"type": "likert", "labels": LIKERT}}
)
CAT = Topic.model_validate(
    {
        "id": "cat",
        "statement": "Pick one.",
        "scale": {"type": "choice", "options": {"A": "Apples", "B": "Bananas", "C": "Cherries"}},
    }
)


def ident(agent: str, step: int, topic: Topic) -> CallIdentity:
    return CallIdentity(5, agent, step, f"probe:{topic.id}", 0)


def test_likert_orders_are_the_scale_or_its_reverse_half_the_time():
    orders = [shown_order(LIK, ident(f"a{i}", s, LIK), counterbalance=True) for i in range(50)
              for s in range(4)]  # fmt: skip
    texts = Counter(o.text for o in orders)
    assert set(texts) == {"1,2,3,4,5", "5,4,3,2,1"}
    assert 70 < texts["5,4,3,2,1"] < 130  # about half of 200
    again = shown_order(LIK, ident("a3", 2, LIK), counterbalance=True)
    assert again == shown_order(LIK, ident("a3", 2, LIK), counterbalance=True)  # seeded


def test_choice_orders_are_permutations_and_cover_every_first_option():
    orders = [shown_order(CAT, ident(f"a{i}", 1, CAT), counterbalance=True) for i in range(60)]
    assert all(sorted(o.values) == ["A", "B", "C"] and o.codes == ("A", "B", "C") for o in orders)
    assert {o.values[0] for o in orders} == {"A", "B", "C"}


def test_no_counterbalance_shows_the_topic_order():
    order = shown_order(CAT, ident("a", 1, CAT), counterbalance=False)
    assert order.identity and order.text == "A,B,C"


def test_answers_and_probabilities_map_back_to_the_topic_values():
    order = ShownOrder(codes=("1", "2", "3", "4", "5"), values=("5", "4", "3", "2", "1"))
    assert options_lines(LIK, order)[0] == ("1", "Strongly agree")
    assert order.original(1) == "5" and order.position("1") == 0
    assert order.original("7") is None
    assert order.original_probs({"1": 0.7, "2": 0.3}) == {"5": 0.7, "4": 0.3}


def test_fake_position_bias_option_is_parsed_and_checked():
    assert FakeOptions.parse("default?position_bias=0.8").position_bias == 0.8
    assert FakeOptions.parse("default").position_bias == 0.0
    with pytest.raises(ValueError, match="position_bias"):
        FakeOptions.parse("default?position_bias=1.5")
    with pytest.raises(ValueError, match="position_bias must be a number"):
        FakeOptions.parse("default?position_bias=lots")


def test_a_manifest_without_counterbalance_is_a_fixed_order_run(make_scenario):
    from simworld.config.scenario import load_scenario

    data = load_scenario(make_scenario()).model_dump(mode="json")
    assert data["protocol"]["counterbalance"] is True  # new runs: on by default
    del data["protocol"]["counterbalance"]
    assert recorded_scenario(data).protocol.counterbalance is False
    from simworld.trackers.tracker_set import tracker_scenario  # what analyze and report read

    assert tracker_scenario({"scenario": data}, ".").protocol.counterbalance is False


def run(make_scenario, tmp_path: Path, name: str, bias: float, **changes) -> tuple[Path, object]:
    scenario = make_scenario(
        {
            "population.size": 16,
            "protocol.steps": 3,
            "llm.model": f"fake/default?position_bias={bias}",
            **changes,
        }
    )
    out = tmp_path / name
    result = run_scenario(scenario, out_dir=out, cache_path=tmp_path / f"{name}.db")
    assert result.status == "completed"
    return out, result


def signal(out: Path) -> dict[str, dict]:
    frame = pd.read_parquet(out / TRACKERS_DIR / "signal.parquet")
    return {r["topic"]: r for r in frame.to_dict("records")}


@pytest.mark.slow
def test_signal_checks_find_a_biased_fake_and_pass_an_unbiased_one(make_scenario, tmp_path, capsys):
    fair, fair_result = run(make_scenario, tmp_path, "fair", 0.0)
    biased, biased_result = run(make_scenario, tmp_path, "biased", 0.8)
    for topic, row in signal(fair).items():
        assert row["n_counterbalanced"] == row["n"] > 0, topic
        assert row["position_bias"] < 0.3 and not row["position_driven"], topic
        assert row["persona_signal"] and pd.isna(row["warning"]), topic
    for topic, row in signal(biased).items():
        assert row["position_bias"] > 0.5 and row["position_driven"], topic
        assert row["persona_signal"] is False, topic
        assert "position" in row["warning"], topic
    assert not fair_result.warnings and len(biased_result.warnings) == 2
    assert "WARNING    topic" in biased_result.summary()
    manifest = json.loads((biased / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["signal"]["remote_work"]["position_driven"] is True
    report = build_report(biased).read_text(encoding="utf-8")
    assert "Warning:" in report and "position-bias index" in report
    assert analyze_run(biased, check=True)["signal"] == "identical"
    capsys.readouterr()
    assert main(["analyze", str(biased)]) == 0
    printed = capsys.readouterr().out
    assert "signal       identical" in printed and printed.count("WARNING      topic") == 2


def test_probe_rows_record_the_order_and_map_the_answer_back(make_scenario, tmp_path):
    out, _ = run(make_scenario, tmp_path, "rows", 1.0)  # always the first shown option
    ops = pd.read_parquet(out / "opinions.parquet")
    assert ops["order"].notna().all() and (ops["position"] == 0).all()
    for r in ops.to_dict("records"):
        order = r["order"].split(",")
        assert r["answer"] == order[r["position"]]  # mapped back to the topic's value
        assert r["shown_answer"] == (
            str(r["position"] + 1) if r["topic"] == "remote_work" else "ABCD"[r["position"]]
        )
        probs = {cell["option"]: cell["prob"] for cell in r["probs"]}
        assert max(probs, key=probs.get) == r["answer"]  # probabilities are mapped back too
    lik = ops[ops.topic == "remote_work"]
    assert set(lik["answer"]) == {"1", "5"}  # the first position is either end of the scale


def test_counterbalance_off_reproduces_the_fixed_order_protocol(make_scenario, tmp_path):
    out, _ = run(make_scenario, tmp_path, "fixed", 0.8, **{"protocol.counterbalance": False})
    ops = pd.read_parquet(out / "opinions.parquet")
    assert ops["order"].isna().all() and ops["position"].isna().all()
    events = [json.loads(x) for x in (out / "transcript.jsonl").read_text().splitlines()]
    assert not any("order" in e for e in events if e["type"] == "probe")
    for topic, row in signal(out).items():
        # without counterbalancing a position effect cannot be told from an opinion
        assert row["n_counterbalanced"] == 0 and pd.isna(row["position_bias"]), topic
        assert pd.isna(row["persona_signal"]), topic
    lik = ops[ops.topic == "remote_work"]
    assert (lik["answer"] == "1").mean() > 0.6  # the bias shows as "Strongly disagree"
