"""The timings the README quotes, and the pages of the main-job and test-suite benchmarks.

Run: ``.venv/bin/python benchmarks/timings.py`` rewrites, from
``benchmarks/results/main_job.json`` (``bench_main_job.py``) and
``benchmarks/results/tests.json`` (``bench_tests.py``), the README's timing sentences (each
between ``<!-- timing:NAME -->`` and ``<!-- /timing -->``) and ``docs/benchmarks-tests.md``.
Both benchmarks call it after writing their result; ``tests/test_readme_timings.py`` checks
that the README says what the result files say.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MAIN_JOB = RESULTS / "main_job.json"
TESTS = RESULTS / "tests.json"
README = ROOT / "README.md"
TESTS_PAGE = ROOT / "docs" / "benchmarks-tests.md"
MARKER = re.compile(r"<!-- timing:(?P<name>[\w-]+) -->(?P<body>.*?)<!-- /timing -->", re.DOTALL)
SLOWEST = 15
COLUMNS = (
    "engine",
    "model",
    "steps",
    "wall (s)",
    "process (s)",
    "CPU (s)",
    "model calls",
    "failures",
    "calls/s",
    "prompt tok/s",
    "completion tok/s",
    "prompt tokens",
    "prompt tokens from the prefix cache",
)
HEADER = "| " + " | ".join(COLUMNS) + " |\n|" + " --- |" * len(COLUMNS)


def about(seconds: float) -> str:
    """``about N min``: to the half minute under 10 minutes (``about 4.5 min``), whole
    minutes from there; ``under a minute`` below 45 s."""
    if seconds < 45:
        return "under a minute"
    minutes = seconds / 60
    if minutes < 10:
        halves = max(2, round(minutes * 2))
        return f"about {halves // 2}{'.5' if halves % 2 else ''} min"
    return f"about {round(minutes)} min"


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def other_hosts(main: Path) -> list[dict[str, Any]]:
    """The results of other kinds of host beside the result file ``main`` (``NAME.json``):
    the files ``NAME.*.json`` in its folder, by file name."""
    return [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(main.parent.glob(f"{main.stem}.*{main.suffix}"))
    ]


def other_main_jobs() -> list[dict[str, Any]]:
    """The main-job results of other hosts (``main_job.NAME.json``), by file name."""
    return other_hosts(MAIN_JOB)


def host_name(host: dict[str, Any]) -> str:
    """A host as the pages name it: cores, CPU model and the vector extensions of note."""
    wide = [flag for flag in host["flags"] if flag.startswith(("avx512", "amx"))]
    return f"{machine(host)} with {', '.join(wide) or 'AVX2 at most'}"


def other_hosts_sentence(others: list[dict[str, Any]]) -> str:
    """What the README adds for other hosts' main-job runs (empty without any)."""
    parts = []
    for result in others:
        default = result["runs"]["default"]
        ratios = ", ".join(
            f"{name.lower()} {result[key]}x" for name, key in RATIOS if key in result
        )
        parts.append(
            f"on {host_name(result['host'])} the default run takes "
            f"{about(default['process_time_s'])}" + (f" ({ratios})" if ratios else "")
        )
    return "; " + "; ".join(parts) if parts else ""


def machine(host: dict[str, Any]) -> str:
    """The machine a timing was measured on, as the README names it: cores and CPU model
    (the same job takes several times longer on one 2-core CPU than on another)."""
    model = host.get("cpu_model") or "CPU model not recorded"
    return f"{host['cores']} cores ({model})"


