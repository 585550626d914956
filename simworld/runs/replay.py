"""Exact replay of recorded runs, with verification, and counterfactual branches."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from simworld.config.scenario import Scenario, check_no_credentials, set_dotted
from simworld.engine.model import BRANCH_FIXED_FIELDS, resolve_plugins
from simworld.errors import ConfigError, ResumeError, config_error_from_validation
from simworld.llm.credentials import run_redactor
from simworld.memory.system import BRANCH_FIXED_MEMORY_FIELDS
from simworld.runs.run import (
    Branch,
    RunResult,
    check_models,
    check_recorded_cache,
    execute,
    free_path,
    manifest_scenario,
    model_builds,
    read_manifest,
    recorded_cache,
    recorded_recipients,
)
from simworld.runs.state import run_state
from simworld.runs.tables import read_table
from simworld.runs.writer import RunWriter, option_probs, transcript_lines
from simworld.support.rundir import FINISHED
from simworld.support.yamlio import strict_mismatch

BRANCH_FIXED_MEMORY = tuple(f"memory.{name}" for name in BRANCH_FIXED_MEMORY_FIELDS)
VERIFIED_FILES = (RunWriter.TRANSCRIPT, RunWriter.OPINIONS)
MAX_SHOWN = 80


SAME_VALUES = "same values, different bytes (metadata or an older format)"
"""The end of a table comparison whose cells are all equal (see :func:`first_table_difference`)."""


@dataclass
class ReplayReport:
    """The outcome of a verified replay.

    Attributes:
        result: The replayed run's result.
        differences: The first difference in content of each verified file that has one.
        notes: Files equal in content but not in bytes (a table the run wrote in an older
            file format, such as ``probs`` as JSON text): not differences.
    """

    result: RunResult
    differences: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Whether every verified file came out with the same content (events, cells)."""
        return not self.differences

    @property
    def byte_identical(self) -> bool:
        """Whether every verified file came out byte-identical."""
        return not self.differences and not self.notes


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def first_transcript_difference(recorded: Path, replayed: Path) -> str | None:
    """Where two transcripts first differ, as one line (``None`` if identical)."""
    recorded_lines = transcript_lines(recorded)
    a = [line for line, _ in recorded_lines]
    b = replayed.read_text(encoding="utf-8").splitlines()
    for n, (x, y) in enumerate(zip(a, b, strict=False), start=1):
        if x == y:
            continue
        ex, ey = recorded_lines[n - 1][1], json.loads(y)
        keys = sorted(set(ex) | set(ey))
        key = next(k for k in keys if ex.get(k) != ey.get(k))
        return (
            f"{recorded.name} line {n} ({ex.get('type')}): {key}: recorded {_short(ex.get(key))}, "
            f"replayed {_short(ey.get(key))}"
        )
    if len(a) != len(b):
        return f"{recorded.name}: recorded {len(a)} lines, replayed {len(b)}"
    return None


def _cell(value: Any, column: str) -> Any:
    """A table cell as plain Python (list cells as lists; JSON-text ``probs`` of older
    run directories as the typed list), so cells of either version compare."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if column == "probs":
        return option_probs(value) if isinstance(value, str | list) else None
    if isinstance(value, list):
        return value
    return None if pd.isna(value) else value


def first_table_difference(recorded: Path, replayed: Path) -> str | None:
    """Where two parquet tables first differ, as one line (``None`` if byte-identical).

    A table written before ``probs`` was typed (JSON text) differs from its replay in bytes
    only; that is reported as such, with the values found equal.
    """
    if recorded.read_bytes() == replayed.read_bytes():
        return None
    a = read_table(recorded).to_pandas()
    b = pd.read_parquet(replayed)
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return f"{recorded.name}: shape {a.shape} recorded, {b.shape} replayed"
    for i in range(len(a)):
        for j, col in enumerate(a.columns):  # the same columns in the same order (checked)
            x = _cell(a.iat[i, j], col)
            y = _cell(b.iat[i, j], col)
            if x != y:
                return f"{recorded.name} row {i}: {col}: recorded {x!r}, replayed {y!r}"
    return f"{recorded.name}: {SAME_VALUES}"


def verify_replay(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    cache_path: str | Path | None = None,
    progress: bool = False,
) -> ReplayReport:
    """Re-execute a recorded run with zero model calls and compare its outputs.

    Args:
        run_dir: The recorded run.
        out_dir: Where to keep the replayed run (default: a temporary folder, removed).
        cache_path: The cache it recorded into (default: the one named in its manifest).
        progress: Show a progress bar.

    Returns:
        The replay's result and the first difference in each verified file.

    Raises:
        ResumeError: The run is a branch, or has not finished (still running, or stopped
            before its end: resume it first).
        ConfigError: Its manifest, transcript, tables or cache are missing or damaged.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if "branch" in manifest:
        raise ResumeError(f"{run_dir}: replay the branch's parent, then branch it again")
    status = manifest.get("status")
    if status not in FINISHED:
        raise ResumeError(
            f"{run_dir}: only a finished run can be replayed (status {status}); "
            f"if it stopped, continue it first: simworld resume {run_dir}"
        )
    scenario = manifest_scenario(run_dir, manifest)
    scenario = scenario.model_copy(
        update={"llm": scenario.llm.model_copy(update={"cache": "replay"})}
    )
    cache = recorded_cache(run_dir, manifest, cache_path)
    recipients = recorded_recipients(run_dir, manifest)
    check_recorded_cache(run_dir, cache)
    run_state(run_dir)  # a transcript that recorded nothing is refused now, not compared later
    for name in VERIFIED_FILES:
        if not (run_dir / name).is_file():
            raise ConfigError(run_dir / name, "", "missing: nothing to compare a replay with")
    temp = None if out_dir is not None else Path(tempfile.mkdtemp(prefix="simworld-replay-"))
    target = Path(out_dir) if out_dir is not None else temp / "run"  # type: ignore[operator]
    if target.exists():
        raise ConfigError(target, "", "run directory already exists")
    try:
        result = execute(
            scenario,
            source=manifest.get("scenario_file", "<manifest>"),
            run_dir=target,
            cache_path=cache,
            progress=progress,
            recipients=recipients,
        )
        differences: list[str] = []
        notes: list[str] = []
        for name in VERIFIED_FILES:
            compare = (
                first_transcript_difference if name.endswith(".jsonl") else first_table_difference
            )
            diff = compare(run_dir / name, target / name)
            if diff is not None:
                (notes if diff.endswith(SAME_VALUES) else differences).append(diff)
        return ReplayReport(result=result, differences=differences, notes=notes)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def branch_scenario(parent: Scenario, overrides: dict[str, Any], *, source: str | Path) -> Scenario:
    """The parent scenario with dotted-key overrides, checked to be a valid branch.

    Raises:
        ConfigError: A key is unknown, a value invalid, or it changes who is simulated.
    """
    data = parent.model_dump(mode="json")
    for key, value in overrides.items():
        if key.split(".", 1)[0] in BRANCH_FIXED_FIELDS or key.startswith(BRANCH_FIXED_MEMORY):
            raise ConfigError(
                source, key, "cannot change in a branch (it changes who is simulated)"
            )
        set_dotted(data, key, value, source=source)
    try:
        child = Scenario.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(source, exc) from exc
    mismatch = strict_mismatch(data, child.model_dump())
    if mismatch is not None:
        raise ConfigError(source, *mismatch)
    check_no_credentials(child, source, run_redactor(parent, child))
    return child


