"""The LLM worker process: errors sent back, litellm's set-up in place, calls in arrival order."""

from __future__ import annotations

import asyncio
import contextvars
import json
import pickle
import subprocess
import sys
import threading
from functools import partial
from typing import Any

import litellm
import pytest
from test_llm_workers import request

from simworld.llm.gateway import error_kind, is_transient
from simworld.llm.litellm_backend import LiteLLMModel, RemoteModelError
from simworld.llm.worker import InPlaceExecutor, remote_error


def test_a_worker_starts_without_the_scenario_schema() -> None:
    """A worker only answers calls: its start-up loads neither the scenario's pydantic schema
    (simworld.config) nor what only the simulation needs (numpy, prompts, engine)."""
    code = "import json, sys, simworld.llm.worker; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    modules = set(json.loads(out))
    assert "simworld.llm.worker" in modules and "simworld.llm.litellm_backend" in modules
    unneeded = {"numpy", "simworld.prompts", "simworld.engine", "simworld.memory"}
    loaded = sorted(m for m in modules if m.startswith("simworld.config") or m in unneeded)
    assert loaded == []


def test_remote_errors_keep_kind_retry_class_and_message() -> None:
    original = litellm.RateLimitError("slow down", llm_provider="fake", model="m")
    remote = remote_error(original)
    back = pickle.loads(pickle.dumps(remote))
    assert isinstance(back, RemoteModelError)
    assert (error_kind(back), is_transient(back), str(back)) == (
        error_kind(original),
        is_transient(original),
        str(original),
    )
    auth = litellm.AuthenticationError("bad key", llm_provider="x", model="m")
    assert not is_transient(remote_error(auth))
    assert isinstance(remote_error(ValueError("v")), ValueError)

    class Unpicklable(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a}{b}")

    assert isinstance(remote_error(Unpicklable(1, 2)), RuntimeError)


def test_in_place_executor_runs_only_the_chosen_functions_in_place() -> None:
    def fail() -> None:
        raise KeyError("k")

    executor = InPlaceExecutor(in_place=(threading.get_ident, fail))
    ctx = contextvars.copy_context()

    async def threads() -> tuple[int, int, BaseException | None]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(executor)
        here = await loop.run_in_executor(None, partial(ctx.run, partial(threading.get_ident)))
        pooled = await loop.run_in_executor(None, lambda: threading.get_ident())
        try:
            await loop.run_in_executor(None, fail)
        except KeyError as exc:
            return here, pooled, exc
        return here, pooled, None

    assert executor.submit(divmod, 7, 2).result() == (3, 1)  # not chosen: from a thread

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self) -> str:
            return "called"

    assert executor.submit(Unhashable()).result() == "called"
    here, pooled, error = asyncio.run(threads())
    assert here == threading.get_ident() != pooled and isinstance(error, KeyError)


def test_in_place_executor_recognises_litellms_call_set_up() -> None:
    seen: list[bool] = []

    class Spy(InPlaceExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(self.runs_in_place(fn, *args))
            return super().submit(fn, *args, **kwargs)

    async def one_call() -> None:
        spy = Spy(in_place=(litellm.main.completion,))
        asyncio.get_running_loop().set_default_executor(spy)
        await LiteLLMModel(workers=0).complete(request("p"), attempt=0, timeout_s=10)

    asyncio.run(one_call())
    assert seen and all(seen)  # else litellm changed how it submits its set-up


def test_a_simulation_sets_its_litellm_calls_up_in_place(
    make_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A simulation's event loop runs litellm's call set-up in its own thread, as a worker
    does (no hop to a thread per call), and other executor work in threads."""
    import simworld.engine.model as engine_model
    from simworld import SocialSimulation

    submitted: list[bool] = []

    class Spy(InPlaceExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            submitted.append(self.runs_in_place(fn, *args))
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setenv("SIMWORLD_LLM_WORKERS", "0")
    monkeypatch.setattr(
        engine_model, "in_place_executor", lambda: Spy(in_place=(litellm.main.completion,))
    )
    with SocialSimulation.from_scenario(make_scenario(), {"protocol.steps": 1}) as sim:
        sim.step()
        pooled = sim._loop.run_until_complete(sim._loop.run_in_executor(None, threading.get_ident))
    assert sum(submitted) >= 8  # one set-up per model call of the step, run in place
    assert pooled != threading.get_ident()
