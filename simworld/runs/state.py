"""How far a run directory got, for the commands that read one (``report``, ``analyze``).

A run that crashed, was killed or is still going has a manifest whose status is not
``completed`` and a transcript that ends at its last completed step (possibly followed by a
line cut short). :func:`run_state` says what such a directory holds, and raises a one-line
:class:`~simworld.errors.ConfigError` when there is nothing to report on yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from simworld.errors import ConfigError
from simworld.support.rundir import FINISHED, TRANSCRIPT, read_manifest

COMPLETE_STATUSES = frozenset(str(s) for s in FINISHED)


@dataclass(frozen=True)
class RunState:
    """What a run directory holds.

    Attributes:
        status: The manifest's status (``running`` for a run that is going on or that died
            without a word).
        last_step: The last step whose ``step_end`` the transcript holds (``None``: none).
    """

    status: str
    last_step: int | None

    @property
    def complete(self) -> bool:
        """Whether the run ran to its end (or to its budget)."""
        return self.status in COMPLETE_STATUSES

    def describe(self) -> str:
        """``incomplete run (status crashed, steps up to 2 recorded)`` or ``complete run``."""
        if self.complete:
            return "complete run"
        steps = "no step" if self.last_step is None else f"steps up to {self.last_step}"
        return f"incomplete run (status {self.status}, {steps} recorded)"


def run_state(run_dir: str | Path) -> RunState:
    """Read a run directory's status and the last step its transcript completed.

    Raises:
        ConfigError: No readable manifest, no transcript, a transcript line that is not
            JSON (other than a last line cut short by a crash), or no recorded start.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    status = str(manifest.get("status", "unknown"))
    path = run_dir / TRANSCRIPT
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(path, "", "missing: not a complete run directory") from exc
    started = False
    last_step: int | None = None
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if not line.endswith("\n"):
            break  # cut short by a crash while it was written
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(path, f"line {number}", f"not JSON: {exc.msg}") from exc
        kind = event.get("type") if isinstance(event, dict) else None
        started = started or kind == "run_start"
        if kind == "step_end":
            last_step = int(event["step"])
    if not started:
        hint = "" if status in COMPLETE_STATUSES else f"; resume it: simworld resume {run_dir}"
        raise ConfigError(
            path, "", f"the run recorded nothing yet (status {status}): nothing to read{hint}"
        )
    return RunState(status, last_step)
