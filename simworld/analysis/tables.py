"""Analysis over one or many run directories: trajectories, inconstancy, conformity, population."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from scipy import stats

from simworld.errors import ConfigError
from simworld.measures import asch_table, belief_curve, diversity_table, score_change
from simworld.runs.tables import read_table
from simworld.support.events import Event
from simworld.support.rundir import TRANSCRIPT
from simworld.trackers.tracker_set import (
    BUILTIN_TRACKERS,
    TRACKERS_DIR,
    derive,
    nullable_types,
    read_manifest,
    tracker_scenario,
)

DEFAULT_CI = 0.95
DEFAULT_BOOTSTRAP = 2000
DEFAULT_BOOTSTRAP_SEED = 0
CIMethod = Literal["t", "bootstrap"]
RunDirs = str | Path | Iterable[str | Path]
RATE_MEASURES = (
    "local_conformity",
    "opinion_change",
    "private_conformity",
    "public_conformity",
    "confabulation",
    "public_private_mismatch",
    "impersonation",
    "judge_impersonation",
)
"""The per-run rates :func:`run_rates` reports (docs/metrics.md §1 and §3)."""
BUILTIN_COLUMNS: dict[str, set[str]] = {cls.name: set(cls.schema.names) for cls in BUILTIN_TRACKERS}
"""Built-in frame name → its columns (a file lacking one is older: the frame is re-derived)."""


@dataclass(frozen=True)
class Run:
    """One run directory, its manifest and its tracker frames (read lazily)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str works too

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The run's ``manifest.json``."""
        return read_manifest(self.path)

    @property
    def id(self) -> str:
        """The run's name (its directory name)."""
        return self.path.resolve().name  # `simworld report .` names the folder too

    @property
    def seed(self) -> int:
        """The run's seed."""
        seed = self.manifest.get("seed")
        return int(seed if seed is not None else self.setting("seed") or 0)

    def setting(self, key: str) -> Any:
        """A scenario setting by dotted key (``protocol.instruction``); None when absent."""
        node: Any = self.manifest.get("scenario")
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node if not isinstance(node, list | dict) else str(node)

    def frame(self, name: str) -> pd.DataFrame:
        """A tracker frame: ``trackers/<name>.parquet``, re-derived from the transcript
        (no model call) when the run has no such file (e.g. a run older than trackers) or
        the file lacks a column the built-in tracker now has (a run older than the column).

        Reading a run never runs code it names: a frame of the run's own trackers
        (``trackers.extra``) is read from its file only (``simworld analyze`` writes it).

        Raises:
            ConfigError: A frame of the run's own trackers has no file.
            KeyError: No tracker of the run gives a frame of that name (the message lists
                those that do).
        """
        path = self.path / TRACKERS_DIR / f"{name}.parquet"
        if path.is_file():
            table = read_table(path)
            wanted = BUILTIN_COLUMNS.get(name, set())
            if wanted <= set(table.column_names):
                return table.to_pandas(types_mapper=nullable_types)
        if name in BUILTIN_COLUMNS:
            return self._derived.frame(name)
        if self.own_frames_unwritten:
            raise ConfigError(
                path,
                "",
                f"not written; simworld analyze {self.path} writes the frames of the run's own "
                "trackers (it runs the code the run's trackers.extra names)",
            )
        known = [*BUILTIN_COLUMNS, *self.own_frame_names()]
        raise KeyError(f"no frame {name!r}; the frames: {', '.join(known)}")

    @property
    def own_frames_unwritten(self) -> bool:
        """Whether the run names trackers of its own (``trackers.extra``) but wrote no
        ``trackers/`` folder (it stopped before its first frames): only ``simworld
        analyze``, which runs their code, can give their frames."""
        own = ((self.manifest.get("scenario") or {}).get("trackers") or {}).get("extra")
        return bool(own) and not (self.path / TRACKERS_DIR).is_dir()

    def own_frame_names(self) -> list[str]:
        """The frames of the run's own trackers (``trackers.extra``) written in its
        ``trackers/`` folder, by name (read without running their code)."""
        written = self.path / TRACKERS_DIR
        return sorted(p.stem for p in written.glob("*.parquet") if p.stem not in BUILTIN_COLUMNS)

    @cached_property
    def _derived(self) -> Any:
        return derive(self.path, own_trackers=False)

    def start_event(self) -> Event:
        """The ``run_start`` event (agents, assigned opinions, edges)."""
        with open(self.path / TRANSCRIPT, encoding="utf-8") as fh:
            return dict(json.loads(fh.readline()))

    @property
    def topics(self) -> dict[str, Any]:
        """Topic id → the topic as in the scenario."""
        return {t.id: t for t in tracker_scenario(self.manifest, self.path).topics}


