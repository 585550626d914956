"""Main-job benchmark: the README's main command on the embedded model, default and serial.

Run: ``.venv/bin/python benchmarks/bench_main_job.py`` (writes
``benchmarks/results/main_job.json`` and ``docs/benchmarks-main-job.md`` from the same numbers;
``--summary-only`` rewrites the page from the saved file).

``scenarios/opinion_exchange.yaml`` as shipped (30 agents, 3 steps) runs once per model
string, each by the CLI in a fresh process (the model is loaded anew), into a fresh run
directory with the cache off, so nothing is reused between them: first the default model
string (``local/gemma3-270m``: the serial engine, ``batch=1``, one per core up to two
answering at once, ``engines=auto``, drawing each answer over a fixed set of options from
the options' scores, up to four sampled calls per engine generating together, ``slots=4``;
``batch=8`` is the experimental batched engine), then one serial engine on every core, one
call at a time (``local/gemma3-270m?engines=1&slots=1``: the default before the engines
were pooled), then the serial path as it was before answers were drawn, one engine sampling
every answer token by token (``local/gemma3-270m?engines=1&answers=sampled&slots=1``);
``--default``,
``--one-engine`` and ``--serial`` name other model strings.
``--rounds N`` alternates the order over N rounds and keeps each side's fastest run. The
result file holds each run's wall time (the manifest's, from the run's start to its end,
and the process's, model load included), CPU time, calls, tokens, calls/s, prompt and
completion tokens/s, the prompt tokens the engine took from its prefix cache
(``totals.cached_prompt_tokens``, reported by the provider; ``null`` when it reports none)
and the host (CPU model, flags, load average before and after).

``--as-filed DIR`` adds a third side: the code as it was when the main job's speed was
first measured against these targets (commit ``1373cef``, which crashes on AMX hosts: there,
load its model with the extra buffer types off, as today's code does, a local change the
result file lists under ``local_changes``). It
evaluated prompts in chunks aligned to multiples of 64 positions, each computing logits, and
reused only whole aligned chunks (from the previous call or a saved preamble state); it
sampled every answer token by token, then evaluated the answer again for its
log-probabilities. It runs from a checkout of that commit with its own venv, on the same
scenario file, in the same rounds. Set it up once (the llama-cpp-python wheel comes from
pip's cache)::

    git worktree add --detach /tmp/asfiled 1373cef
    (cd /tmp/asfiled && python3 -m venv .venv && .venv/bin/pip install -e '.[local]')
    .venv/bin/python benchmarks/bench_main_job.py --rounds 2 --as-filed /tmp/asfiled

``--out benchmarks/results/main_job.NAME.json`` keeps another kind of host's run beside the
main one (``main_job.json``): the page lists it under "Other hosts" and the README names it.
``--quick`` runs one step (``--steps 1``) to check the script; the page then says so.
``--set KEY=VALUE`` is passed to every run (recorded in the result file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import harness  # benchmarks/, on the path when this script runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "main_job.json"
SUMMARY = ROOT / "docs" / "benchmarks-main-job.md"
SCENARIO = ROOT / "scenarios" / "opinion_exchange.yaml"
DEFAULT = "local/gemma3-270m"
ONE_ENGINE = "local/gemma3-270m?engines=1&slots=1"
SERIAL = "local/gemma3-270m?engines=1&answers=sampled&slots=1"
AS_FILED_COMMIT = "1373cef"
"""The commit whose main job the speed targets were set against (``--as-filed``)."""
QUICK_STEPS = 1
TARGET_WALL_S = 240.0
TARGET_SPEEDUP = 3.0
# CPU features worth naming for llama.cpp's kernels (the rest of /proc/cpuinfo's flags are not).
KERNEL_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def host() -> dict[str, Any]:
    """The machine: CPU model, cores, the kernel-relevant CPU flags, memory, versions."""
    model, flags = "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and not model:
                model = value.strip()
            elif name.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor(),
        "cores": os.cpu_count(),
        "flags": [f for f in KERNEL_FLAGS if f in flags],
        "mem_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "llama_cpp_python": _version("llama-cpp-python"),
        "litellm": _version("litellm"),
        "commit": harness.commit(),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


MODEL_FIELDS = ("model", "key", "call")
"""Fields of a run's records that name its model string or derive from it (call ids)."""


