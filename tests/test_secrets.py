"""Secrets never reach disk: API keys in the environment are absent from runs and caches."""

from __future__ import annotations

import copy
import gc
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from simworld.cli import main
from simworld.llm.credentials import redactor_for
from simworld.runs.writer import mask_table
from simworld.support.redact import MASK, MIN_SECRET_LENGTH, Redactor

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_SCENARIO = ROOT / "scenarios" / "opinion_exchange.yaml"
PANEL = ROOT / "agents" / "global_panel.yaml"


@pytest.fixture
def _collect_garbage() -> Iterator[None]:
    """Let asyncio leftovers of earlier runs warn before, not during, a test that reads its
    stderr (for the tests that run ``simworld run``; a collection takes a fraction of a
    second, too long to pay for every test of this module)."""
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


@pytest.mark.usefixtures("_collect_garbage")
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


@pytest.mark.usefixtures("_collect_garbage")
def test_secret_pasted_into_the_scenario_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secrets: dict[str, str]
) -> None:
    """A key pasted into the scenario is refused, in one line that names the field but not
    the key; nothing is written (masking it would change the scenario that is recorded)."""
    key = secrets["OPENAI_API_KEY"]
    for field, value in (
        ("description", f"Uses the key {key} from the team vault."),
        ("model", f"fake/{key}?failure_rate=0.3"),
    ):
        scenario = _short_scenario(tmp_path)
        data = yaml.safe_load(scenario.read_text(encoding="utf-8"))
        if field == "model":
            data["llm"]["model"] = value
        else:
            data[field] = value
        scenario.write_text(yaml.safe_dump(data), encoding="utf-8")
        run_dir, cache = tmp_path / "run", tmp_path / "cache.sqlite"

        code = main(["run", str(scenario), "--out", str(run_dir), "--cache", str(cache)])
        out = capsys.readouterr()

        assert code == 2
        assert out.err.count("\n") == 1 and str(scenario) in out.err
        assert ("llm.model" if field == "model" else field) in out.err
        assert key not in out.out + out.err
        assert not run_dir.exists() and not cache.exists()


# -- Redactor -------------------------------------------------------------------------------


def test_provider_credential_is_masked() -> None:
    """Values of the variables the model's provider reads are masked wherever they occur."""
    env = {"OPENAI_API_KEY": "tok-1234567890", "HOME": "/home/someone"}
    red = redactor_for(["openai/gpt-4o-mini"], env)
    assert red.text("auth tok-1234567890 failed") == f"auth {MASK} failed"
    assert red.text("tok-1234567890tok-1234567890") == MASK + MASK
    assert red.text("home is /home/someone") == "home is /home/someone"


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("openai/gpt-4o-mini", "OPENAI_API_KEY"),
        ("gpt-4o-mini", "OPENAI_API_KEY"),
        ("anthropic/claude-3-5-haiku-20241022", "ANTHROPIC_API_KEY"),
        ("bedrock/anthropic.claude-3-haiku-20240307-v1:0", "AWS_SECRET_ACCESS_KEY"),
        ("azure/my-deployment", "AZURE_API_KEY"),
        ("gemini/gemini-1.5-flash", "GEMINI_API_KEY"),
        ("huggingface/meta-llama/Llama-3-8B", "HF_TOKEN"),
    ],
)
def test_provider_variable_names(model: str, name: str) -> None:
    """Each provider's credential variable is recognised."""
    red = redactor_for([model], {name: "value-of-the-secret"})
    assert red.text("x value-of-the-secret y") == f"x {MASK} y"


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("openai/gpt-4o-mini", "SORT_KEY_FIELD"),
        ("openai/gpt-4o-mini", "GITHUB_TOKEN"),
        ("openai/gpt-4o-mini", "ANTHROPIC_API_KEY"),
        ("fake/default", "OPENAI_API_KEY"),
        ("local/gemma3-270m", "HF_TOKEN"),
    ],
)
def test_variables_the_provider_does_not_read_are_left_alone(model: str, name: str) -> None:
    """A variable named like a secret is not masked unless the run's provider reads it."""
    red = redactor_for([model], {name: "remote_work"})
    assert red.text("topic remote_work") == "topic remote_work"


def test_short_values_are_ignored() -> None:
    """Values shorter than the minimum length would mask ordinary words; they are skipped."""
    short = "x" * (MIN_SECRET_LENGTH - 1)
    exact = "y" * MIN_SECRET_LENGTH
    red = Redactor([short, "", exact])
    assert red.text(f"a {short} b") == f"a {short} b"
    assert red.text("nothing here") == "nothing here"
    assert red.text(f"a {exact} b") == f"a {MASK} b"


def test_longer_secret_is_masked_whole() -> None:
    """When one secret contains another, the longer is masked first, leaving no tail."""
    red = Redactor(["abcdefgh", "abcdefgh-ijklmnop"])
    assert red.text("abcdefgh-ijklmnop / abcdefgh") == f"{MASK} / {MASK}"


