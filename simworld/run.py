"""Running a scenario end to end into a run directory."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from simworld.cache import ResponseCache
from simworld.errors import ConfigError, ReplayMissError
from simworld.gateway import Accounting, Gateway
from simworld.llm import LiteLLMModel
from simworld.model import SocialSimulation
from simworld.output import RunWriter
from simworld.redact import Redactor
from simworld.scenario import load_scenario

DEFAULT_OUT_ROOT = Path("outputs")
CACHE_FILE = "llm_cache.sqlite"
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
            f"cost       ${acc.cost_usd:.4f} recorded, ${acc.spent_usd:.4f} spent now"
            + (f", {acc.unpriced_calls} calls unpriced" if acc.unpriced_calls else ""),
            f"time       {self.wall_time_s:.1f} s",
        ]
        return "\n".join(lines)


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a run's behaviour."""
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def new_run_dir(root: Path, scenario: str, seed: int) -> Path:
    """A fresh ``root/<scenario>/<timestamp>-s<seed>`` directory path (not created)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = root / scenario / f"{stamp}-s{seed}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run_scenario(
    scenario_path: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    out_root: str | Path = DEFAULT_OUT_ROOT,
    cache_path: str | Path | None = None,
    progress: bool = False,
) -> RunResult:
    """Validate, run and record one scenario.

    Args:
        scenario_path: The scenario YAML file.
        overrides: Dotted scenario keys to override (``{"llm.model": ...}``).
        out_dir: Exact run directory (must not exist); default ``out_root/<scenario>/<id>``.
        out_root: Root of run directories.
        cache_path: The record/replay SQLite file; default ``llm_cache.sqlite`` beside the
            scenario folders of ``out_root`` (or of ``out_dir``'s parent).
        progress: Show a progress bar on stderr.

    Returns:
        The run's result; its ``status`` is ``completed``, ``budget_exhausted`` or ``failed``.

    Raises:
        ConfigError: Bad input; nothing has been written.
    """
    started = time.perf_counter()
    scenario = load_scenario(scenario_path, overrides)
    if out_dir is not None and Path(out_dir).exists():
        raise ConfigError(out_dir, "", "run directory already exists")
    redactor = Redactor()
    if cache_path is None:
        cache_root = Path(out_dir).parent if out_dir is not None else Path(out_root)
        cache_path = cache_root / CACHE_FILE
    cache = ResponseCache(cache_path) if scenario.llm.cache != "off" else None
    gateway = Gateway(
        LiteLLMModel(price=scenario.llm.price), config=scenario.llm, cache=cache, redactor=redactor
    )
    model = SocialSimulation(scenario, gateway=gateway, source=scenario_path)
    run_dir = (
        Path(out_dir)
        if out_dir is not None
        else new_run_dir(Path(out_root), scenario.name, scenario.seed)
    )
    writer = RunWriter(run_dir, redactor=redactor)
    model.on_step = lambda record: writer.step(record, model.opinions)
    manifest: dict[str, Any] = {
        "scenario": scenario.model_dump(mode="json"),
        "scenario_file": str(Path(scenario_path).resolve()),
        "seed": scenario.seed,
        "model": scenario.llm.model,
        "versions": package_versions(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "running",
        "cache": {"mode": scenario.llm.cache, "path": None if cache is None else str(cache_path)},
    }
    writer.manifest(manifest)
    writer.event(model.start_event())
    status, error = "completed", None
    total = scenario.protocol.steps
    bar = tqdm(total=total, desc=scenario.name, unit="step", disable=not progress, leave=False)
    try:
        model.start()
        while model.running:
            model.step()
            acc = gateway.accounting
            bar.set_postfix(
                calls=acc.calls,
                fails=acc.failures,
                tokens=acc.prompt_tokens + acc.completion_tokens,
            )
            bar.update(1)
        if model.stopped_reason:
            status = model.stopped_reason
            writer.event({"type": "run_stopped", "step": model.steps, "reason": status})
    except ReplayMissError as exc:
        status, error = "failed", str(exc)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        status = "interrupted" if interrupted else "failed"
        error = "interrupted by the user" if interrupted else redactor.text(repr(exc))
        raise
    finally:
        bar.close()
        model.close()
        wall = time.perf_counter() - started
        manifest.update(
            status=status,
            error=error,
            steps_completed=model.steps,
            agents=len(model.population),
            totals=asdict(gateway.accounting),
            wall_time_s=round(wall, 3),
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        writer.manifest(manifest)
        writer.close()
        if cache is not None:
            cache.close()
    return RunResult(
        run_dir, status, len(model.population), model.steps, gateway.accounting, wall, error
    )