def answers_sha256(run_dir: Path) -> str | None:
    """SHA-256 of what a run's model said (transcript records and opinion rows) without the
    fields that name the model string, so two model strings that answer alike hash alike."""
    import pandas as pd

    transcript, opinions = run_dir / "transcript.jsonl", run_dir / "opinions.parquet"
    if not transcript.is_file() or not opinions.is_file():
        return None
    digest = hashlib.sha256()
    for line in transcript.read_text(encoding="utf-8").splitlines():
        record = {k: v for k, v in json.loads(line).items() if k not in MODEL_FIELDS}
        digest.update(json.dumps(record, sort_keys=True).encode())
    frame = pd.read_parquet(opinions)
    frame = frame.drop(columns=[c for c in MODEL_FIELDS if c in frame.columns])
    digest.update(frame.to_json(orient="records").encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Side:
    """What one side of the comparison runs.

    Attributes:
        model: The model string.
        checkout: The source tree whose ``simworld`` runs it (its own ``.venv`` unless it is
            this one).
    """

    model: str
    checkout: Path = ROOT

    @property
    def python(self) -> str:
        """The interpreter that runs this side."""
        return sys.executable if self.checkout == ROOT else str(self.checkout / ".venv/bin/python")


def run_once(
    label: str, side: Side, folder: Path, *, steps: int | None, sets: list[str]
) -> dict[str, Any]:
    """One CLI run of the scenario on ``side`` in a fresh process and run directory."""
    run_dir, model = folder / label, side.model
    command = [
        *(side.python, "-m", "simworld.cli", "run", str(SCENARIO), "--model", model),
        *("--cache-mode", "off", "--quiet", "--out", str(run_dir)),
        *(("--steps", str(steps)) if steps is not None else ()),
        *(arg for item in sets for arg in ("--set", item)),
    ]
    load_before = harness.loadavg()
    log = folder / f"{label}.log"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(command, cwd=side.checkout, stdout=out, stderr=subprocess.STDOUT)
        # wait4: the CPU time of the run's process and of the children it waited for (the
        # embedded model's process among them)
        _, status, usage = os.wait4(process.pid, 0)
    process_s = time.perf_counter() - started
    process.returncode = code = os.waitstatus_to_exitcode(status)
    manifest_path = run_dir / "manifest.json"
    if code != 0 or not manifest_path.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise SystemExit(f"{label} run ({model}) failed, exit {code}: {tail}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    totals = manifest["totals"]
    wall = float(manifest["wall_time_s"])
    cached = int(totals.get("cached_prompt_tokens") or 0)
    return {
        "model": model,
        "commit": harness.commit(side.checkout),
        "local_changes": harness.local_changes(side.checkout),
        "status": manifest["status"],
        "agents": manifest["agents"],
        "steps": manifest["steps_completed"],
        "calls": totals["calls"],
        "model_calls": totals["model_calls"],
        "failures": totals["failures"],
        "prompt_tokens": totals["prompt_tokens"],
        "completion_tokens": totals["completion_tokens"],
        "prompt_tokens_saved": cached or None,
        "prefix_tokens_est": totals.get("prefix_tokens_est"),
        "prompt_tokens_est": totals.get("prompt_tokens_est"),
        "wall_time_s": round(wall, 2),
        "process_time_s": round(process_s, 2),
        "cpu_time_s": round(usage.ru_utime + usage.ru_stime, 2),
        "calls_per_s": round(totals["model_calls"] / wall, 3),
        "prompt_tokens_per_s": round(totals["prompt_tokens"] / wall, 1),
        "completion_tokens_per_s": round(totals["completion_tokens"] / wall, 2),
        "loadavg_before": load_before,
        "loadavg_after": harness.loadavg(),
        "transcript_sha256": _sha256(run_dir / "transcript.jsonl"),
        "opinions_sha256": _sha256(run_dir / "opinions.parquet"),
        "answers_sha256": answers_sha256(run_dir),
    }


def measure(
    sides: dict[str, Side], *, rounds: int, steps: int | None, sets: list[str]
) -> dict[str, Any]:
    """Run every side ``rounds`` times, alternating the order; the fastest run of each."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in sides}
    order = list(sides)
    with tempfile.TemporaryDirectory(prefix="simworld-main-job-") as tmp:
        for i in range(rounds):
            for label in order if i % 2 == 0 else order[::-1]:
                print(f"round {i + 1}/{rounds}: {label} ({sides[label].model})", flush=True)
                run = run_once(label, sides[label], Path(tmp) / f"r{i}", steps=steps, sets=sets)
                runs[label].append(run)
                print(
                    f"  {run['wall_time_s']} s wall, {run['model_calls']} calls, "
                    f"{run['calls_per_s']} calls/s",
                    flush=True,
                )
    best = {label: min(group, key=lambda r: r["wall_time_s"]) for label, group in runs.items()}
    for label, group in runs.items():
        best[label]["wall_times_s"] = [r["wall_time_s"] for r in group]
        best[label]["repeatable"] = len({r["transcript_sha256"] for r in group}) == 1
    return best


def main() -> None:
    """Run the benchmark; write the JSON result and the markdown page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default", default=DEFAULT, help=f"default model (default {DEFAULT})")
    parser.add_argument(
        "--one-engine", default=ONE_ENGINE, help=f"one-engine model (default {ONE_ENGINE})"
    )
    parser.add_argument("--serial", default=SERIAL, help=f"serial model (default {SERIAL})")
    parser.add_argument(
        "--only",
        choices=("default", "one_engine", "serial"),
        help="run one side only (to check the script)",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} step, not 3")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each model (alternating)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every run"
    )
    parser.add_argument(
        "--as-filed",
        type=Path,
        metavar="DIR",
        help=f"also run a checkout of commit {AS_FILED_COMMIT} with its own .venv (see above)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="result file")
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite the page from the saved result"
    )
    args = parser.parse_args()
    if args.summary_only:
        write_summary(harness.read_result(args.out))
        return
    sides = {
        "default": Side(args.default),
        "one_engine": Side(args.one_engine),
        "serial": Side(args.serial),
    }
    if args.only:
        sides = {args.only: sides[args.only]}
    if args.as_filed is not None:
        as_filed = Side(DEFAULT, args.as_filed.resolve())
        checked_out = harness.commit(as_filed.checkout)
        if checked_out != AS_FILED_COMMIT or not Path(as_filed.python).is_file():
            raise SystemExit(
                f"--as-filed {args.as_filed}: not a checkout of {AS_FILED_COMMIT} with a .venv"
            )
        sides["as_filed"] = as_filed
    import yaml

    shipped = yaml.safe_load(SCENARIO.read_text(encoding="utf-8"))
    result: dict[str, Any] = {
        "scenario": str(SCENARIO.relative_to(ROOT)),
        "scenario_steps": shipped["protocol"]["steps"],
        "quick": args.quick,
        "sets": args.set,
        "rounds": args.rounds,
        "host": host(),
        "loadavg_start": harness.loadavg(),
    }
    started = time.perf_counter()
    result["runs"] = measure(
        sides, rounds=args.rounds, steps=QUICK_STEPS if args.quick else None, sets=args.set
    )
    result["benchmark_s"] = round(time.perf_counter() - started, 1)
    result["loadavg_end"] = harness.loadavg()
    runs = result["runs"]
    for label, key in (
        ("serial", "speedup"),
        ("one_engine", "speedup_one_engine"),
        ("as_filed", "speedup_as_filed"),
    ):
        if "default" in runs and label in runs:
            result[key] = round(runs[label]["wall_time_s"] / runs["default"]["wall_time_s"], 2)
    result["targets"] = {"wall_time_s": TARGET_WALL_S, "speedup": TARGET_SPEEDUP}
    harness.write_result(args.out, result)
    if args.out.resolve().parent == RESULTS.parent and RESULTS.is_file():
        write_summary(harness.read_result(RESULTS))  # another host's file is listed on it
    print(json.dumps(result, indent=2))


def write_summary(result: dict[str, Any]) -> None:
    """Write ``docs/benchmarks-main-job.md`` from a result, then ``docs/benchmarks.md`` and
    the README's timings from the result files (``summarize.py``)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import summarize
    import timings

    SUMMARY.write_text(timings.main_job_page(result, timings.other_main_jobs()), encoding="utf-8")
    print(f"wrote {SUMMARY}")
    summarize.main()


if __name__ == "__main__":
    main()
