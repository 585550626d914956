"""A scenario overrides prompt templates (``prompts:``); checked, scoped to the model, and
part of the cache identity through the prompt text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from simworld.cli import main
from simworld.engine.model import SocialSimulation
from simworld.errors import ConfigError
from simworld.prompts import render as prompts
from simworld.runs.replay import verify_replay
from simworld.runs.run import run_scenario

MARK = "- (you have heard nothing yet, OVERRIDDEN)"


def test_an_override_reaches_the_requests_and_stays_in_the_model(
    make_scenario: Callable[..., Path],
) -> None:
    packaged = prompts.render("no_memories")
    path = make_scenario({"prompts": {"no_memories": MARK}})
    seen: list[str] = []
    with SocialSimulation.from_scenario(path) as model:
        call = model.gateway.call

        async def spy(request: Any, *args: Any) -> Any:
            seen.append(request.messages[-1]["content"])
            return await call(request, *args)

        model.gateway.call = spy  # type: ignore[method-assign]
        model.step()
    speech = [text for text in seen if "Write one short post" in text]
    assert speech and all(MARK in text for text in speech)
    assert prompts.render("no_memories") == packaged  # nothing leaks outside the model


def test_overrides_change_the_call_identities_and_replay(
    make_scenario: Callable[..., Path], tmp_path: Path
) -> None:
    plain = make_scenario({"protocol.steps": 1})
    custom = make_scenario({"protocol.steps": 1, "prompts": {"no_memories": MARK}})
    keys = []
    for name, path in (("plain", plain), ("custom", custom)):
        run = tmp_path / name / "run"
        assert run_scenario(path, out_dir=run).status == "completed"
        table = pq.read_table(run / "llm_calls.parquet").to_pandas()
        keys.append(dict(zip(table.purpose + table.agent, table.call, strict=True)))
        if name == "custom":
            assert verify_replay(run).identical
    speech = [k for k in keys[0] if k.startswith("post:")]
    assert speech and all(keys[0][k] != keys[1][k] for k in speech)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nosuch": "x"}, "prompts.nosuch: no prompt template 'nosuch'"),
        ({"local_preamble": "x"}, "prompts.local_preamble: rendered by the local provider"),
        ({"post": "{statement} {colour}"}, "prompts.post: unknown field {colour}"),
        ({"post": "{statement"}, "prompts.post: malformed template"),
        ({"no_memories": "hi {}"}, "prompts.no_memories: malformed template: {}: write"),
        ({"post": "{statement.__class__}"}, "malformed template: {statement.__class__}: write"),
        ({"post": "{statement:d}"}, "prompts.post: malformed template: {statement:d}: write"),
        ({"post": "{statement!r}"}, "prompts.post: malformed template: {statement!r}: write"),
        ({"post": "{memories[0]}"}, "prompts.post: malformed template: {memories[0]}: write"),
    ],
)
def test_a_bad_override_is_one_line_and_exit_2(
    make_scenario: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, str],
    message: str,
) -> None:
    path = make_scenario({"prompts": overrides})
    with pytest.raises(ConfigError):
        SocialSimulation.from_scenario(path).close()
    out = tmp_path / "never"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert not out.exists() and err.count("\n") == 1 and message in err


def test_a_field_written_as_the_packaged_template_writes_it_is_allowed(
    make_scenario: Callable[..., Path],
) -> None:
    path = make_scenario({"prompts": {"baseline_message": "{label}, that is {value:.2f}"}})
    SocialSimulation.from_scenario(path).close()  # no ConfigError