def runs(run_dirs: RunDirs) -> list[Run]:
    """One or many run directories as :class:`Run` objects, in the order given."""
    if isinstance(run_dirs, str | Path):
        run_dirs = [run_dirs]
    return [Run(Path(p)) for p in run_dirs]


def _per_run(
    run_dirs: RunDirs,
    name: str,
    by: Sequence[str],
    measure: Callable[[pd.DataFrame], pd.DataFrame],
) -> pd.DataFrame:
    """``measure(frame)`` of each run's tracker frame ``name``, stacked with run columns."""
    parts = []
    for run in runs(run_dirs):
        df = measure(run.frame(name))
        df.insert(0, "seed", run.seed)
        df.insert(0, "run", run.id)
        for key in by:
            df[key] = run.setting(key)
        parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def frames(run_dirs: RunDirs, name: str, *, by: Sequence[str] = ()) -> pd.DataFrame:
    """One tracker frame of every run, stacked, with ``run``, ``seed`` and ``by`` columns.

    Args:
        run_dirs: Run directories.
        name: Frame name (``drift``, ``population``, ``conformity``, ``inconstancy``,
            ``statements``, ``personality``, ``memory``, ``belief``, ``asch``,
            ``interventions``, ``signal`` or an extra tracker's).
        by: Dotted scenario keys added as condition columns (e.g. ``protocol.instruction``).
    """
    return _per_run(run_dirs, name, by, pd.DataFrame.copy)


def trajectories(
    run_dirs: RunDirs, *, topic: str | None = None, wide: bool = False
) -> pd.DataFrame:
    """Agent × step opinion trajectories from the private probes (docs/metrics.md §2).

    Args:
        run_dirs: Run directories.
        topic: Keep one topic.
        wide: Pivot to one row per (run, topic, agent) and one column per step, holding the
            numeric value (Likert) or the answer letter (choices); missing probes stay NA.

    Returns:
        Long: ``run, seed, topic, agent, step, answer, value, missing``; or the wide pivot.
    """
    df = frames(run_dirs, "drift")
    if df.empty:
        return df
    if topic is not None:
        df = df[df["topic"] == topic]
    long = df[["run", "seed", "topic", "agent", "step", "answer", "value", "missing"]]
    long = long.sort_values(["run", "topic", "agent", "step"]).reset_index(drop=True)
    if not wide:
        return long
    cell = long["value"].astype(object).where(long["value"].notna(), long["answer"])
    return (
        long.assign(cell=cell)
        .pivot(index=["run", "topic", "agent"], columns="step", values="cell")
        .sort_index()
    )


def inconstancy_by_diversity(
    run_dirs: RunDirs, *, by: Literal["position", "own_share"] = "position"
) -> pd.DataFrame:
    """The per-S table of docs/metrics.md §1 over the discussions of all runs.

    For each group diversity S (entropy of the onboarding answers) and focal position: the
    number of agents, % who kept their answer (R=O), and among those who changed, % who
    moved to the group's answer G vs elsewhere — :func:`simworld.measures.diversity_table`.
    ``by="own_share"`` groups by the share of the group that held the agent's own
    onboarding answer instead of seat order (the grouping of the paper's released code;
    runs recorded before that column existed are re-derived with it).
    """
    df = frames(run_dirs, "inconstancy")
    if df.empty:
        empty = pd.DataFrame(columns=["changed", "diversity", "position", "own_share"])
        return diversity_table(empty, by=by)
    return diversity_table(df, by=by)


