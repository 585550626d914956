"""A tiny scenario against llama-cpp-python's own OpenAI-compatible server (embedded Gemma)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BASE_SCENARIO

from simworld.llm.fake_server import free_port
from simworld.llm.providers.llama_server import json_schema_as_json_object, main
from simworld.runs.replay import verify_replay
from simworld.runs.run import run_scenario

START_TIMEOUT_S = 180.0


def test_json_schema_format_becomes_the_servers_json_object_with_the_schema():
    schema = {"type": "object", "properties": {"answer": {"enum": [1, 2]}}}
    wrapped = {"type": "json_schema", "json_schema": {"name": "A", "schema": schema}}
    assert json_schema_as_json_object(wrapped) == {"type": "json_object", "schema": schema}
    assert json_schema_as_json_object({"type": "text"}) == {"type": "text"}


def test_help_names_the_wrappers_own_option_before_the_servers(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", sys.argv[:])  # main hands the server its own argv
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert out.index("--extra-bufts {auto,on,off}") < out.index("usage: python -m llama_cpp.server")


@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[str]:
    """llama-cpp-python's server (simworld's wrapper) on 127.0.0.1 with Gemma 270M; stopped
    after the test."""
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simworld.llm.providers.llama_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model_alias",
            "gemma",
            "--n_ctx",
            "4096",
            "--n_threads",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                    if json.load(resp)["data"]:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "llama.cpp server did not start"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
def test_tiny_scenario_on_llama_cpp_server_records_and_replays(
    make_scenario, tmp_path, llama_server, monkeypatch
):
    monkeypatch.setenv("SIMWORLD_LLM_WORKERS", "0")
    path = make_scenario(
        {
            "population.size": 2,
            "network": {"generator": "complete"},
            "topics": BASE_SCENARIO["topics"][:1],
            "protocol.steps": 1,
            "llm.model": "openai/gemma",
            "llm.api_base": llama_server,
            "llm.max_tokens": 32,
            "llm.concurrency": 2,
            "llm.params": {"top_p": 0.95},
        }
    )
    result = run_scenario(path, out_dir=tmp_path / "run", cache_path=tmp_path / "c.db")
    assert result.status == "completed"
    acc = result.accounting
    assert acc.calls > 0 and acc.model_calls >= acc.calls and acc.completion_tokens > 0
    records = [
        json.loads(line)
        for line in (tmp_path / "run" / "transcript.jsonl").read_text().splitlines()
        if '"attempts"' in line
    ]
    assert records and all(r["model"] == "openai/gemma" for r in records)
    for r in records:  # a real answer or a recorded failure, never a made-up one
        assert (r["status"] == "ok") == (r["text"] is not None)
        assert r["status"] == "ok" or r["errors"]
    assert any(r["status"] == "ok" for r in records)
    report = verify_replay(tmp_path / "run", out_dir=tmp_path / "again")
    assert report.identical and report.result.accounting.model_calls == 0