def main_job_sentence(
    result: dict[str, Any] | None, others: list[dict[str, Any]] | None = None
) -> str:
    """What the README says about the main command's run time (``others``: other hosts'
    results, :func:`other_main_jobs`)."""
    if result is None:
        return "the run itself has not been benchmarked yet (`benchmarks/bench_main_job.py`)"
    runs, cores = result["runs"], machine(result["host"])
    main = runs.get("default") or runs["serial"]
    part = (
        f"one of its {result['scenario_steps']} steps (a `--quick` benchmark run; the whole "
        "run has not been benchmarked yet) took"
        if result["quick"]
        else "the run itself takes"
    )
    text = f"{part} {about(main['process_time_s'])} on {cores}, `{main['model']}`"
    if "speedup_one_engine" in result:
        one = runs["one_engine"]
        text += (
            f"; one engine on every core, `{one['model']}`, {about(one['process_time_s'])}, "
            f"{result['speedup_one_engine']}x the default run's wall time"
        )
    if "speedup" in result:
        serial = runs["serial"]
        text += (
            f"; the serial path as it was, sampling every answer token by token, "
            f"`{serial['model']}`, {about(serial['process_time_s'])}, {result['speedup']}x"
        )
    if "speedup_as_filed" in result:
        text += (
            f"; the code the speed target was set against (commit "
            f"{runs['as_filed']['commit']}), {about(runs['as_filed']['process_time_s'])}, "
            f"{result['speedup_as_filed']}x"
        )
    text += other_hosts_sentence(others or [])
    return text + " ([docs/benchmarks-main-job.md](docs/benchmarks-main-job.md))"


def tests_sentence(result: dict[str, Any] | None) -> str:
    """What the README says about the test command's run time."""
    if result is None:
        return "Its run time has not been benchmarked yet (`benchmarks/bench_tests.py`)."
    phases = result["phases"]
    total = sum(p["seconds"] for p in phases.values())
    text = (
        f"After the install it takes {about(total)} on {machine(result['host'])}: ruff "
        f"{phases['ruff']['seconds']:.0f} s, "
        + (f"mypy {phases['mypy']['seconds']:.0f} s, " if "mypy" in phases else "")
        + '`pytest -m "not slow"` '
        f"{about(phases['fast']['seconds'])}, the slow tests {about(phases['slow']['seconds'])}"
    )
    if result["selection"]:
        text += f" (measured on a selection of tests only: `{' '.join(result['selection'])}`)"
    return text + "; [docs/benchmarks-tests.md](docs/benchmarks-tests.md)."


def readme_sentences() -> dict[str, str]:
    """Marker name → the sentence the result files give."""
    return {
        "main-job": main_job_sentence(_load(MAIN_JOB), other_main_jobs()),
        "tests": tests_sentence(_load(TESTS)),
    }


def render_readme(text: str, sentences: dict[str, str]) -> str:
    """``text`` with the body of every timing marker replaced by its sentence.

    Raises:
        ValueError: A marker is missing from ``text`` or unknown.
    """
    found = {m.group("name") for m in MARKER.finditer(text)}
    if found != set(sentences):
        raise ValueError(f"README timing markers {sorted(found)}, expected {sorted(sentences)}")
    return MARKER.sub(
        lambda m: f"<!-- timing:{m.group('name')} -->{sentences[m.group('name')]}<!-- /timing -->",
        text,
    )


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


AS_FILED = """
- *as filed*: the code the main job's speed targets were set against, run from a
  checkout of that commit with its own venv (`--as-filed`). It evaluated prompts in chunks
  aligned to multiples of 64 positions, each computing logits, and reused only whole aligned
  chunks; it sampled every answer token by token, then evaluated the answer again for its
  log-probabilities. It reports no prefix-cache figures."""


def side_name(label: str) -> str:
    """How the pages name a side of a main-job result (``as_filed``: ``as filed``)."""
    return label.replace("_", " ")


def side_model(label: str, run: dict[str, Any]) -> str:
    """A side's model string, and for ``as_filed`` the commit it ran at."""
    return f"`{run['model']}`" + (f" at {run['commit']}" if label == "as_filed" else "")


RATIOS = (
    ("One engine", "speedup_one_engine"),
    ("Serial", "speedup"),
    ("As filed", "speedup_as_filed"),
)
"""The main-job result's ratios to the default side: the other side's page name, the key."""
TARGETED = ("speedup", "speedup_as_filed")
"""The ratios the speed target is set for (against the serial path as it was)."""


def _local_changes(runs: dict[str, Any]) -> str:
    """A note on the as-filed side when its checkout had local changes (else empty)."""
    changed = runs.get("as_filed", {}).get("local_changes")
    if not changed:
        return ""
    return (
        "\n- *as filed* ran with local changes to "
        + ", ".join(f"`{path}`" for path in changed)
        + ": this commit crashes on CPUs with AMX, so it loaded its model with llama.cpp's "
        "extra buffer types off, as today's code does."
    )