def _rate(flags: pd.Series) -> tuple[float, int]:
    decided = flags.dropna()
    n = len(decided)
    return (float(decided.astype(bool).mean()) if n else math.nan), n


def run_rates(run: Run) -> dict[str, float]:
    """The rates of one run, each over the cases it can be decided for.

    ``local_conformity`` (conformity frame, §3), ``opinion_change``, ``private_conformity``,
    ``public_conformity``, ``confabulation`` (inconstancy frame: per agent per discussion,
    §1), ``public_private_mismatch`` (statements whose stance differs from the private
    answer before), ``impersonation`` (pattern measure, per message) and
    ``judge_impersonation`` (LLM judge, when it ran). Undecidable cases (missing answers,
    undefined G) are left out; a rate with no case is NaN. ``n_<measure>`` gives the count.
    """
    out: dict[str, float] = {}
    sources = {
        "local_conformity": ("conformity", "conformed"),
        "opinion_change": ("inconstancy", "changed"),
        "private_conformity": ("inconstancy", "private_conformity"),
        "public_conformity": ("inconstancy", "public_conformity"),
        "confabulation": ("inconstancy", "confabulation"),
        "public_private_mismatch": ("statements", "public_private_mismatch"),
        "impersonation": ("statements", "impersonation"),
        "judge_impersonation": ("statements", "judge"),
    }
    cache: dict[str, pd.DataFrame] = {}
    for measure, (name, column) in sources.items():
        if name not in cache:
            cache[name] = run.frame(name)
        value, n = _rate(cache[name][column]) if column in cache[name] else (math.nan, 0)
        out[measure] = value
        out[f"n_{measure}"] = n
    return out


def confidence_interval(
    values: Sequence[float],
    *,
    level: float = DEFAULT_CI,
    method: CIMethod = "t",
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """A confidence interval for the mean of per-seed values.

    ``t``: ``mean ± t_{(1+level)/2, n-1} · sd / √n`` (sd with ddof=1), the Student
    t-interval, which treats seeds as independent replications. ``bootstrap``: the
    percentile interval of ``n_boot`` resampled means, drawn with
    ``numpy.random.default_rng(seed)`` so it is reproducible. NaN values (a seed where the
    rate was undefined) are dropped; with fewer than two values both bounds are NaN.
    """
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size < 2:
        return math.nan, math.nan
    if method == "t":
        half = float(stats.t.ppf((1 + level) / 2, arr.size - 1)) * arr.std(ddof=1)
        half /= math.sqrt(arr.size)
        return float(arr.mean() - half), float(arr.mean() + half)
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = rng.choice(arr, size=(n_boot, arr.size), replace=True).mean(axis=1)
        lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)
    raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")


def _summarise(
    table: pd.DataFrame,
    by: Sequence[str],
    measures: Sequence[str],
    *,
    level: float,
    method: CIMethod,
) -> pd.DataFrame:
    cols = [*by, "measure", "n_runs", "mean", "sd", "ci_low", "ci_high", "level", "method"]
    if table.empty:  # no run: no rows, the same columns
        return pd.DataFrame(columns=cols)
    rows = []
    groups = table.groupby(list(by), sort=True, dropna=False) if by else [((), table)]
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        for measure in measures:
            vals = [float(v) for v in sub[measure] if not pd.isna(v)]
            lo, hi = confidence_interval(vals, level=level, method=method)
            rows.append(
                dict(zip(by, key, strict=True))
                | {
                    "measure": measure,
                    "n_runs": len(vals),
                    "mean": float(np.mean(vals)) if vals else math.nan,
                    "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
                    "ci_low": lo,
                    "ci_high": hi,
                    "level": level,
                    "method": method,
                }
            )
    return pd.DataFrame(rows, columns=cols)


