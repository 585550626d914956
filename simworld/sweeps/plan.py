"""Sweep plans: parsing grids and seeds, expanding and validating runs, dry-run estimates."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simworld.config.scenario import Scenario, check_no_credentials, load_scenario
from simworld.errors import ConfigError
from simworld.support.yamlio import parse_scalar

DEFAULT_OUT_ROOT = Path("outputs")
HASH_CHARS = 8
MIN_INDEX_WIDTH = 4
MAX_LIST_ITEMS = 100_000
# Dry-run estimate: tokens per logical call (the formula is in Estimate's docstring).
EST_PROMPT_BASE_TOKENS = 200
EST_PROMPT_TOKENS_PER_MEMORY = 20
EST_SPEECH_COMPLETION_TOKENS = 80
EST_PROBE_COMPLETION_TOKENS = 10


# -- parsing ---------------------------------------------------------------------------------
def parse_int_list(text: str, *, option: str = "--seeds") -> list[int]:
    """Parse ``0-9``, ``1,3,5`` or a mix (``0-2,7``) into distinct integers, in order.

    Raises:
        ConfigError: Malformed text, a reversed range, or a negative number.
    """
    out: list[int] = []
    seen: set[int] = set()
    for part in (p.strip() for p in str(text).split(",")):
        lo, sep, hi = part.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise ConfigError(
                option, text, f"bad item {part!r}; expected N, A-B or a list"
            ) from None
        if first < 0 or last < first:
            raise ConfigError(option, text, f"bad range {part!r}; expected 0 <= A <= B")
        if len(seen) + last - first >= MAX_LIST_ITEMS:
            raise ConfigError(option, text, f"more than {MAX_LIST_ITEMS} items")
        for i in range(first, last + 1):
            if i not in seen:
                seen.add(i)
                out.append(i)
    return out


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets, braces and quotes (``a,{x: 1, y: 2}`` → 2 items)."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items]


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """Parse ``--grid key=v1,v2`` items; values are YAML (``0.5``, ``true``, ``text``).

    Only ``true`` and ``false`` are booleans: ``off``, ``on``, ``yes`` and ``no`` stay strings
    (``llm.cache=off`` means the cache mode).

    Raises:
        ConfigError: No ``=``, an empty value, a repeated key or value, or ``seed`` (use
            ``--seeds``).
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--grid", item, "expected KEY=V1,V2,...")
        if key in grid:
            raise ConfigError("--grid", item, f"key {key!r} given twice")
        grid[key] = _distinct(item, [_yaml_value(item, v) for v in split_values(raw)])
    return check_grid(grid)


def _yaml_value(item: str, text: str) -> Any:
    if not text:
        raise ConfigError("--grid", item, "empty value")
    return parse_scalar(text, source="--grid", field=item)


def _distinct(where: str, values: list[Any]) -> list[Any]:
    seen: list[str] = []
    for value in values:
        text = json.dumps(value, sort_keys=True)
        if text in seen:
            raise ConfigError("--grid", where, f"value {value!r} given twice")
        seen.append(text)
    return values


RETRY_LIMITS = ("llm.max_retries", "llm.max_invalid_retries")
"""Settings a call's cache key leaves out but its recorded outcome depends on: runs with
different values must not share a cache."""


