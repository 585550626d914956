"""The ``simworld`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from simworld.errors import ConfigError, SimworldError, StorageError
from simworld.support.plugins import plugin_fault
from simworld.support.redact import Redactor
from simworld.support.rundir import FINISHED, RunStatus, read_manifest
from simworld.support.yamlio import parse_scalar

if TYPE_CHECKING:
    from simworld.runs.run import RunResult

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1
# Commands that run a simulation in this process; it tunes its collector first.
SIMULATING = frozenset({"run", "resume", "replay"})


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors, which echo what was typed, mask credentials."""

    def error(self, message: str) -> NoReturn:
        super().error(Redactor.for_environment().text(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="simworld", description="Multi-agent social simulation.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario into a new run directory")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--model", help="litellm model string (overrides llm.model)")
    run.add_argument("--steps", type=int, help="number of steps (overrides protocol.steps)")
    run.add_argument("--seed", type=int, help="seed (overrides seed)")
    run.add_argument("--out", help="exact run directory (must not exist)")
    run.add_argument("--out-root", default="outputs", help="root of run directories")
    run.add_argument("--cache", help="record/replay cache file (SQLite)")
    run.add_argument(
        "--cache-mode", choices=["off", "record", "replay"], help="overrides llm.cache"
    )
    run.add_argument("--concurrency", type=int, help="overrides llm.concurrency")
    _add_set_argument(run, "scenario change (dotted key; repeatable; the options above win)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--force", action="store_true", help="run even if its estimated size does not fit here"
    )
    resume = sub.add_parser("resume", help="resume an interrupted run in place")
    resume.add_argument("run_dir", help="the interrupted run's directory")
    resume.add_argument("--cache", help="cache file (default: the one in its manifest)")
    resume.add_argument("--quiet", action="store_true", help="no progress bar")
    replay = sub.add_parser(
        "replay", help="re-execute a recorded run with no model calls, or branch it"
    )
    replay.add_argument("run_dir", help="the recorded run's directory")
    replay.add_argument("--from-step", type=int, help="branch a counterfactual from this step")
    _add_set_argument(replay, "scenario change for the branch (dotted key; repeatable)")
    replay.add_argument("--out", help="where to write the replayed or branched run")
    replay.add_argument("--cache", help="cache file (default: the one in its manifest)")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("schema", help="print the JSON Schema of scenario files")
    analyze = sub.add_parser(
        "analyze", help="re-derive a run's tracker frames from its transcript (no model call)"
    )
    analyze.add_argument("run_dir", help="the run's directory")
    analyze.add_argument("--out", help="where to write the frames (default RUN_DIR/trackers)")
    analyze.add_argument(
        "--check", action="store_true", help="only compare with the frames on disk"
    )
    report = sub.add_parser(
        "report",
        help="write RUN_DIR/report/report.html with figures, or compare a sweep or several runs",
    )
    report.add_argument(
        "run_dir",
        nargs="+",
        help="a run directory; or a sweep directory, or several run directories, to compare",
    )
    report.add_argument(
        "--out",
        help="where to write the report (default RUN_DIR/report, SWEEP_DIR/report, or "
        "report/ beside the compared runs)",
    )
    report.add_argument(
        "--level", type=float, default=0.95, help="confidence level of a comparison's intervals"
    )
    report.add_argument(
        "--network-steps",
        type=int,
        nargs="+",
        metavar="STEP",
        help="probe steps at which to draw the network (default first, middle, last)",
    )
    from simworld.sweeps.driver import add_sweep_arguments

    add_sweep_arguments(
        sub.add_parser("sweep", help="run a scenario over a grid of parameters and seeds")
    )
    return parser


def _add_set_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--set`` pairs, then the named options (which win over ``--set`` of the same key)."""
    pairs = {
        "llm.model": args.model,
        "protocol.steps": args.steps,
        "seed": args.seed,
        "llm.cache": args.cache_mode,
        "llm.concurrency": args.concurrency,
    }
    return {
        **parse_assignments(args.set),
        **{k: v for k, v in pairs.items() if v is not None},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``simworld`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # whoever read stdout left (`simworld run ... | head -3`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return EXIT_RUN_FAILED
    except StorageError as exc:  # the run stopped, as after a crash: a failed run
        _error(str(exc))
        return EXIT_RUN_FAILED
    except SimworldError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    except OSError as exc:
        if exc.filename is None:  # not about a path the user gave or the run uses
            raise
        _error(f"{exc.filename}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT
    except Exception as exc:
        fault = plugin_fault(exc)
        if fault is None:
            raise  # simworld's own bug: its traceback is what a report needs
        _error(fault)
        return EXIT_RUN_FAILED


def _error(message: str) -> None:
    """Print ``simworld: error: message`` on stderr, with credentials masked: a value the
    user gave is echoed back (``--set llm.temperature=...``), perhaps a key pasted in the
    wrong place."""
    print(f"simworld: error: {Redactor.for_environment().text(message)}", file=sys.stderr)


def _finish(result: RunResult) -> int:
    print(result.summary())
    if result.status in FINISHED:
        return 0
    if result.status == RunStatus.CRASHED:
        after = "no step" if result.last_step is None else f"step {result.last_step}"
        _error(
            f"{result.error}; run {result.run_dir} is marked crashed "
            f"({after} completed); continue it with: simworld resume {result.run_dir}"
        )
    else:
        _error(f"run {result.status}: {result.error}")
    return EXIT_RUN_FAILED


def _run(args: argparse.Namespace) -> int:
    from simworld.runs.run import run_scenario

    return _finish(
        run_scenario(
            args.scenario,
            overrides=_overrides(args),
            out_dir=args.out,
            out_root=args.out_root,
            cache_path=args.cache,
            progress=not args.quiet,
            force=args.force,
        )
    )


def _resume(args: argparse.Namespace) -> int:
    from simworld.runs.run import resume_run

    return _finish(resume_run(args.run_dir, cache_path=args.cache, progress=not args.quiet))


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` pairs; values are YAML scalars (see :func:`parse_scalar`).

    Raises:
        ConfigError: An item has no ``=`` or a value is not valid YAML.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", item, "expected KEY=VALUE")
        out[key.strip()] = parse_scalar(raw, source="--set", field=item) if raw.strip() else ""
    return out


def _replay(args: argparse.Namespace) -> int:
    from simworld.runs.replay import branch_run, verify_replay

    progress = not args.quiet
    if args.from_step is None:
        if args.set:
            raise ConfigError("--set", "", "--set needs --from-step (a branch)")
        report = verify_replay(
            args.run_dir, out_dir=args.out, cache_path=args.cache, progress=progress
        )
        lines = report.result.summary().splitlines()
        if args.out is None:  # the replay ran in a temporary folder, removed by now
            lines[0] = f"run        {args.run_dir}, replayed in a temporary folder (--out keeps it)"
        print("\n".join(lines))
        if report.result.status != RunStatus.COMPLETED:
            return EXIT_RUN_FAILED
        if not report.identical:
            for line in report.differences:
                print(f"DIFFERENT  {line}")
            return EXIT_RUN_FAILED
        if report.notes:  # e.g. a run recorded before ``probs`` was a typed list
            print("replay     identical in content (transcript.jsonl, opinions.parquet)")
            for line in report.notes:
                print(f"note       {line}")
            return 0
        print("replay     identical (transcript.jsonl, opinions.parquet)")
        return 0
    result = branch_run(
        args.run_dir,
        from_step=args.from_step,
        overrides=parse_assignments(args.set),
        out_dir=args.out,
        cache_path=args.cache,
        progress=progress,
    )
    return _finish(result)


def _sweep(args: argparse.Namespace) -> int:
    from simworld.sweeps.driver import sweep_command

    return sweep_command(args)


def _analyze(args: argparse.Namespace) -> int:
    from simworld.runs.state import run_state
    from simworld.trackers.tracker_set import analyze_run

    recorded = run_state(args.run_dir)
    if not recorded.complete:
        print(f"note       {recorded.describe()}")
    status = analyze_run(args.run_dir, out_dir=args.out, check=args.check)
    for name, state in status.items():
        print(f"{name:<12} {state}")
    if not args.check:
        import pyarrow.parquet as pq

        from simworld.support.rundir import TRACKERS_DIR

        frames = Path(args.out) if args.out is not None else Path(args.run_dir) / TRACKERS_DIR
        signal = frames / "signal.parquet"
        if signal.is_file():  # the signal checks' warnings (docs/metrics.md §8)
            for warning in pq.read_table(signal, columns=["warning"]).column(0).to_pylist():
                if warning:
                    print(f"WARNING      {warning}")
    return EXIT_RUN_FAILED if args.check and set(status.values()) != {"identical"} else 0


def _report(args: argparse.Namespace) -> int:
    from simworld.analysis.report import build_report
    from simworld.runs.state import run_state

    paths = [Path(p) for p in args.run_dir]
    if not 0 < args.level < 1:
        raise ConfigError("--level", str(args.level), "must be between 0 and 1")
    if len(paths) == 1 and (paths[0] / "manifest.json").is_file() and not _is_branch(paths[0]):
        recorded = run_state(paths[0])
        if not recorded.complete:
            print(f"note       {recorded.describe()}")
        print(build_report(paths[0], out_dir=args.out, steps=args.network_steps))
        return 0
    from simworld.analysis.compare import build_comparison

    skipped: list[str] = []
    page = build_comparison(paths, out_dir=args.out, level=args.level, skipped=skipped)
    if skipped:
        print(f"note       {len(skipped)} run(s) left out, not finished: {', '.join(skipped)}")
    print(page)
    return 0


def _is_branch(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a counterfactual branch (reported beside its parent)."""
    return "branch" in read_manifest(run_dir)


def _schema(args: argparse.Namespace) -> int:
    from simworld.config.scenario import scenario_json_schema

    print(json.dumps(scenario_json_schema(), indent=2))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run,
    "resume": _resume,
    "replay": _replay,
    "schema": _schema,
    "sweep": _sweep,
    "analyze": _analyze,
    "report": _report,
}


def console() -> int:
    """The ``simworld`` console script: :func:`main` in a process of its own, so a command
    that simulates tunes the collector first (:func:`~simworld.support.process.tune_gc`),
    and a SIGTERM or a SIGHUP stops the command as a Ctrl-C does
    (:class:`~simworld.support.process.Terminated`)."""
    from simworld.support.process import ctrl_c_handled, handle_terminating, stopped_line, tune_gc

    handle_terminating()
    argv = sys.argv[1:]
    try:  # from the imports on, which take seconds: a Ctrl-C then is no traceback either
        if argv and argv[0] in SIMULATING:
            import simworld.runs.run  # noqa: F401  (the engine's imports, which tune_gc freezes)

            tune_gc()
        return main(argv)
    except KeyboardInterrupt as exc:  # the run has already recorded itself as interrupted
        ctrl_c_handled()
        line, code = stopped_line(exc)
        print(line, file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(console())
