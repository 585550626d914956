"""Masking never changes scenario content: key-like words and variables named like secrets
leave a run replayable, analysable and resumable."""

from __future__ import annotations

import json
import uuid

import pytest

from simworld.cli import main
from simworld.support.redact import MASK

INSTRUCTION = (
    "Discuss sk-learn-compatible-pipelines, the KEY_TOKEN_SECRET naming scheme and "
    "hf_hub_download_helper before you answer."
)


@pytest.fixture
def secret_named_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """Variables named like secrets whose values are ordinary scenario words; one real key."""
    monkeypatch.setenv("SORT_KEY_FIELD", "remote_work")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "city_priority")
    monkeypatch.setenv("SESSION_SECRET", "Strongly agree")
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    return key


def test_key_like_words_survive_run_replay_and_analyze(
    make_scenario, tmp_path, capsys, secret_named_env
):
    path = make_scenario(
        {
            "description": "A pipeline named sk-learn-compatible-pipelines, sorted by SORT_KEY.",
            "protocol.instruction": INSTRUCTION,
        }
    )
    run_dir, cache = tmp_path / "run", tmp_path / "c.db"
    assert main(["run", str(path), "--out", str(run_dir), "--cache", str(cache), "--quiet"]) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["scenario"]["protocol"]["instruction"] == INSTRUCTION
    assert [t["id"] for t in manifest["scenario"]["topics"]] == ["remote_work", "city_priority"]
    for name in ("manifest.json", "transcript.jsonl"):
        text = (run_dir / name).read_text(encoding="utf-8")
        assert MASK not in text, name
    transcript = (run_dir / "transcript.jsonl").read_text(encoding="utf-8")
    assert "remote_work" in transcript and "city_priority" in transcript
    assert "Strongly agree" in transcript
    capsys.readouterr()

    assert main(["replay", str(run_dir), "--quiet"]) == 0
    assert "identical" in capsys.readouterr().out
    assert main(["analyze", str(run_dir), "--check"]) == 0
    assert set(capsys.readouterr().out.split()[1::2]) == {"identical"}


def test_error_messages_are_still_masked(make_scenario, tmp_path, secret_named_env):
    """What is not scenario content (a provider's error text) is masked: a key-shaped token
    there is replaced, while the scenario's words stay."""
    from simworld.llm.credentials import redactor_for

    red = redactor_for(["openai/gpt-4o-mini"])
    message = f"Incorrect API key provided: {secret_named_env} for remote_work"
    assert red.text(message) == f"Incorrect API key provided: {MASK} for remote_work"