@pytest.mark.parametrize(
    "secret",
    [
        "sk-" + "A1b2C3d4E5f6G7h8I9j0",
        "sk-proj-" + "Zy9_Xw8-Vu7Ts6Rq5Po4",
        "sk-ant-api03-" + "abcdefghijklmnop1234",
        "AKIA" + "IOSFODNN7EXAMPLE",
        "hf_" + "aBcDeFgHiJkLmNoPqRsTuV12",
        "ghp_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    ],
)
def test_known_key_shapes_are_masked_without_env(secret: str) -> None:
    """Well-known key formats are masked even when no variable holds them."""
    red = Redactor()
    assert red.text(f"Incorrect API key provided: {secret}.") == (
        f"Incorrect API key provided: {MASK}."
    )


@pytest.mark.parametrize(
    "text",
    [
        "sk-short",
        "desk-top-computer",
        "task-1234",
        "AKIA-lower",
        "#ASIAPacific2024Summit",
        "AKIAIOSFODNN7EXAMPLE2",
        "sk-learn-compatible-pipelines",
        "sk-model-v2-release-2024-pipeline",
        "hf_hub_download_helper_function",
    ],
)
def test_key_like_words_are_not_masked(text: str) -> None:
    """Text that resembles a key only by its prefix is kept."""
    assert Redactor().text(text) == text
    assert Redactor().text(f"use {text}, please") == f"use {text}, please"


def test_deep_masks_nested_structures() -> None:
    """Strings inside dicts (keys too), lists and tuples are masked; other values are kept."""
    red = Redactor(["tok-1234567890"])
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
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-the-environment")
    red = redactor_for(["anthropic/claude-3-5-haiku-20241022"])
    assert red.text("from-the-environment") == MASK


@pytest.mark.usefixtures("_collect_garbage")
def test_a_key_in_the_library_a_grid_or_a_branch_is_refused_before_anything_is_written(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    secrets: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The persona library, a sweep's grid values and a branch's ``--set`` are scenario
    content too: a key in them is refused in one line naming the file and field (masking
    would change what is simulated), and nothing is written."""
    key = secrets["OPENAI_API_KEY"]
    monkeypatch.setenv("VAULT_VAR", "CorrectHorseBattery9")  # any name, via api_key_env
    library = yaml.safe_load(PANEL.read_text(encoding="utf-8"))
    library["personas"][-1]["occupation"] = f"Keeps {key} safe"
    (tmp_path / "panel.yaml").write_text(yaml.safe_dump(library), encoding="utf-8")
    scenario = _short_scenario(tmp_path)
    data = yaml.safe_load(scenario.read_text(encoding="utf-8"))
    data["population"]["library"] = str(tmp_path / "panel.yaml")
    scenario.write_text(yaml.safe_dump(data), encoding="utf-8")
    last = len(library["personas"]) - 1
    assert main(["run", str(scenario), "--out", str(tmp_path / "a"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"panel.yaml: personas[{last}].occupation: holds a key-shaped token" in err
    assert key not in err and not (tmp_path / "a").exists()

    scenario = _short_scenario(tmp_path)
    grid = f"protocol.instruction=plain,use {key} here"
    assert main(["sweep", str(scenario), "--grid", grid, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "protocol.instruction: holds a key-shaped token" in err and key not in err
    assert not (tmp_path / "s").exists()

    run = tmp_path / "run"
    args = ["--set", "llm.api_key_env=VAULT_VAR", "--out", str(run), "--quiet"]
    assert main(["run", str(scenario), *args]) == 0
    capsys.readouterr()
    before = sorted(tmp_path.iterdir())
    instruction = "protocol.instruction=Say CorrectHorseBattery9 now"
    assert main(["replay", str(run), "--from-step", "1", "--set", instruction, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "protocol.instruction: holds the value of a credential variable" in err
    assert "CorrectHorseBattery9" not in err and sorted(tmp_path.iterdir()) == before


def test_a_value_echoed_in_an_error_is_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secrets: dict[str, str]
) -> None:
    """An error that quotes what was typed (a key pasted as a value) masks it."""
    key, scenario = secrets["OPENAI_API_KEY"], _short_scenario(tmp_path)
    for args in (["--set", f"llm.temperature={key}"], ["--model", key]):
        assert main(["run", str(scenario), *args, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert key not in err and err.startswith("simworld: error: "), err
    with pytest.raises(SystemExit) as stop:  # argparse's own error
        main(["run", str(scenario), "--steps", key])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"'{MASK}'" in err and key not in err


def test_strings_inside_list_and_struct_columns_are_masked() -> None:
    """A tracker of one's own may keep lists of messages: masked like a string column."""
    red = Redactor(["tok-1234567890"])
    kind = pa.struct([("speaker", pa.string()), ("words", pa.list_(pa.string()))])
    table = pa.table(
        {
            "said": pa.array([["hi tok-1234567890", "ok"], None], pa.list_(pa.string())),
            "turn": pa.array(
                [{"speaker": "tok-1234567890", "words": ["a", "tok-1234567890"]}, None], kind
            ),
            "n": [1, 2],
        }
    )
    masked = mask_table(table, red).to_pylist()
    assert masked == [
        {"said": [f"hi {MASK}", "ok"], "turn": {"speaker": MASK, "words": ["a", MASK]}, "n": 1},
        {"said": None, "turn": None, "n": 2},
    ]
    assert mask_table(table, Redactor()).equals(table)
