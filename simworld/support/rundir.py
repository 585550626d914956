"""The run-directory layout: file names, the run statuses and reading a run's manifest.

A run directory holds::

    manifest.json        the resolved scenario, versions, status (RunStatus), totals
    transcript.jsonl     every event, one JSON object a line (see simworld.support.events)
    opinions.parquet     the private probe answers
    llm_calls.parquet    one row per model call
    agents.parquet       who was simulated: persona attributes, node, group, degree
    edges.parquet        the initial network's edges
    trackers/            one <frame>.parquet per tracker
    memory/              a chroma memory store's files (when used)
    report/              report.html and its figures (``simworld report``)

A run's cache (``llm_cache.sqlite``) sits beside its scenario folder by default.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from simworld.errors import ConfigError

MANIFEST = "manifest.json"
TRANSCRIPT = "transcript.jsonl"
OPINIONS = "opinions.parquet"
CALLS = "llm_calls.parquet"
AGENTS = "agents.parquet"
EDGES = "edges.parquet"
TRACKERS_DIR = "trackers"
MEMORY_DIR = "memory"
REPORT_DIR = "report"
CACHE_FILE = "llm_cache.sqlite"
SWEEP_MANIFEST = "sweep.json"
"""A sweep directory's manifest (its runs sit in ``runs/``, see :mod:`simworld.sweeps`)."""


class RunStatus(StrEnum):
    """The ``status`` of a run in its manifest (written as the plain string)."""

    RUNNING = "running"
    """Started, not finished (or killed without a chance to say so)."""
    COMPLETED = "completed"
    """Ran every configured step."""
    BUDGET_EXHAUSTED = "budget_exhausted"
    """Stopped early because ``llm.budget_usd`` was spent."""
    FAILED = "failed"
    """Stopped by an error (named in the manifest's ``error``)."""
    INTERRUPTED = "interrupted"
    """Stopped by the user (Ctrl-C); resumable."""
    CRASHED = "crashed"
    """The model's process died (segfault, abort, out of memory); resumable."""


FINISHED = (RunStatus.COMPLETED, RunStatus.BUDGET_EXHAUSTED)
"""Statuses of a run that ended as configured (nothing left to resume)."""


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's ``manifest.json``.

    Raises:
        ConfigError: There is no readable manifest.
    """
    path = Path(run_dir) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(path, "", "not a run directory (no manifest.json)") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            path, f"line {exc.lineno}", f"damaged: not valid JSON ({exc.msg})"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"damaged: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "", "damaged: expected a JSON object")
    return data


def read_sweep_manifest(sweep_dir: str | Path) -> dict[str, Any] | None:
    """A sweep directory's ``sweep.json``, or ``None`` when there is none yet.

    Raises:
        ConfigError: The file is not a readable JSON object.
    """
    path = Path(sweep_dir) / SWEEP_MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(path, "", f"unreadable sweep manifest: {exc.msg}") from exc
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(path, "", f"unreadable sweep manifest: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "", "damaged: expected a JSON object")
    return data
