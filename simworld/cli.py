"""The ``simworld`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from simworld.errors import SimworldError

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simworld", description="Multi-agent social simulation.")
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
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("schema", help="print the JSON Schema of scenario files")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {
        "llm.model": args.model,
        "protocol.steps": args.steps,
        "seed": args.seed,
        "llm.cache": args.cache_mode,
        "llm.concurrency": args.concurrency,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``simworld`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "schema":
        from simworld.scenario import scenario_json_schema

        print(json.dumps(scenario_json_schema(), indent=2))
        return 0
    from simworld.run import run_scenario

    try:
        result = run_scenario(
            args.scenario,
            overrides=_overrides(args),
            out_dir=args.out,
            out_root=args.out_root,
            cache_path=args.cache,
            progress=not args.quiet,
        )
    except SimworldError as exc:
        print(f"simworld: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(result.summary())
    return 0 if result.status in {"completed", "budget_exhausted"} else EXIT_RUN_FAILED


if __name__ == "__main__":
    sys.exit(main())