def conformity_rates(
    run_dirs: RunDirs,
    *,
    by: Sequence[str] = (),
    measures: Sequence[str] = RATE_MEASURES,
    level: float = DEFAULT_CI,
    method: CIMethod = "t",
) -> pd.DataFrame:
    """Conformity and inconstancy rates by condition, with confidence intervals over seeds.

    Each run gives one value per measure (:func:`run_rates`); runs are grouped by the
    ``by`` settings (dotted scenario keys, e.g. ``protocol.instruction``), and each group's
    mean gets a :func:`confidence_interval` over its runs (seeds are the replications).

    Returns:
        ``<by…>, measure, n_runs, mean, sd, ci_low, ci_high, level, method``.
    """
    rows = []
    for run in runs(run_dirs):
        rows.append({"run": run.id, "seed": run.seed} | {k: run.setting(k) for k in by})
        rows[-1].update(run_rates(run))
    return _summarise(pd.DataFrame(rows), by, measures, level=level, method=method)


def population_over_time(
    run_dirs: RunDirs,
    *,
    by: Sequence[str] = (),
    summary: bool = False,
    level: float = DEFAULT_CI,
    method: CIMethod = "t",
) -> pd.DataFrame:
    """Population measures per topic and step (docs/metrics.md §5), per run or summarised.

    Args:
        run_dirs: Run directories.
        by: Dotted scenario keys added as condition columns.
        summary: Summarise across runs: one row per (condition, topic, step, measure) with
            the mean and a confidence interval over seeds.
        level: Confidence level of the summary.
        method: ``t`` or ``bootstrap`` (see :func:`confidence_interval`).
    """
    df = frames(run_dirs, "population", by=by)
    if not summary or df.empty:
        return df
    measures = [
        "bias", "diversity", "variance", "bimodality", "polarization", "consensus_share", "entropy",
    ]  # fmt: skip
    parts = []
    for (topic, step), sub in df.groupby(["topic", "step"], sort=True):
        part = _summarise(sub, by, measures, level=level, method=method)
        part.insert(0, "step", cast("int", step))
        part.insert(0, "topic", cast("str", topic))
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def belief_curves(run_dirs: RunDirs, *, by: Sequence[str] = ()) -> pd.DataFrame:
    """Belief-state counts and shares (S, B, R) per step of each run (``trackers.belief``).

    See :func:`simworld.measures.belief_curve`; ``by`` adds condition columns (dotted
    scenario keys, e.g. ``name`` to tell the misinformation conditions apart).
    """
    return _per_run(run_dirs, "belief", by, belief_curve)


def asch_levels(
    run_dirs: RunDirs, *, by: Sequence[str] = (), drop_agreeing: bool = False
) -> pd.DataFrame:
    """Asch conformity level CL and resistance level RL per p for each run (docs/metrics.md §3).

    See :func:`simworld.measures.asch_table` (``drop_agreeing`` keeps only trials where the
    peers contradicted the agent's own earlier answer).
    """
    return _per_run(run_dirs, "asch", by, lambda df: asch_table(df, drop_agreeing=drop_agreeing))


def personality_change(
    run_dirs: RunDirs, *, before: int, after: int, effect: Literal["dz", "av"] = "dz"
) -> pd.DataFrame:
    """Change of BFI trait scores between two administrations, with Cohen's d (docs/metrics.md §4).

    Each (run, agent) is one subject measured at probe steps ``before`` and ``after``;
    :func:`simworld.measures.score_change` gives per trait the mean change and d
    (``dz`` paired by default). Subjects without a score at both steps are excluded.
    """
    df = frames(run_dirs, "personality")
    if df.empty:
        return score_change({}, {}, effect=effect)

    def at(step: int) -> dict[tuple[str, str], dict[str, float]]:
        out: dict[tuple[str, str], dict[str, float]] = {}
        for run, agent, trait, score in df.loc[
            df["step"] == step, ["run", "agent", "trait", "score"]
        ].itertuples(index=False):
            out.setdefault((run, agent), {})[trait] = math.nan if pd.isna(score) else float(score)
        return out

    return score_change(at(before), at(after), effect=effect)


__all__ = [
    "RATE_MEASURES",
    "Run",
    "asch_levels",
    "belief_curves",
    "confidence_interval",
    "conformity_rates",
    "frames",
    "inconstancy_by_diversity",
    "personality_change",
    "population_over_time",
    "run_rates",
    "runs",
    "trajectories",
]
