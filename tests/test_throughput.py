"""Call- and token-saving options (issue 20): inline stances, prompt-prefix accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simworld.config.trackers import TrackersConfig
from simworld.runs.run import run_scenario


def read_events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def purposes(events: list[dict]) -> list[str]:
    return [e["identity"]["purpose"] for e in events if e["type"] == "llm_call"]


def turn(e: dict) -> tuple[int, str, int]:
    return e["step"], e["agent"], e["turn"]


def test_stance_setting_accepts_inline_only_besides_booleans():
    assert TrackersConfig(stance="inline").stance == "inline"
    assert TrackersConfig().stance is True
    with pytest.raises(ValueError, match="stance"):
        TrackersConfig(stance="sometimes")


@pytest.mark.parametrize("mode", ["broadcast", "pairs"])
def test_inline_stance_saves_one_call_per_message_and_keeps_messages(make_scenario, tmp_path, mode):
    base = {"llm.cache": "off", "protocol.steps": 2, "protocol.mode": mode}
    run_scenario(make_scenario(base), out_dir=tmp_path / "sep")
    run_scenario(make_scenario(base | {"trackers.stance": "inline"}), out_dir=tmp_path / "inl")
    sep, inl = read_events(tmp_path / "sep"), read_events(tmp_path / "inl")
    messages = [e for e in inl if e["type"] == "message"]
    assert messages
    # the fake writes the same message whether or not it also reports its position
    assert messages == [e for e in sep if e["type"] == "message"]
    assert not any(p.startswith("stance:") for p in purposes(inl))
    assert len(purposes(inl)) == len(purposes(sep)) - len(messages)
    # every message has a stance, recorded from its own speech call
    stances = {turn(e): e for e in inl if e["type"] == "stance"}
    assert set(stances) == {turn(m) for m in messages}
    speech = {(c["identity"]["step"], c["identity"]["agent"], c["identity"]["index"]): c
              for c in inl if c["type"] == "llm_call"
              and not c["identity"]["purpose"].startswith("probe:")}  # fmt: skip
    for key, stance in stances.items():
        assert stance["call"] == speech[key]["key"]
        assert stance["status"] == "stated"
        assert json.loads(speech[key]["text"])["message"] == next(
            m["text"] for m in messages if turn(m) == key
        )
    # the fake's self-report is what an annotator reads off the same message
    separate = {turn(e): (e["status"], e["answer"]) for e in sep if e["type"] == "stance"}
    assert {k: (s["status"], s["answer"]) for k, s in stances.items()} == separate
