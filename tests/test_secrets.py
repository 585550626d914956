"""Secrets never reach disk: API keys in the environment are absent from runs and caches."""

from __future__ import annotations

import copy
import gc
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from simworld.cli import main
from simworld.support.redact import MASK, MIN_SECRET_LENGTH, Redactor

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_SCENARIO = ROOT / "scenarios" / "opinion_exchange.yaml"
PANEL = ROOT / "agents" / "global_panel.yaml"


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Let asyncio leftovers of earlier runs warn before, not during, a test."""
    gc.collect()
    yield
    gc.collect()


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake credentials in the environment, each unique to this test."""
    tag = uuid.uuid4().hex
    values = {
        "OPENAI_API_KEY": f"sk-test-{tag}",
        "ANTHROPIC_API_KEY": f"sk-ant-api03-{tag[::-1]}-Zq",
        "MY_SERVICE_TOKEN": f"tok_{tag[:20]}_svc",
        "DATABASE_PASSWORD": f"hunter2-{tag[5:17]}",
        "AWS_SECRET_ACCESS_KEY": f"wJalrXUtnFEMI/K7MDENG/{tag[:18]}",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _fragments(value: str) -> list[str]:
    """The secret and a distinctive middle piece of it (catches a truncated secret)."""
    mid = len(value) // 2
    return [value, value[mid - 6 : mid + 6]]


def _short_scenario(tmp_path: Path) -> Path:
    data: dict[str, Any] = copy.deepcopy(
        yaml.safe_load(SHIPPED_SCENARIO.read_text(encoding="utf-8"))
    )
    data["population"] = {"library": str(PANEL), "size": 8}
    data["network"] = {"generator": "watts_strogatz", "k": 2, "p": 0.2}
    data["protocol"]["steps"] = 2
    data["llm"].update(backoff_base_s=0.0, backoff_max_s=0.0, max_retries=2)
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_run_with_failures_writes_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secrets: dict[str, str]
) -> None:
    """Run with injected failures, then scan every byte written for every secret."""
    scenario = _short_scenario(tmp_path)
    run_dir, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    code = main(
        [
            "run",
            str(scenario),
            "--model",
            "fake/default?failure_rate=0.3",
            "--out",
            str(run_dir),
            "--cache",
            str(cache),
            "--quiet",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err

    # The run really exercised the failure paths whose messages get recorded.
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "completed"
    assert manifest["model"] == "fake/default?failure_rate=0.3"
    assert manifest["totals"]["model_calls"] > manifest["totals"]["calls"] > 0
    transcript = (run_dir / "transcript.jsonl").read_text(encoding="utf-8")
    assert "injected" in transcript

    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != scenario]
    names = {p.name for p in files}
    assert {"manifest.json", "transcript.jsonl", "llm_calls.parquet", "opinions.parquet"} <= names
    assert cache in files and cache.stat().st_size > 0
    blobs = {str(p): p.read_bytes() for p in files}
    blobs["<stdout>"] = out.out.encode()
    blobs["<stderr>"] = out.err.encode()
    for name, value in secrets.items():
        for fragment in _fragments(value):
            for where, data in blobs.items():
                assert fragment.encode() not in data, f"{name} leaked into {where}"


def test_secret_pasted_into_the_scenario_is_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secrets: dict[str, str]
) -> None:
    """A key pasted into the model string or the description is masked in run and cache."""
    key = secrets["OPENAI_API_KEY"]
    scenario = _short_scenario(tmp_path)
    data = yaml.safe_load(scenario.read_text(encoding="utf-8"))
    data["description"] = f"Uses the key {key} from the team vault."
    data["llm"]["model"] = f"fake/{key}?failure_rate=0.3"
    scenario.write_text(yaml.safe_dump(data), encoding="utf-8")
    run_dir, cache = tmp_path / "run", tmp_path / "cache.sqlite"

    code = main(["run", str(scenario), "--out", str(run_dir), "--cache", str(cache), "--quiet"])
    out = capsys.readouterr()

    assert code == 0, out.err
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert MASK in manifest["model"] and MASK in manifest["scenario"]["description"]
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(written) >= 4
    for path in written:
        assert key.encode() not in path.read_bytes(), f"key leaked into {path.name}"
    assert key not in out.out + out.err
    assert cache.stat().st_size > 0
    for path in tmp_path.glob(f"{cache.name}*"):  # the database and any -wal / -shm file
        assert key.encode() not in path.read_bytes(), f"key leaked into {path.name}"


