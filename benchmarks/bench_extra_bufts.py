"""What turning llama.cpp's extra CPU buffer types off costs, on builds where they work.

Run: ``.venv/bin/python benchmarks/bench_extra_bufts.py [--python OTHER_PYTHON CMAKE_ARGS ...]``
(writes ``benchmarks/results/extra_bufts.json`` and ``docs/benchmarks-extra-bufts.md``).
The result file keeps one entry per host (CPU model and flags): a run replaces its own host's
entry and keeps the others', so the page lists every kind of host it was run on.
Each ``--python`` names another interpreter and the ``CMAKE_ARGS`` its llama-cpp-python was
built with (``CMAKE_ARGS=... pip install --no-cache-dir llama-cpp-python==0.3.36`` in a
separate venv; without ``--no-cache-dir`` pip reuses the wheel it built before, whatever the
flags); both are recorded and shown on the page.

The extra buffer types (AMX kernels and repacked weights) crash the first decode of the
Gemma file on CPUs with AMX when llama-cpp-python is built for the host (``GGML_NATIVE``),
so simworld turns them off there (``extra_bufts=auto``). Where they do not crash, e.g. a
build without AMX kernels, this measures what turning them off costs: each interpreter
given (the project's own and any ``--python`` with another llama-cpp-python build) runs
the same prompt with the extra buffer types on and off, each in a fresh worker process
(a crash is recorded as such), alternating on/off so both see the same machine load.
Prefill: tokens per second evaluating one ~500-token prompt in one batch; decode: tokens
per second generating greedily one token at a time. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "extra_bufts.json"
SUMMARY = ROOT / "docs" / "benchmarks-extra-bufts.md"
ROUNDS = 3
DECODE_TOKENS = 64
# One thread: on a shared 2-core host two llama.cpp threads spin waiting for each other.
THREADS = 1
N_CTX = 2048
PARAGRAPH = (
    "You are taking part in a study of how people talk about public questions with the "
    "people they know. Read the statement, think about your own life and experience, and "
    "say in one or two sentences what you think and why, as you would to a neighbour. "
)
PROMPT_REPEATS = 8
OWN_BUILD = "the project's install (pip's default: `GGML_NATIVE`, compiled for the host)"


def worker(model: str, extra_bufts: bool, threads: int) -> dict[str, Any]:
    """Load the model with the extra buffer types on or off; time prefill and decode."""
    import llama_cpp
    import llama_cpp.llama_cpp as native
    import numpy as np

    defaults = native.llama_model_default_params

    def params() -> Any:
        value = defaults()
        value.use_extra_bufts = extra_bufts
        return value

    native.llama_model_default_params = params
    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=N_CTX,
        n_batch=N_CTX,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    tokens = llm.tokenize((PARAGRAPH * PROMPT_REPEATS).encode("utf-8"), add_bos=True)
    started = time.perf_counter()
    llm.eval(tokens)
    prefill_s = time.perf_counter() - started
    n_vocab = llm.n_vocab()
    started = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)
        )
        llm.eval([int(np.argmax(logits))])
    decode_s = time.perf_counter() - started
    return {
        "prompt_tokens": len(tokens),
        "prefill_tok_s": len(tokens) / prefill_s,
        "decode_tok_s": DECODE_TOKENS / decode_s,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "llama_cpp_python": llama_cpp.__version__,
    }


def _run_worker(python: str, model: str, on: bool, threads: int) -> dict[str, Any]:
    cmd = [python, __file__, "--worker", "on" if on else "off", "--model", model]
    cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        code = done.returncode
        what = signal.Signals(-code).name if code < 0 else f"exit code {code}"
        return {"crashed": what}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _flags() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from simworld.llm.providers.local_engine import AMX_FLAGS, cpu_flags

    flags = cpu_flags()
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", *AMX_FLAGS}
    return sorted(flags & wanted)


def measure(
    pythons: list[tuple[str, str]], model: str, rounds: int, threads: int
) -> list[dict[str, Any]]:
    """Every interpreter's on/off runs, alternating; medians and the off/on ratios.

    Args:
        pythons: Each interpreter with how its llama-cpp-python was built.
        model: The GGUF file.
        rounds: On/off pairs per interpreter.
        threads: llama.cpp threads.

    Returns:
        One entry per interpreter: its runs, medians, build features and off/on ratios.
    """
    builds: list[dict[str, Any]] = []
    for python, built_with in pythons:
        runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        for _ in range(rounds):
            for key in ("on", "off"):
                if any("crashed" in r for r in runs[key]):
                    continue  # a setting that crashed once is not run again
                runs[key].append(_run_worker(python, model, key == "on", threads))
        build: dict[str, Any] = {
            "interpreter": len(builds),
            "built_with": built_with,
            "runs": runs,
        }
        for key, items in runs.items():
            good = [r for r in items if "crashed" not in r]
            if not good:
                build[key] = {"crashed": items[-1]["crashed"] if items else "not run"}
                continue
            build[key] = {
                "prefill_tok_s": statistics.median(r["prefill_tok_s"] for r in good),
                "decode_tok_s": statistics.median(r["decode_tok_s"] for r in good),
                "rounds": len(good),
            }
            build["system_info"] = good[0]["system_info"]
            build["llama_cpp_python"] = good[0]["llama_cpp_python"]
        if "crashed" not in build["on"] and "crashed" not in build["off"]:
            build["off_over_on"] = {
                k: build["off"][k] / build["on"][k] for k in ("prefill_tok_s", "decode_tok_s")
            }
        builds.append(build)
    return builds


def _same_host(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("cpu"), a["flags"]) == (b.get("cpu"), b["flags"])


def with_host(previous: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    """The result file's content with ``entry`` (one host's measurement) in place of that
    host's earlier one, other hosts' entries kept in order."""
    hosts = [] if previous is None else previous["hosts"]
    kept = [h for h in hosts if not _same_host(h["host"], entry["host"])]
    return {"hosts": [*kept, entry]}


def features(system_info: str) -> str:
    """The CPU features a llama.cpp build reports as on (``AVX2 AVX512 AMX_INT8 REPACK``)."""
    names = []
    for part in system_info.replace("CPU :", "").split("|"):
        name, _, value = part.partition("=")
        if value.strip() == "1":
            names.append(name.strip())
    return " ".join(names) or "?"


def host_name(host: dict[str, Any]) -> str:
    """``AMD EPYC, 2 cores, flags avx2, avx512f`` for a result entry's host."""
    cpu = host.get("cpu") or "CPU model not recorded"
    return f"{cpu}, {host['cpus']} cores, flags {', '.join(host['flags'])}"


