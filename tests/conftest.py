"""Shared fixtures: small scenario files built on the shipped persona library."""

from __future__ import annotations

import copy
import importlib.util
import os
import signal
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

# Tests import litellm directly; it must not try to fetch its cost map over the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "agents" / "global_panel.yaml"
LIKERT = ["Strongly disagree", "Disagree", "Neutral", "Agree", "Strongly agree"]
# A Likert and a choice topic, for tests of trackers and measures.
TOPICS = [
    {"id": "lik", "statement": "Agree or not.", "scale": {"type": "likert", "labels": LIKERT}},
    {
        "id": "cat",
        "statement": "Pick one option.",
        "scale": {"type": "choice", "options": {"A": "Apples", "B": "Bananas", "C": "Cherries"}},
    },
]  # fmt: skip

BASE_SCENARIO: dict[str, Any] = {
    "name": "tiny",
    "seed": 11,
    "population": {"library": str(LIBRARY), "size": 8},
    "network": {"generator": "watts_strogatz", "k": 4, "p": 0.2},
    "topics": [
        {
            "id": "remote_work",
            "statement": "Companies should let employees work from home as much as they want.",
            "scale": {"type": "likert", "labels": LIKERT},
        },
        {
            "id": "city_priority",
            "statement": "What should be the city's first priority for next year's budget?",
            "scale": {
                "type": "choice",
                "options": {
                    "A": "Public transport",
                    "B": "Affordable housing",
                    "C": "Policing and safety",
                    "D": "Parks and green space",
                },
            },
        },
    ],
    "protocol": {"steps": 3, "mode": "broadcast"},
    "llm": {"model": "fake/default", "concurrency": 8, "cache": "record", "backoff_base_s": 0.0},
}


def gguf_header(path: Path, pairs: list[tuple[str, int, bytes]]) -> Path:
    """Write at ``path`` a GGUF header with no tensors, holding ``pairs`` of (key, value
    type, packed value bytes)."""
    body = b"".join(
        struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", kind) + value
        for key, kind, value in pairs
    )
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs)) + body)
    return path


def gguf_string(text: str) -> bytes:
    """A GGUF string value: its length (u64), then its bytes."""
    return struct.pack("<Q", len(text)) + text.encode()


def deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with dotted keys of ``changes`` set."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def benchmark_module(name: str) -> ModuleType:
    """The script ``benchmarks/NAME.py`` imported by its path (``benchmarks/`` is no package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def interrupted_run(
    scenario: Path, run_dir: Path, *, at_step: int, cache_path: Path | None = None
) -> Path:
    """Run ``scenario`` into ``run_dir`` and interrupt it (Ctrl-C) before step ``at_step``;
    return ``run_dir``, left ``interrupted`` for a resume."""
    from simworld.runs.run import run_scenario

    def stop(model: Any) -> None:
        if model.steps == at_step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_scenario(scenario, out_dir=run_dir, cache_path=cache_path, before_step=stop)
    return run_dir


def finished_run(
    changes: dict[str, Any], scenario: Path, run_dir: Path, cache_path: Path | None = None
) -> Path:
    """Write the tiny base scenario with dotted-key ``changes`` to ``scenario``, run it into
    ``run_dir`` (it must complete) and return ``run_dir``."""
    from simworld.runs.run import run_scenario

    data = deep_update(BASE_SCENARIO, changes)
    scenario.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert run_scenario(scenario, out_dir=run_dir, cache_path=cache_path).status == "completed"
    return run_dir


@pytest.fixture
def stop_signals_deliverable() -> Iterator[None]:
    """Python's Ctrl-C handler and SIGHUP's default action for the test, also when pytest was
    started ignoring them (``nohup`` ignores SIGHUP, ``&`` in a script SIGINT: such a process,
    and every process it starts, never sees them); the previous dispositions are restored
    afterwards. Child processes started meanwhile get both signals' default actions, as
    from a terminal, so Python installs its Ctrl-C handler in them and simworld its SIGHUP
    handler."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.fixture
def make_scenario(tmp_path: Path) -> Callable[..., Path]:
    """Write a scenario YAML (the tiny base with dotted-key changes) and return its path."""
    counter = iter(range(1000))

    def make(changes: dict[str, Any] | None = None, name: str | None = None) -> Path:
        data = deep_update(BASE_SCENARIO, changes or {})
        path = tmp_path / (name or f"scenario{next(counter)}.yaml")
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return make


def build_model(path: Path) -> Any:
    """A :class:`~simworld.engine.model.SocialSimulation` of a scenario file, with no cache
    (close it, or use it as a context manager)."""
    from simworld import SocialSimulation

    return SocialSimulation.from_scenario(path)
