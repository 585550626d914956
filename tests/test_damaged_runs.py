"""Damaged run files under ``simworld resume``/``replay``: one line naming the file (and
where in it), exit 2, before anything is written; and warnings about isolated agents."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from simworld.cli import main
from simworld.runs.run import run_scenario


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed 3-step run and its cache, copied fresh by each test."""
    import yaml
    from conftest import BASE_SCENARIO

    root = tmp_path_factory.mktemp("recorded")
    scenario = root / "s.yaml"
    scenario.write_text(yaml.safe_dump(BASE_SCENARIO), encoding="utf-8")
    result = run_scenario(scenario, out_dir=root / "run", cache_path=root / "run.db")
    assert result.status == "completed"
    return root


def _copy(recorded: Path, tmp_path: Path, *, running: bool) -> tuple[Path, Path]:
    run_dir, cache = tmp_path / "run", tmp_path / "run.db"
    shutil.copytree(recorded / "run", run_dir)
    shutil.copy(recorded / "run.db", cache)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["cache"]["path"] = str(cache)
    if running:
        manifest["status"] = "running"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir, cache


def _bad_json_line(run_dir: Path, cache: Path) -> None:
    path = run_dir / "transcript.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3][:40] + "\n"
    path.write_text("".join(lines))


def _not_utf8(run_dir: Path, cache: Path) -> None:
    path = run_dir / "transcript.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff\xfe" + data[102:])


def _corrupt_sqlite_header(run_dir: Path, cache: Path) -> None:
    data = bytearray(cache.read_bytes())
    data[:16] = b"garbage garbage!"
    cache.write_bytes(bytes(data))


def _cache_lacks_calls(run_dir: Path, cache: Path) -> None:
    conn = sqlite3.connect(cache)
    conn.execute("DELETE FROM outcomes WHERE rowid % 3 = 0")
    conn.commit()
    conn.close()


def _manifest_not_object(run_dir: Path, cache: Path) -> None:
    (run_dir / "manifest.json").write_text("[1, 2, 3]\n")


def _manifest_truncated(run_dir: Path, cache: Path) -> None:
    path = run_dir / "manifest.json"
    path.write_text(path.read_text()[:50])


def _cache_is_a_directory(run_dir: Path, cache: Path) -> None:
    cache.unlink()
    cache.mkdir()


DAMAGES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "bad_json_line": (_bad_json_line, "transcript.jsonl: line 4: damaged"),
    "not_utf8": (_not_utf8, "transcript.jsonl: line 1: damaged: not UTF-8"),
    "sqlite_header": (_corrupt_sqlite_header, "run.db: damaged: not a SQLite database"),
    "cache_lacks_calls": (_cache_lacks_calls, "run.db: lacks"),
    "manifest_not_object": (_manifest_not_object, "manifest.json: damaged: expected a JSON"),
    "manifest_truncated": (_manifest_truncated, "manifest.json: line"),
    "cache_is_a_directory": (_cache_is_a_directory, "run.db: is a directory"),
}


@pytest.mark.parametrize("command", ["resume", "replay"])
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_run_is_refused_in_one_line(recorded, tmp_path, capsys, command, damage):
    run_dir, cache = _copy(recorded, tmp_path, running=command == "resume")
    spoil, expected = DAMAGES[damage]
    spoil(run_dir, cache)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir())
    code = main([command, str(run_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert expected in err, err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir()) == before


def test_truncated_recorded_parquet_is_named_by_replay(recorded, tmp_path, capsys):
    run_dir, _ = _copy(recorded, tmp_path, running=False)
    path = run_dir / "opinions.parquet"
    path.write_bytes(path.read_bytes()[:200])
    code = main(["replay", str(run_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "opinions.parquet: damaged: not a readable parquet file" in err


@pytest.mark.parametrize(
    ("file", "text", "expected"),
    [
        ("opinions.parquet", None, "opinions.parquet: missing: nothing to compare a replay with"),
        ("transcript.jsonl", "", "transcript.jsonl: the run recorded nothing yet"),
    ],
    ids=["opinions-missing", "transcript-empty"],
)
def test_replay_refuses_a_run_whose_record_is_gone_before_replaying(
    recorded, tmp_path, capsys, file, text, expected
):
    run_dir, _ = _copy(recorded, tmp_path, running=False)
    out = tmp_path / "replayed"
    if text is None:
        (run_dir / file).unlink()
    else:
        (run_dir / file).write_text(text, encoding="utf-8")
    code = main(["replay", str(run_dir), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert expected in err, err
    assert not out.exists()  # refused before replaying


def test_truncated_transcript_tail_is_resumed(recorded, tmp_path):
    """A last line cut short (a kill while writing it) is not damage: resume redoes it."""
    run_dir, _ = _copy(recorded, tmp_path, running=True)
    path = run_dir / "transcript.jsonl"
    path.write_bytes(path.read_bytes()[:-25])
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    assert path.read_bytes() == (recorded / "run" / "transcript.jsonl").read_bytes()


def test_isolated_agents_are_reported(make_scenario, tmp_path, capsys):
    edges = tmp_path / "edges.txt"
    edges.write_text("0 1\n1 2\n")
    path = make_scenario({"network": {"generator": "edge_list", "path": str(edges)}})
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run_dir), "--quiet"]) == 0
    warning = (
        "network: 5 of 8 agents have no neighbours "
        "(the edge list edges.txt gives 3 of them a neighbour)"
    )
    assert f"WARNING    {warning}" in capsys.readouterr().out
    assert json.loads((run_dir / "manifest.json").read_text())["warnings"] == [warning]


def test_edge_list_without_edges_is_refused_where_messages_need_them(
    make_scenario, tmp_path, capsys
):
    edges = tmp_path / "edges.txt"
    edges.write_text("# nobody knows anybody\n")
    path = make_scenario({"network": {"generator": "edge_list", "path": str(edges)}})
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "network.path: the edge list connects no two agents" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    group = make_scenario(
        {"network": {"generator": "edge_list", "path": str(edges)}, "protocol.mode": "group"}
    )
    assert main(["run", str(group), "--out", str(tmp_path / "g"), "--quiet"]) == 0


def test_a_cache_on_read_only_storage_is_not_called_damaged(
    recorded, tmp_path, monkeypatch, capsys
):
    """SQLite writes beside a WAL cache even to read it: on read-only storage (an archive)
    opening it fails, which is not damage; the line says what to do."""
    import simworld.llm.cache as cache_module

    run_dir, cache = _copy(recorded, tmp_path, running=False)
    real_access = os.access

    def read_only(path, mode, *args, **kwargs):  # the cache's folder, as on a read-only mount
        if Path(path) == cache.parent and mode == os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    def cannot_open(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(cache_module.os, "access", read_only)
    monkeypatch.setattr(cache_module.sqlite3, "connect", cannot_open)
    assert main(["replay", str(run_dir), "--cache", str(cache), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{cache.parent} is not writable" in err and "damaged" not in err