def write_summary(result: dict[str, Any]) -> None:
    """``docs/benchmarks-extra-bufts.md`` from the result file's numbers, host by host."""
    lines = [
        "# Benchmark: llama.cpp's extra CPU buffer types on and off",
        "",
        "Written by `benchmarks/bench_extra_bufts.py` from `benchmarks/results/extra_bufts.json`,"
        " one section per host it was run on.",
    ]
    for entry in result["hosts"]:
        lines += _host_summary(entry)
    SUMMARY.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _host_summary(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## {host_name(result['host'])}",
        "",
        f"Threads: {result['threads']}, {result['rounds']} rounds alternating on/off, "
        "each in a fresh process; medians. Builds ran one after the other on a shared host:"
        " compare on with off within a build, not one build with another.",
        "",
        "| build (llama.cpp CPU features) | extra bufts | prefill tok/s | decode tok/s |",
        "| --- | --- | --- | --- |",
    ]
    for build in result["builds"]:
        info = features(build.get("system_info", ""))
        for key in ("on", "off"):
            cell = build[key]
            if "crashed" in cell:
                lines.append(f"| {info} | {key} | crashed ({cell['crashed']}) | |")
            else:
                lines.append(
                    f"| {info} | {key} | {cell['prefill_tok_s']:.1f} | {cell['decode_tok_s']:.1f} |"
                )
    lines += ["", "How each build was made:", ""]
    for build in result["builds"]:
        made = build.get("built_with", OWN_BUILD)
        made = made if made == OWN_BUILD else f'`CMAKE_ARGS="{made}"`'
        lines.append(f"- {features(build.get('system_info', ''))}: {made}.")
    lines += ["", "### Cost of turning them off", ""]
    for build in result["builds"]:
        info = features(build.get("system_info", ""))
        ratio = build.get("off_over_on")
        if ratio is None:
            lines.append(f"- {info}: no comparison (a setting crashed).")
        else:
            lines.append(
                f"- {info}: off runs prefill at **{ratio['prefill_tok_s']:.2f}x** and decode "
                f"at **{ratio['decode_tok_s']:.2f}x** the speed with them on."
            )
    return lines


def main() -> None:
    """Measure every interpreter, write the result file and the docs page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python",
        nargs=2,
        action="append",
        default=[],
        metavar=("PYTHON", "CMAKE_ARGS"),
        help="another interpreter and the CMAKE_ARGS its llama-cpp-python was built with",
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.worker == "on", args.threads)))
        return
    # Here, not at the top: a worker runs in other builds' venvs, with llama-cpp-python and
    # numpy only.
    import harness  # benchmarks/, on the path when this script runs
    from bench_main_job import host

    sys.path.insert(0, str(ROOT))
    from simworld.llm.providers.local import model_cache_dir, packaged_model_path

    model = str(packaged_model_path(model_cache_dir()))
    pythons = [(sys.executable, OWN_BUILD), *((p, how) for p, how in args.python)]
    entry = {
        "host": {
            "cpu": host()["cpu_model"],
            "cpus": os.cpu_count(),
            "flags": _flags(),
            "os": platform.platform(),
        },
        "threads": args.threads,
        "rounds": args.rounds,
        "builds": measure(pythons, model, args.rounds, args.threads),
    }
    previous = harness.read_result(RESULTS) if RESULTS.is_file() else None
    result = with_host(previous, entry)
    harness.write_result(RESULTS, result)
    write_summary(result)
    # docs/benchmarks-local.md carries a section written from the same result file
    bench_local = Path(__file__).parent / "bench_local.py"
    subprocess.run([sys.executable, str(bench_local), "--summary-only"], check=True)
    print(SUMMARY.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