def check_branch(parent: Scenario, child: Scenario, from_step: int) -> None:
    """Check, before anything is written, what a branch from step ``from_step`` runs under
    its own scenario ``child``: at least that step, interventions that can still apply, a
    model and embedding model that can be reached, and plug-ins that load.

    Raises:
        ConfigError: Naming ``--set`` and the field at fault.
    """
    source = "--set"
    if child.protocol.steps < from_step:
        raise ConfigError(
            source,
            "protocol.steps",
            f"{child.protocol.steps} ends before --from-step {from_step}: the branch would "
            "run no step of its own",
        )
    for i, item in enumerate(child.interventions):
        if item.step < from_step and item not in parent.interventions:
            raise ConfigError(
                source,
                f"interventions[{i}].step",
                f"step {item.step} is before --from-step {from_step}, whose steps replay the "
                "parent: it would never apply",
            )
    check_models(child, source)
    resolve_plugins(child, source)


def branch_run(
    run_dir: str | Path,
    *,
    from_step: int,
    overrides: dict[str, Any],
    out_dir: str | Path | None = None,
    cache_path: str | Path | None = None,
    progress: bool = False,
) -> RunResult:
    """Branch a counterfactual from a recorded run: steps before ``from_step`` replay exactly.

    Args:
        run_dir: The recorded parent run.
        from_step: First step run under the changed settings (1 or later).
        overrides: Dotted scenario keys to change (protocol, topics, llm …).
        out_dir: The branch's run directory (default: beside the parent, ``-branch<K>``).
        cache_path: The parent's cache (default: the one named in its manifest).
        progress: Show a progress bar.

    Returns:
        The branch's result.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if "branch" in manifest:  # its first steps ran under its parent's scenario
        parent_run = manifest["branch"].get("parent_run", "its parent")
        raise ConfigError(run_dir, "", f"is a branch: branch its parent ({parent_run}) instead")
    parent = manifest_scenario(run_dir, manifest)
    if not 1 <= from_step <= parent.protocol.steps:
        raise ConfigError("--from-step", "", f"must be between 1 and {parent.protocol.steps}")
    recorded = manifest.get("last_completed_step")
    if manifest.get("status") not in FINISHED and (recorded is None or recorded < from_step - 1):
        status = manifest.get("status")
        reach = (
            f"recorded steps up to {recorded}: branch from step {recorded + 1} or earlier, or"
            if recorded is not None and recorded >= 0
            else "recorded no step:"
        )
        raise ConfigError("--from-step", "", f"the parent run ({status}) {reach} resume it first")
    child = branch_scenario(parent, overrides, source="--set")
    check_branch(parent, child, from_step)
    cache = recorded_cache(run_dir, manifest, cache_path)
    recipients = recorded_recipients(run_dir, manifest)
    check_recorded_cache(run_dir, cache, before_step=from_step)
    if out_dir is None:
        parent_dir = run_dir.resolve()  # `simworld replay .` has a name too
        target = free_path(parent_dir.with_name(f"{parent_dir.name}-branch{from_step}"))
    else:
        target = Path(out_dir)
        if target.exists():
            raise ConfigError(target, "", "run directory already exists")
    info = {
        "parent_run": str(run_dir.resolve()),
        "from_step": from_step,
        "overrides": overrides,
        "parent_scenario": parent.model_dump(mode="json"),
    }
    return execute(
        parent,
        source=manifest.get("scenario_file", "<manifest>"),
        run_dir=target,
        cache_path=cache,
        progress=progress,
        branch=Branch(from_step, child),
        # the steps before from_step replay the parent's answers: its builds answered them
        manifest_extra={
            "branch": info,
            "model_builds": model_builds(manifest.get("model_builds"), ()),
        },
        recipients=recipients,
    )


__all__ = ["ReplayReport", "branch_run", "verify_replay"]
