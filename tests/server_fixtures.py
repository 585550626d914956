"""Fixtures for tests over real HTTP: simworld's fake OpenAI-compatible servers on 127.0.0.1.

Import the fixtures into a test module (``from server_fixtures import ...``) to use them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from simworld.llm.fake_server import FakeServer

KEY_ENV = "SIMWORLD_TEST_SERVER_AUTH"  # deliberately not a "secret-looking" name
KEY = "local-server-credential-5b1e0c7d9a"


@pytest.fixture
def servers() -> Iterator[Callable[..., FakeServer]]:
    """Start fake servers (``servers(latency_ms=..., capacity=...)``); all stop with the test."""
    started: list[FakeServer] = []

    def start(**options: float | int | None) -> FakeServer:
        server = FakeServer(**options).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(servers: Callable[..., FakeServer]) -> FakeServer:
    """One fake server, no latency, no capacity limit."""
    return servers()


@pytest.fixture
def server_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A key in :data:`KEY_ENV`; calls stay in this process (workers read their own env)."""
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("SIMWORLD_LLM_WORKERS", "0")
    return KEY


def all_bytes(root: Path) -> bytes:
    """Every file under ``root`` (or ``root`` itself), concatenated."""
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return b"".join(p.read_bytes() for p in paths)