# -- Redactor -------------------------------------------------------------------------------


def test_env_value_is_masked() -> None:
    """Values of variables named like secrets are replaced by the mask wherever they occur."""
    red = Redactor({"MY_SERVICE_TOKEN": "tok-1234567890", "HOME": "/home/someone"})
    assert red.text("auth tok-1234567890 failed") == f"auth {MASK} failed"
    assert red.text("tok-1234567890tok-1234567890") == MASK + MASK
    assert red.text("home is /home/someone") == "home is /home/someone"


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "anthropic_api_key",
        "GITHUB_TOKEN",
        "CLIENT_SECRET",
        "DB_PASSWORD",
        "LDAP_PASSWD",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ],
)
def test_secret_variable_names(name: str) -> None:
    """Every secret-like variable name is recognised, whatever its case."""
    assert Redactor({name: "value-of-the-secret"}).text("x value-of-the-secret y") == (
        f"x {MASK} y"
    )


def test_non_secret_names_are_left_alone() -> None:
    """Ordinary variables are not masked even when long."""
    red = Redactor({"PATH": "/usr/local/bin:/usr/bin", "LANG": "en_US.UTF-8"})
    text = "PATH=/usr/local/bin:/usr/bin LANG=en_US.UTF-8"
    assert red.text(text) == text


def test_short_values_are_ignored() -> None:
    """Values shorter than the minimum length would mask ordinary words; they are skipped."""
    short = "x" * (MIN_SECRET_LENGTH - 1)
    exact = "y" * MIN_SECRET_LENGTH
    red = Redactor({"SHORT_KEY": short, "EMPTY_TOKEN": "", "EXACT_KEY": exact})
    assert red.text(f"a {short} b") == f"a {short} b"
    assert red.text("nothing here") == "nothing here"
    assert red.text(f"a {exact} b") == f"a {MASK} b"


def test_longer_secret_is_masked_whole() -> None:
    """When one secret contains another, the longer is masked first, leaving no tail."""
    red = Redactor({"A_KEY": "abcdefgh", "B_KEY": "abcdefgh-ijklmnop"})
    assert red.text("abcdefgh-ijklmnop / abcdefgh") == f"{MASK} / {MASK}"


@pytest.mark.parametrize(
    "secret",
    [
        "sk-" + "A1b2C3d4E5f6G7h8I9j0",
        "sk-proj-" + "Zy9_Xw8-Vu7Ts6Rq5Po4",
        "sk-ant-api03-" + "abcdefghijklmnop1234",
        "AKIA" + "IOSFODNN7EXAMPLE",
        "hf_" + "abcdefghijklmnopqrstuv",
    ],
)
def test_known_key_shapes_are_masked_without_env(secret: str) -> None:
    """Well-known key formats are masked even when no variable holds them."""
    red = Redactor({})
    assert red.text(f"Incorrect API key provided: {secret}.") == (
        f"Incorrect API key provided: {MASK}."
    )


@pytest.mark.parametrize("text", ["sk-short", "desk-top-computer", "task-1234", "AKIA-lower"])
def test_key_like_words_are_not_masked(text: str) -> None:
    """Text that merely resembles a key prefix is kept."""
    assert Redactor({}).text(text) == text


def test_deep_masks_nested_structures() -> None:
    """Strings inside dicts (keys too), lists and tuples are masked; other values are kept."""
    red = Redactor({"MY_SERVICE_TOKEN": "tok-1234567890"})
    original = {
        "headers": {"Authorization": "Bearer tok-1234567890"},
        "tok-1234567890": "as a key",
        "attempts": [1, 2.5, None, True, ("tok-1234567890", {"deep": ["x tok-1234567890"]})],
        "count": 3,
    }
    snapshot = copy.deepcopy(original)
    masked = red.deep(original)
    assert masked == {
        "headers": {"Authorization": f"Bearer {MASK}"},
        MASK: "as a key",
        "attempts": [1, 2.5, None, True, [MASK, {"deep": [f"x {MASK}"]}]],
        "count": 3,
    }
    assert original == snapshot  # the input is not modified
    assert "tok-1234567890" not in json.dumps(masked)


def test_default_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping the redactor reads ``os.environ`` when it is created."""
    monkeypatch.setenv("SIMWORLD_TEST_TOKEN", "from-the-environment")
    assert Redactor().text("from-the-environment") == MASK
