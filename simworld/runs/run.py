"""Running a scenario into a run directory: new runs, resumed runs and branched runs."""

from __future__ import annotations

import contextlib
import errno
import platform
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from simworld.config.scenario import (
    Scenario,
    check_no_credentials,
    recorded_scenario,
    resolve_scenario,
)
from simworld.engine.model import SocialSimulation
from simworld.engine.record import StepRecord
from simworld.errors import (
    ConfigError,
    ModelFailureError,
    ReplayMissError,
    ResumeError,
    StorageError,
)
from simworld.llm.cache import ResponseCache, check_cache_file
from simworld.llm.credentials import missing_key, run_redactor
from simworld.llm.gateway import Accounting, Gateway
from simworld.llm.litellm_backend import LiteLLMModel, dropped_params
from simworld.llm.providers.local import build_of
from simworld.llm.providers.local_child import ModelCrashedError, ModelLoadError
from simworld.llm.providers.registry import check_scenario_embedding, check_scenario_model
from simworld.runs.estimate import check_feasible
from simworld.runs.lock import claim, claim_new, is_unstarted, locked
from simworld.runs.tables import write_run_tables
from simworld.runs.writer import RunWriter, recorded_keys
from simworld.support.events import EventType
from simworld.support.plugins import plugin_fault
from simworld.support.process import Terminated, note_stopped_run, stops_held
from simworld.support.progress import ProgressBar
from simworld.support.recipients import COMPACT, EXPLICIT, RecipientsFormat
from simworld.support.rundir import CACHE_FILE, MEMORY_DIR, TRACKERS_DIR, RunStatus, read_manifest
from simworld.trackers.signal import signal_summary

DEFAULT_OUT_ROOT = Path("outputs")
VERSIONED_PACKAGES = (
    "simworld",
    "mesa",
    "litellm",
    "pydantic",
    "networkx",
    "numpy",
    "pandas",
    "pyarrow",
)


@dataclass
class RunResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    status: str
    agents: int
    steps: int
    accounting: Accounting
    wall_time_s: float
    error: str | None = None
    warnings: tuple[str, ...] = ()
    """Plain-words warnings: about the network (agents without neighbours) and of the signal
    checks (docs/metrics.md §8), one per topic."""
    last_step: int | None = None
    """The last step whose outputs were written (``None``: not even the initial probe)."""

    def summary(self) -> str:
        """A short human-readable closing summary."""
        acc = self.accounting
        lines = [
            f"run        {self.run_dir}",
            f"status     {self.status}" + (f" ({self.error})" if self.error else ""),
            f"agents     {self.agents}",
            f"steps      {self.steps}",
            f"LLM calls  {acc.calls} ({acc.model_calls} sent to the model, "
            f"{acc.cache_hits} cache hits, {acc.failures} failed)",
            f"tokens     {acc.prompt_tokens + acc.completion_tokens} "
            f"({acc.prompt_tokens} in, {acc.completion_tokens} out)",
            *prefix_lines(acc),
            f"cost       ${acc.cost_usd:.4f} recorded, ${acc.spent_usd:.4f} spent now"
            + (f", {acc.unpriced_calls} calls unpriced" if acc.unpriced_calls else ""),
            f"time       {self.wall_time_s:.1f} s",
        ]
        lines += [f"WARNING    {w}" for w in self.warnings]
        return "\n".join(lines)


def prefix_lines(acc: Accounting) -> list[str]:
    """The summary lines on prompt-prefix reuse: the per-agent and the shared-cache estimate,
    and the prompt tokens the model reported taking from its own prefix cache."""
    return [
        f"prefix     {_share_text(acc.prefix_share)} of prompt tokens repeat the agent's "
        f"previous prompt (estimate {acc.prefix_tokens_est} of {acc.prompt_tokens_est})",
        f"cacheable  {_share_text(acc.cacheable_share)} of prompt tokens in blocks an earlier "
        f"prompt of the run began with (shared provider cache; estimate "
        f"{acc.cacheable_tokens_est} of {acc.prompt_tokens_est})"
        + (
            f"; {acc.cached_prompt_tokens} prompt tokens taken from the model's prefix cache"
            if acc.cached_prompt_tokens
            else ""
        ),
    ]