def check_grid(grid: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Check a grid given from Python (or parsed): keys, non-empty lists of values.

    Raises:
        ConfigError: A key is ``seed`` or empty, or has no values, or the grid varies a
            retry limit (:data:`RETRY_LIMITS`).
    """
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if key == "seed":
            raise ConfigError("--grid", key, "give seeds with --seeds, not in the grid")
        if not key or not isinstance(values, list | tuple) or not values:
            raise ConfigError("--grid", str(key), "expected a key and at least one value")
        if key in RETRY_LIMITS and len(values) > 1:
            raise ConfigError(
                "--grid",
                key,
                "the runs of a sweep share one cache, whose records do not say how many "
                "retries they were allowed (a run could reuse an answer that took more); "
                "sweep each value in a sweep of its own",
            )
        out[key] = _distinct(key, list(values))
    return out


# -- planning --------------------------------------------------------------------------------
def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The grid's points in sweep order: the first key varies slowest, the last fastest."""
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def run_names(grid: Mapping[str, Sequence[Any]], seeds: Sequence[int]) -> list[str]:
    """Run directory names in index order, ``<index>-<hash of params and seed>``.

    The index follows the order of the grid's keys, so the same grid with its keys in another
    order names its runs differently (the hashes are the same, their indices are not).
    """
    pairs = [(params, seed) for params in grid_points(grid) for seed in seeds]
    width = max(MIN_INDEX_WIDTH, len(str(len(pairs) - 1)))
    return [
        f"{index:0{width}d}-{_digest({'params': params, 'seed': seed})[:HASH_CHARS]}"
        for index, (params, seed) in enumerate(pairs)
    ]


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: a grid point and a seed.

    Attributes:
        index: Position in the sweep (grid points in order, seeds innermost).
        name: Run directory name, ``<index>-<hash of params and seed>``.
        params: The grid point (dotted key → value).
        seed: The run's seed.
        scenario: The validated scenario of this run.
    """

    index: int
    name: str
    params: dict[str, Any]
    seed: int
    scenario: Scenario

    @property
    def overrides(self) -> dict[str, Any]:
        """Dotted overrides that turn the base scenario into this run's."""
        return {**self.params, "seed": self.seed}


@dataclass
class SweepPlan:
    """A validated sweep: scenario, grid, seeds and the runs they make."""

    scenario_path: Path
    scenario_name: str
    grid: dict[str, list[Any]]
    seeds: list[int]
    runs: list[PlannedRun]
    scenario_sha256: str

    def spec(self) -> dict[str, Any]:
        """What identifies the sweep (a changed spec is a different sweep)."""
        return {
            "scenario_file": str(self.scenario_path),
            "scenario_sha256": self.scenario_sha256,
            "scenario_name": self.scenario_name,
            "grid": self.grid,
            "seeds": self.seeds,
        }

    def default_dir(self, out_root: str | Path = DEFAULT_OUT_ROOT) -> Path:
        """``<out_root>/<scenario>/sweep-<hash of spec>``: the same command, the same folder."""
        return Path(out_root) / self.scenario_name / f"sweep-{_digest(self.spec())[:HASH_CHARS]}"


def plan_sweep(
    scenario_path: str | Path,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    seeds: Sequence[int] | str | None = None,
) -> SweepPlan:
    """Expand and validate a sweep: every run's scenario is loaded before anything runs.

    Args:
        scenario_path: The base scenario YAML file.
        grid: Dotted scenario keys and the values to try (the cartesian product is swept).
        seeds: Seeds to run every grid point with (a list or ``"0-9"`` text); default: the
            scenario's own seed.

    Returns:
        The plan.

    Raises:
        ConfigError: A bad grid or seeds, or a run's scenario does not validate (its model
            string and the plug-ins it names included) or holds a credential.
        simworld.llm.providers.local.LocalModelError: A run's local model cannot be used.
    """
    path = Path(scenario_path).resolve()
    base = load_scenario(path)
    checked = check_grid(grid or {})
    if seeds is None:
        seed_list = [base.seed]
    elif isinstance(seeds, str):
        seed_list = parse_int_list(seeds)
    else:
        seed_list = parse_int_list(",".join(str(int(s)) for s in seeds))
    names = iter(run_names(checked, seed_list))
    runs: list[PlannedRun] = []
    for params in grid_points(checked):
        for seed in seed_list:
            scenario = load_scenario(path, {**params, "seed": seed})
            runs.append(PlannedRun(len(runs), next(names), params, seed, scenario))
    from simworld.llm.credentials import run_redactor  # imports litellm
    from simworld.llm.providers.registry import check_scenario_embedding, check_scenario_model

    for run in runs:  # a key given in the grid would be written into sweep.json and labels
        check_no_credentials(run.scenario, path, run_redactor(run.scenario))

    for model in dict.fromkeys(run.scenario.llm.model for run in runs):
        check_scenario_model(model, path)
    for run in runs:
        check_scenario_embedding(run.scenario.memory, path)
    from simworld.engine.model import resolve_plugins  # imports the engine

    for run in runs:
        resolve_plugins(run.scenario, path)  # what building its model resolves, checked now
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return SweepPlan(path, base.name, checked, seed_list, runs, sha)


# -- estimate --------------------------------------------------------------------------------
@dataclass
class Estimate:
    """Expected model calls and tokens before anything is spent (a rough guide).

    Per run, with N agents, T topics, S steps, P probe steps and memory window W:
    speech calls = S × N (broadcast), S × 2⌊N/2⌋ (pairs, at most), S × rounds × N (group);
    probe calls = P × N × T (with ``probe_topics: discussed`` at most 2 topics per probe; P × N
    with ``probe_batch``);
    stance calls = speech calls (when ``trackers.stance`` is ``true``; none when ``inline``, the
    speech call reports it), and as many judge calls
    (``trackers.judge``); BFI calls = N per administration; importance ratings = S × N (memory
    stream with ``importance.mode: llm``); all counted like probes.
    Prompt tokens per call ≈ 200 + 20 × W; completion tokens ≈ 80 per speech turn and 10 per
    probe. Retries, reflections (they depend on what agents remember), the extra rating call
    of an agent that stores more than ``importance.RATING_BATCH`` memories in a step, calls saved by
    baseline agents and cache hits are not counted; cost uses ``llm.price`` or litellm's price list
    (``None`` when unknown).
    """

    runs: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0

    def summary(self) -> str:
        """One line for the dry run."""
        digits = 2 if self.cost_usd is not None and self.cost_usd >= 1 else 4
        cost = "unknown" if self.cost_usd is None else f"~${self.cost_usd:.{digits}f}"
        return (
            f"{self.runs} runs, ~{self.calls} model calls, "
            f"~{self.prompt_tokens + self.completion_tokens} tokens "
            f"({self.prompt_tokens} in, {self.completion_tokens} out), cost {cost}"
        )


def estimate_run(scenario: Scenario) -> Estimate:
    """The dry-run estimate of one run (see :class:`Estimate` for the formula)."""
    n, proto = scenario.population.size, scenario.protocol
    turns = {"broadcast": n, "pairs": 2 * (n // 2), "group": proto.rounds * n, "asch": 0}
    speech = proto.steps * turns.get(proto.mode, n)  # a user protocol: taken as one turn each
    per_probe = [
        len(proto.probe_topic_indices(s, len(scenario.topics))) for s in proto.probe_steps()
    ]
    if proto.probe_batch:  # all of an agent's topics in one call
        per_probe = [min(k, 1) for k in per_probe]
    probes = n * sum(per_probe)
    if proto.mode == "asch":  # a structured answer per agent and topic at every step
        probes += proto.steps * n * len(scenario.topics)
    trackers, memory = scenario.trackers, scenario.memory
    # each message's stated position is extracted by one short structured call; the judge
    # (when on) reads every message once more
    probes += speech * (int(trackers.stance is True) + int(trackers.judge))
    if trackers.bfi is not None:  # one structured inventory per agent and administration
        probes += n * sum(1 for s in set(trackers.bfi.steps) if s <= proto.steps)
    if memory.store == "chroma" and memory.importance.mode == "llm":
        probes += n * proto.steps  # a rating call per agent and step
    prompt = (speech + probes) * (
        EST_PROMPT_BASE_TOKENS + EST_PROMPT_TOKENS_PER_MEMORY * proto.memory_window
    )
    completion = speech * min(scenario.llm.max_tokens, EST_SPEECH_COMPLETION_TOKENS) + probes * min(
        scenario.llm.max_tokens, EST_PROBE_COMPLETION_TOKENS
    )
    return Estimate(1, speech + probes, prompt, completion, _cost(scenario, prompt, completion))


def _cost(scenario: Scenario, prompt: int, completion: int) -> float | None:
    # imports litellm: only when an estimate is asked for
    from simworld.llm.litellm_backend import call_cost

    return call_cost(
        scenario.llm.model, scenario.llm.price, prompt_tokens=prompt, completion_tokens=completion
    )


def estimate_sweep(runs: Sequence[PlannedRun]) -> Estimate:
    """The dry-run estimate summed over ``runs``."""
    total = Estimate()
    for run in runs:
        one = estimate_run(run.scenario)
        total.runs += 1
        total.calls += one.calls
        total.prompt_tokens += one.prompt_tokens
        total.completion_tokens += one.completion_tokens
        if total.cost_usd is not None:
            total.cost_usd = None if one.cost_usd is None else total.cost_usd + one.cost_usd
    return total