def other_hosts_section(others: list[dict[str, Any]]) -> str:
    """The page's section on other hosts' main-job runs (empty without any)."""
    if not others:
        return ""
    sides = ("default", "one_engine", "serial", "as_filed")
    rows = []
    for result in others:
        runs, h = result["runs"], result["host"]
        walls = [f"{runs[label]['wall_time_s']}" if label in runs else "-" for label in sides]
        ratios = [f"{result[key]}x" if key in result else "-" for _, key in RATIOS]
        met = runs["default"]["wall_time_s"] <= result["targets"]["wall_time_s"]
        rows.append(
            f"| {host_name(h)}; flags {', '.join(h['flags'])} | {h['commit']} | "
            + " | ".join(walls + ratios)
            + f" | {'met' if met else '**missed**'} |"
        )
    head = (
        "| host | commit | default wall (s) | one engine (s) | serial (s) | as filed (s) "
        "| one engine / default | serial / default | as filed / default | default <= "
        f"{others[0]['targets']['wall_time_s']:.0f} s |"
    )
    return f"""
## Other hosts

The same benchmark on other kinds of 2-core host, one run each
(`bench_main_job.py --as-filed DIR --out benchmarks/results/main_job.NAME.json`; the ratios
are side by side within each host's run):

{head}
|{" --- |" * 10}
{chr(10).join(rows)}
"""


def main_job_page(result: dict[str, Any], others: list[dict[str, Any]] | None = None) -> str:
    """The markdown page of a ``bench_main_job.py`` result (``others``: other hosts' results,
    :func:`other_main_jobs`, in a section of their own)."""
    h, runs = result["host"], result["runs"]
    rows = []
    for label, r in runs.items():
        saved = r["prompt_tokens_saved"]
        saved_text = "not reported" if saved is None else f"{saved:,}"
        rows.append(
            f"| {side_name(label)} | {side_model(label, r)} | {r['steps']} | {r['wall_time_s']} | "
            f"{r['process_time_s']} | {r['cpu_time_s']} | {r['model_calls']} | {r['failures']} | "
            f"{r['calls_per_s']} | {r['prompt_tokens_per_s']} | {r['completion_tokens_per_s']} | "
            f"{r['prompt_tokens']:,} | {saved_text} |"
        )
    checks = []
    main = runs.get("default")
    if main is not None and not result["quick"]:
        ok = main["wall_time_s"] <= result["targets"]["wall_time_s"]
        checks.append(
            f"- Default wall time {main['wall_time_s']} s, target <= "
            f"{result['targets']['wall_time_s']:.0f} s: {'met' if ok else '**missed**'}."
        )
    for name, key in RATIOS:
        if key in result:
            ok = result[key] >= result["targets"]["speedup"]
            target = (
                f" (target >= {result['targets']['speedup']:.0f}x: {'met' if ok else '**missed**'})"
                if key in TARGETED
                else ""
            )
            checks.append(
                f"- {name} / default wall time, side by side in this run: **{result[key]}x**"
                f"{target}."
            )
    answers = {label: r.get("answers_sha256") for label, r in runs.items()}
    if answers.get("default") and answers.get("one_engine"):
        same = answers["default"] == answers["one_engine"]
        checks.append(
            "- What the model said in the default and one-engine runs (`transcript.jsonl` and "
            "`opinions.parquet` without the fields naming the model string): "
            + ("the same." if same else "**it differs**.")
        )
    if result["quick"]:
        checks.append(
            f"- This is a `--quick` run ({runs[next(iter(runs))]['steps']} of "
            f"{result['scenario_steps']} steps): it checks the script; the targets are for "
            "the whole run."
        )
    sets = ", ".join(f"`{s}`" for s in result["sets"]) or "none"
    loads = "; ".join(
        f"{side_name(label)} {r['loadavg_before'][0]} before, {r['loadavg_after'][0]} after"
        for label, r in runs.items()
    )
    return f"""# Benchmark: the main job on the embedded model

Numbers from one run of `benchmarks/bench_main_job.py`, copied from
`benchmarks/results/main_job.json` by `benchmarks/timings.py`: `{result["scenario"]}` as
shipped, run by the CLI (`simworld run ... --cache-mode off --quiet`) in a fresh process and
a fresh run directory for each model string, so nothing is reused between them
({result["rounds"]} round(s), order alternating, fastest run of each shown). Extra
settings: {sets}.

{HEADER}
{chr(10).join(rows)}

{chr(10).join(checks)}

- *default*: the serial engine (`batch=1`), one per core up to two answering calls at once
  and sharing the cores and saved prefix states (`engines=auto`: two here, one thread each
  while both work), each generating up to four sampled calls together (`slots=4`).
- *one engine*: the default before the engines were pooled, one serial engine on every core,
  one call at a time (`?engines=1&slots=1`).
- *serial*: the path the main job took before answers over a fixed set of options (probes,
  stance extraction) were drawn from the options' scores: one serial engine, one call at a
  time, sampling every answer token by token
  (`?engines=1&answers=sampled&slots=1`).{AS_FILED if "as_filed" in runs else ""}{
        _local_changes(runs)
    }
- *wall*: the manifest's `wall_time_s`, from the run's start to its end; *process*: the
  command from start to exit, loading the model included (what a user waits); *CPU*: user
  and system time of the command and of the child processes it waited for (the model's).
  Rates are per second of wall time.
- *prompt tokens from the prefix cache*: `totals.cached_prompt_tokens`, the prompt tokens the
  engine reported it did not evaluate again (`usage.prompt_tokens_details.cached_tokens`);
  "not reported" when the engine reports none.

Host: {h["cpu_model"]}, {h["cores"]} cores, {h["mem_gib"]} GiB, CPU flags
{", ".join(h["flags"]) or "none of note"}; Python {h["python"]}, llama-cpp-python
{h["llama_cpp_python"]}, litellm {h["litellm"]}, commit {h["commit"]}. Load average (1 min):
{result["loadavg_start"][0]} at the start, {result["loadavg_end"][0]} at the end; {loads}. The
machine may have been shared with other work: only ratios measured side by side mean much.
{other_hosts_section(others or [])}"""