def _share_text(share: float | None) -> str:
    """A share as a percentage, ``n/a`` when undefined."""
    return "n/a" if share is None else f"{100 * share:.1f} %"


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a run's behaviour."""
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def model_builds(earlier: object, models: Iterable[str]) -> list[dict[str, Any]]:
    """The llama.cpp builds and CPUs that answered a run's ``local/`` calls, each once.

    The embedded model's answers depend on them (see
    :func:`~simworld.llm.providers.local_engine.build_record`), so the manifest lists them
    (``model_builds``): ``earlier``, the list a resumed run's manifest holds, then the builds
    that answered ``models`` in this process.
    """
    builds = [b for b in earlier if isinstance(b, dict)] if isinstance(earlier, list) else []
    for model in sorted(set(models)):
        build = build_of(model)
        if build is not None and (record := {"model": model, **build}) not in builds:
            builds.append(record)
    return builds


def free_path(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3`` … whichever does not exist yet (not created)."""
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def recorded_cache(run_dir: Path, manifest: dict[str, Any], cache_path: str | Path | None) -> Path:
    """The cache a run recorded into (or ``cache_path`` when given).

    Raises:
        ResumeError: The run recorded no cache (``llm.cache`` was ``off``).
    """
    if cache_path is not None:
        return Path(cache_path)
    recorded = (manifest.get("cache") or {}).get("path")
    if not recorded:
        raise ResumeError(f"{run_dir}: the run recorded no cache (llm.cache was 'off')")
    path = Path(recorded)
    if path.is_absolute() or path.exists():
        return path
    # a run recorded before cache paths were absolute: relative to where it was started,
    # which by default is the folder above the run directory or above its scenario folder
    for root in (run_dir.parent, run_dir.parent.parent):
        if (root / path.name).is_file():
            return root / path.name
    return path


def check_recorded_cache(
    run_dir: Path, cache_path: Path, *, before_step: int | None = None
) -> None:
    """Check, before anything is written, that a cache holds every model call that a run's
    transcript records (of the steps before ``before_step``), so a resume or replay cannot
    stop late on a missing answer.

    Raises:
        ConfigError: The transcript or the cache is damaged, or the cache lacks calls.
    """
    check_cache_file(cache_path, deep=True)
    transcript = run_dir / RunWriter.TRANSCRIPT
    keys = recorded_keys(transcript, before_step=before_step)
    if not keys:
        return
    if not cache_path.exists():
        raise ConfigError(
            cache_path, "", "the cache the run recorded into does not exist (name it: --cache FILE)"
        )
    cache = ResponseCache(cache_path)
    try:
        missing = cache.missing(keys)
    finally:
        cache.close()
    if missing:
        raise ConfigError(
            cache_path,
            "",
            f"lacks {len(missing)} of the {len(set(keys))} model calls recorded in "
            f"{transcript} (first key {missing[0][:12]}): not this run's cache, or damaged",
        )


def manifest_scenario(run_dir: str | Path, manifest: dict[str, Any]) -> Scenario:
    """The resolved scenario recorded in a run's manifest (see
    :func:`~simworld.config.scenario.recorded_scenario`).

    Raises:
        ConfigError: The manifest holds no valid scenario.
    """
    return recorded_scenario(manifest.get("scenario"), Path(run_dir) / RunWriter.MANIFEST)


def recorded_recipients(run_dir: str | Path, manifest: dict[str, Any]) -> RecipientsFormat:
    """How a run's transcript writes messages' ``to`` (its manifest's ``recipients``; a run
    directory written before that field existed lists every recipient: ``explicit``).

    Raises:
        ConfigError: The field holds neither form's name.
    """
    value = manifest.get("recipients", EXPLICIT)
    if value not in (COMPACT, EXPLICIT):
        where = Path(run_dir) / RunWriter.MANIFEST
        raise ConfigError(where, "recipients", f"damaged: {value!r} is not compact or explicit")
    return COMPACT if value == COMPACT else EXPLICIT


def default_cache_path(out_dir: str | Path | None, out_root: str | Path) -> Path:
    """``llm_cache.sqlite`` in the out root (or beside the scenario folder of ``out_dir``)."""
    root = Path(out_dir).parent if out_dir is not None else Path(out_root)
    return root / CACHE_FILE


@dataclass
class Branch:
    """A counterfactual: from ``step`` on, the run continues under ``scenario``."""

    step: int
    scenario: Scenario


def execute(
    scenario: Scenario,
    *,
    source: str | Path,
    run_dir: Path,
    cache_path: Path,
    progress: bool = False,
    resume: bool = False,
    branch: Branch | None = None,
    manifest_extra: dict[str, Any] | None = None,
    before_step: Callable[[SocialSimulation], None] | None = None,
    recipients: RecipientsFormat = COMPACT,
) -> RunResult:
    """Build the model, run it to the end and record everything in ``run_dir``.

    Args:
        scenario: The validated scenario (the branch's parent scenario when branching).
        source: Scenario file named in errors.
        run_dir: The run directory (must not exist unless ``resume``).
        cache_path: The record/replay cache.
        progress: Show a progress bar.
        resume: Re-execute an existing partial run in place, checking it reproduces the
            transcript already written, then continue it.
        branch: Switch to another scenario from a given step (the parent's steps replay).
        manifest_extra: More manifest fields (e.g. the parent of a branch).
        before_step: Test hook called before every step.
        recipients: How the transcript writes messages' ``to`` (a resumed or replayed run
            keeps its recorded form: :func:`recorded_recipients`).

    Returns:
        The run's result.

    Raises:
        ConfigError: The population or network cannot be built; nothing is written.
        ResumeError: Another process is working in ``run_dir``.
    """
    if not resume:
        claim(run_dir)
    try:
        with locked(run_dir):
            if not resume and not is_unstarted(run_dir):
                raise ConfigError(run_dir, "", "run directory already exists")
            return _execute(
                scenario,
                source=source,
                run_dir=run_dir,
                cache_path=cache_path,
                progress=progress,
                resume=resume,
                branch=branch,
                manifest_extra=manifest_extra,
                before_step=before_step,
                recipients=recipients,
            )
    except BaseException as exc:
        unstarted = not resume and is_unstarted(run_dir)
        if unstarted:  # stopped before it began: leave nothing
            shutil.rmtree(run_dir, ignore_errors=True)
        problem = storage_problem(exc)
        if problem is None:
            raise
        then = "" if unstarted else f"; free space, then continue it: simworld resume {run_dir}"
        raise StorageError(f"{run_dir}: cannot write the run's files ({problem}){then}") from exc


STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""Write errors of the storage, not of simworld: the run stops and can be resumed."""


def storage_problem(exc: BaseException) -> str | None:
    """What a run's write failed on, when it is the storage (full, over quota, read-only):
    an ``OSError`` of :data:`STORAGE_ERRNOS`, or SQLite's own words for a full disk."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return exc.strerror or str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("full" in str(exc) or "disk I/O" in str(exc)):
        return f"the cache: {exc}"
    return None


def _execute(
    scenario: Scenario,
    *,
    source: str | Path,
    run_dir: Path,
    cache_path: Path,
    progress: bool,
    resume: bool,
    branch: Branch | None,
    manifest_extra: dict[str, Any] | None,
    before_step: Callable[[SocialSimulation], None] | None,
    recipients: RecipientsFormat,
) -> RunResult:
    """:func:`execute` in a claimed, locked run directory."""
    started = time.perf_counter()
    redactor = run_redactor(scenario, *([] if branch is None else [branch.scenario]))
    first = (
        scenario
        if branch is None
        else scenario.model_copy(
            update={"llm": scenario.llm.model_copy(update={"cache": "replay"})}
        )
    )
    cache = ResponseCache(cache_path) if first.llm.cache != "off" else None
    gateway = Gateway(
        LiteLLMModel(price=first.llm.price), config=first.llm, cache=cache, redactor=redactor
    )
    model = SocialSimulation(first, gateway=gateway, source=source, memory_dir=run_dir / MEMORY_DIR)
    if resume:
        shutil.rmtree(run_dir / MEMORY_DIR, ignore_errors=True)
    writer = RunWriter(run_dir, redactor=redactor, resume=resume, recipients=recipients)
    gateway.keep_failures_through = writer.completed_step
    trackers_dir = run_dir / TRACKERS_DIR

    completed: list[int] = []

    def on_step(record: StepRecord) -> None:
        writer.step(record, model.opinions)
        model.trackers.checkpoint(trackers_dir, redactor=redactor)
        completed.append(record.step)

    model.on_step = on_step
    final = scenario if branch is None else branch.scenario
    manifest: dict[str, Any] = {
        "scenario": final.model_dump(mode="json"),
        "scenario_file": str(source),
        "seed": final.seed,
        "model": final.llm.model,
        "versions": package_versions(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": RunStatus.RUNNING,
        "warnings": model.warnings,
        "cache": {
            "mode": final.llm.cache,
            "path": None if cache is None else str(Path(cache_path).resolve()),
        },
        "dropped_params": {
            m: list(dropped_params(m)) for m in sorted({first.llm.model, final.llm.model})
        },
        "recipients": recipients,
        "model_builds": [],
        **(manifest_extra or {}),
    }
    if resume:
        earlier = read_manifest(run_dir)
        resumed = earlier.get("resumed", 0)
        manifest["resumed"] = (resumed if isinstance(resumed, int) else 0) + 1
        manifest["model_builds"] = model_builds(earlier.get("model_builds"), ())
    status, error = RunStatus.COMPLETED, None
    bar = ProgressBar(
        gateway.progress, name=final.name, steps=final.protocol.steps, disable=not progress
    )
    try:  # from the first manifest on, a stop (Ctrl-C, SIGTERM) is marked in the last one
        writer.manifest(manifest)
        writer.event(model.start_event())
        writer.flush()  # a crash before the first step ends still leaves the run's start
        write_run_tables(run_dir, model, redactor)
        if branch is not None and branch.step == 0:
            model.rebase(branch.scenario)
        model.start()
        while model.running:
            if branch is not None and model.steps + 1 == branch.step:
                model.rebase(branch.scenario)
            if before_step is not None:
                before_step(model)
            model.step()
        if model.stopped_reason:
            status = model.stopped_reason
            writer.event(
                {"type": EventType.RUN_STOPPED.value, "step": model.steps, "reason": status}
            )
            writer.flush()
    except (ReplayMissError, ModelFailureError, ModelLoadError) as exc:
        status, error = RunStatus.FAILED, redactor.text(str(exc))
    except ModelCrashedError as exc:
        if exc.stop_signal is not None:  # with the command: a scheduler's stop, a closed terminal
            stop = Terminated(exc.stop_signal)
            status, error = RunStatus.INTERRUPTED, stop.how
            note_stopped_run(stop, run_dir)
            raise stop from exc
        # the model's process died; what the finished steps wrote stands, resume goes on
        status, error = RunStatus.CRASHED, redactor.text(str(exc))
    except Exception as exc:
        fault = plugin_fault(exc)
        status, error = RunStatus.FAILED, redactor.text(fault or repr(exc))
        if fault is None:
            raise  # simworld's own bug: its traceback is what a report needs
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        status = RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED
        if isinstance(exc, Terminated):
            error = exc.how
        elif interrupted:
            error = "interrupted by the user"
        else:
            error = redactor.text(repr(exc))
        if interrupted:
            note_stopped_run(exc, run_dir)
        raise
    finally:
        with stops_held() as held:  # a stop now is recorded, then raised
            bar.close()
            try:
                model.close()
            except ModelFailureError as exc:  # the memories' last vectors could not be made
                if error is None:
                    status, error = RunStatus.FAILED, redactor.text(str(exc))
            wall = time.perf_counter() - started
            signal = signal_summary(model.trackers.trackers["signal"].rows())
            warnings = tuple(str(t["warning"]) for t in signal.values() if t["warning"])
            late: Exception | None = None  # a tracker that fails to give its frame
            try:
                model.trackers.write(trackers_dir, redactor=redactor)
            except Exception as exc:
                late = exc
                if error is None:
                    status, error = RunStatus.FAILED, redactor.text(plugin_fault(exc) or repr(exc))
            manifest.update(
                signal=signal,
                status=status,
                error=error,
                steps_completed=model.steps,
                last_completed_step=completed[-1] if completed else None,
                agents=len(model.population),
                totals=asdict(gateway.accounting),
                prefix_share=gateway.accounting.prefix_share,
                cacheable_share=gateway.accounting.cacheable_share,
                model_builds=model_builds(  # a run answered from the cache loaded none
                    manifest["model_builds"],
                    {first.llm.model, final.llm.model} if gateway.accounting.model_calls else (),
                ),
                wall_time_s=round(wall, 3),
                finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            writer.close()
            writer.manifest(manifest)  # last: a run is complete only once everything else is
            if cache is not None:
                cache.close()
    if late is not None and plugin_fault(late) is None:
        raise late
    if held:
        raise held[0]  # came as the run ended: the run is recorded as it stands
    return RunResult(
        run_dir,
        status,
        len(model.population),
        model.steps,
        gateway.accounting,
        wall,
        error,
        (*model.warnings, *warnings),
        completed[-1] if completed else None,
    )


def check_models(scenario: Scenario, source: str | Path) -> None:
    """Refuse, before anything is written, a run whose models cannot be reached: a model
    string no provider serves (``llm.model``, a litellm ``memory.embedding`` model) or a key
    one of them needs and the environment lacks (:func:`check_keys`).

    Raises:
        ConfigError: Naming ``source`` and the field at fault.
        simworld.llm.providers.local.LocalModelError: The local model cannot be used.
    """
    check_scenario_model(scenario.llm.model, source)
    check_scenario_embedding(scenario.memory, source)
    check_keys(scenario, source)


def check_keys(scenario: Scenario, source: str | Path) -> None:
    """Refuse a run whose model cannot be reached for want of a key, before anything is
    written (else every call fails at once, after the run directory is): a variable that
    ``llm.api_key_env`` or ``llm.deployments`` names and the environment lacks, or, with
    neither set, the key the model's provider needs (:func:`missing_key`); and the key the
    provider of a litellm embedding model (``memory.embedding``) needs.

    Raises:
        ConfigError: Naming the scenario field and the variable.
    """
    for model in scenario.provider_models()[1:]:  # the embedding model: its provider's key
        need = missing_key(model)
        if need is not None:
            msg = f"environment variable {need} is not set"
            raise ConfigError(source, "memory.embedding.model", msg)
    route = scenario.llm.route()
    if route is None:
        need = missing_key(scenario.llm.model)
        if need is not None:
            raise ConfigError(source, "llm.model", f"environment variable {need} is not set")
        return
    missing = route.missing_keys()
    if missing:
        field = "llm.api_key_env" if missing[0] == route.api_key_env else "llm.deployments"
        raise ConfigError(source, field, f"environment variable {missing[0]} is not set")


def run_scenario(
    scenario: Scenario | str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    out_root: str | Path = DEFAULT_OUT_ROOT,
    cache_path: str | Path | None = None,
    progress: bool = False,
    before_step: Callable[[SocialSimulation], None] | None = None,
    force: bool = False,
) -> RunResult:
    """Validate, run and record one scenario in a new run directory.

    Args:
        scenario: A scenario YAML file, or a :class:`Scenario` (e.g. from
            :func:`~simworld.config.scenario.load_scenario`); its manifest then names
            ``<scenario>`` as the file.
        overrides: Dotted scenario keys to override (``{"llm.model": ...}``).
        out_dir: Exact run directory (must not exist); default ``out_root/<scenario>/<id>``.
        out_root: Root of run directories.
        cache_path: The record/replay SQLite file; default :func:`default_cache_path`.
        progress: Show a progress bar on stderr.
        before_step: Test hook called before every step.
        force: Run even when the run's estimated size does not fit this machine
            (:func:`simworld.runs.estimate.check_feasible`).

    Returns:
        The run's result; its ``status`` is ``completed``, ``budget_exhausted`` or ``failed``.

    Raises:
        ConfigError: Bad input (a key the model needs not set among it, see
            :func:`check_keys`), or a run too large for this machine; nothing has been
            written.
    """
    scenario, source = resolve_scenario(scenario, overrides)
    check_no_credentials(scenario, source, run_redactor(scenario))
    check_models(scenario, source)
    if out_dir is not None and Path(out_dir).exists() and not is_unstarted(Path(out_dir)):
        what = "is a file, not a run directory" if Path(out_dir).is_file() else "already exists"
        raise ConfigError(out_dir, "", f"{what}; choose a new --out")
    if not force:
        target = Path(out_dir) if out_dir is not None else Path(out_root)
        check_feasible(scenario, source=source, out_root=target)
    if out_dir is not None:
        run_dir = Path(out_dir)
    else:
        run_dir = claim_new(Path(out_root), scenario.name, scenario.seed)
    cache = Path(cache_path) if cache_path is not None else default_cache_path(out_dir, out_root)
    try:
        if scenario.llm.cache != "off":
            check_cache_file(cache, writable=scenario.llm.cache == "record")
        if scenario.llm.cache == "replay" and not cache.is_file():
            raise ConfigError(cache, "", "no such cache to replay from (llm.cache: replay)")
        return execute(
            scenario,
            source=source,
            run_dir=run_dir,
            cache_path=cache,
            progress=progress,
            before_step=before_step,
        )
    except ConfigError:
        if out_dir is None and (is_unstarted(run_dir) or not run_dir.exists()):  # bad input
            shutil.rmtree(run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                run_dir.parent.rmdir()  # the scenario folder, unless it holds other runs
        raise


def resume_run(
    run_dir: str | Path, *, cache_path: str | Path | None = None, progress: bool = False
) -> RunResult:
    """Resume an interrupted run in place.

    Every step up to the last one completed is re-executed from the record/replay cache
    (no model calls) and checked against the transcript already written; the run then goes
    on live. The final outputs are byte-identical to an uninterrupted run.

    Args:
        run_dir: The interrupted run's directory.
        cache_path: The cache it recorded into (default: the one named in its manifest).
        progress: Show a progress bar.

    Returns:
        The run's result.

    Raises:
        ResumeError: The run is complete, was run without a cache, does not reproduce, or
            another process is working in it.
    """
    run_dir = Path(run_dir)
    if is_unstarted(run_dir):
        raise ResumeError(
            f"{run_dir}: the run was stopped before it started (no manifest.json); start it "
            f"again with: simworld run SCENARIO --out {run_dir}"
        )
    with locked(run_dir):  # held from reading the status to the end of the run
        return _resume_locked(run_dir, cache_path=cache_path, progress=progress)


def _resume_locked(run_dir: Path, *, cache_path: str | Path | None, progress: bool) -> RunResult:
    manifest = read_manifest(run_dir)
    if manifest.get("status") == RunStatus.COMPLETED:
        raise ResumeError(f"{run_dir}: run is already complete")
    scenario = manifest_scenario(run_dir, manifest)
    if scenario.llm.cache != "record":
        raise ResumeError(
            f"{run_dir}: llm.cache: a run can be resumed only if it recorded its model calls "
            f"(cache mode was {scenario.llm.cache!r})"
        )
    cache = recorded_cache(run_dir, manifest, cache_path)
    recipients = recorded_recipients(run_dir, manifest)
    check_recorded_cache(run_dir, cache)
    info = manifest.get("branch")
    branch = None
    if info is not None:
        where = run_dir / RunWriter.MANIFEST
        try:
            branch = Branch(int(info["from_step"]), scenario)
            parent = info["parent_scenario"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(where, "branch", "damaged: not a branch record") from exc
        scenario = recorded_scenario(parent, where, "branch.parent_scenario")
    return execute(
        scenario,
        source=manifest.get("scenario_file", "<manifest>"),
        run_dir=run_dir,
        cache_path=cache,
        progress=progress,
        resume=True,
        branch=branch,
        manifest_extra=None if info is None else {"branch": info},
        recipients=recipients,
    )
