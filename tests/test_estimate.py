"""The run-size estimate counts the embedded model's memory, and names it when it is what
does not fit."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest
from conftest import BASE_SCENARIO, deep_update

from simworld.config.scenario import Scenario
from simworld.errors import ConfigError
from simworld.llm.providers.local_engine import PREFIX_CACHE_BYTES, PROMPT_CACHE_BYTES
from simworld.runs import estimate


def _scenario(model: str) -> Scenario:
    return Scenario.model_validate(deep_update(BASE_SCENARIO, {"llm.model": model}))


def test_an_embedded_model_adds_its_weights_cache_and_saved_states() -> None:
    local, fake = _scenario("local/gemma3-270m?engines=1&slots=1"), _scenario("fake/default")
    added = estimate.estimate(local).memory_bytes - estimate.estimate(fake).memory_bytes
    assert added == estimate.LOCAL_MODEL_BYTES + PREFIX_CACHE_BYTES + PROMPT_CACHE_BYTES
    assert estimate.estimate(local).dominant == "llm.model"
    assert estimate.model_bytes(_scenario("openai/gpt-4o-mini")) == 0
    three = estimate.model_bytes(_scenario("local/gemma3-270m?engines=3&slots=1"))
    assert three == estimate.model_bytes(local) + 2 * estimate.ENGINE_BYTES
    slotted = estimate.model_bytes(_scenario("local/gemma3-270m?engines=3&slots=4"))
    assert slotted == three + 12 * estimate.SLOT_BYTES


def test_an_out_root_on_a_file_system_of_no_size_is_not_blamed_on_the_disk(
    tmp_path, monkeypatch
) -> None:
    """``--out-root /proc/x``: the disk check passes (creating the run says why it cannot
    be), where it used to blame ``protocol.steps`` for 0 B free; a real disk that is full
    is still refused."""
    fake = _scenario("fake/default")
    estimate.check_feasible(fake, source="s.yaml", out_root=Path("/proc/simworld-runs"))
    full = namedtuple("usage", "total used free")(10**9, 10**9, 0)
    monkeypatch.setattr(estimate.shutil, "disk_usage", lambda _path: full)
    with pytest.raises(ConfigError, match=r"protocol\.steps.*0 B free"):
        estimate.check_feasible(fake, source="s.yaml", out_root=tmp_path)


def test_a_machine_too_small_for_the_embedded_model_is_told_so(monkeypatch, tmp_path) -> None:
    """On a 2 GiB machine the fake-model run fits and the embedded-model run does not; the
    refusal names ``llm.model``."""
    monkeypatch.setattr(estimate, "machine_memory", lambda: 2 * 1024**3)
    estimate.check_feasible(_scenario("fake/default"), source="s.yaml", out_root=tmp_path)
    with pytest.raises(ConfigError, match=r"llm\.model") as refused:
        estimate.check_feasible(_scenario("local/gemma3-270m"), source="s.yaml", out_root=tmp_path)
    assert "--force" in str(refused.value) and "s.yaml" in str(refused.value)