def tests_page(result: dict[str, Any]) -> str:
    """The markdown page of a ``bench_tests.py`` result."""
    phases = result["phases"]
    rows = "\n".join(
        f"| {name} | `{p['command']}` | {p['seconds']:.1f} | "
        + (
            f"{p['tests']} ({p['failures']} failed, {p['skipped']} skipped)"
            if "tests" in p
            else "-"
        )
        + " |"
        for name, p in phases.items()
    )
    slow = "\n".join(f"| `{t['name']}` | {t['seconds']:.1f} |" for t in result["slowest"][:SLOWEST])
    selection = (
        f"on a selection of tests only (`{' '.join(result['selection'])}`)"
        if result["selection"]
        else "on the whole suite"
    )
    h = result["host"]
    checks = "ruff and mypy" if "mypy" in phases else "ruff"
    return f"""# Benchmark: the test command

Numbers from one run of `benchmarks/bench_tests.py` {selection}, copied from
`benchmarks/results/tests.json` by `benchmarks/timings.py`. It times what `bash tests/run.sh`
(the README's test command, what `.ci/run` runs) does after creating the venv and installing
the package: {checks}, then pytest, split into the tests a developer runs often
(`-m "not slow"`) and the slow ones (`-m slow`: tests of about 3 s or more, such as the
embedded model, signals, sweeps and whole runs). The install itself is not timed: the first
one compiles llama.cpp (about ten minutes on two cores), later ones take seconds.

| phase | command | seconds | tests |
| --- | --- | --- | --- |
{rows}

Slowest tests (pytest's `--durations`, setup, call and teardown together):

| test | seconds |
| --- | --- |
{slow}

Host: {h["cpu_model"]}, {h["cores"]} cores; load average (1 min) {result["loadavg_start"][0]}
at the start, {result["loadavg_end"][0]} at the end.
"""


def main() -> None:
    """Rewrite the README's timing sentences and the test-suite page."""
    README.write_text(
        render_readme(README.read_text(encoding="utf-8"), readme_sentences()), encoding="utf-8"
    )
    tests = _load(TESTS)
    if tests is not None:
        TESTS_PAGE.write_text(tests_page(tests), encoding="utf-8")
    print(f"wrote {README}" + (f" and {TESTS_PAGE}" if tests is not None else ""))


if __name__ == "__main__":
    main()
