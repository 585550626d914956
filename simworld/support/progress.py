"""Progress inside a step: model calls planned, started and finished, and the bar that shows them.

The gateway reports every logical call as it starts and finishes (:class:`CallProgress`); the
simulation announces, as each phase of a step is planned, how many calls it will make
(:meth:`CallProgress.expect`). Calls nobody announced (memory upkeep, whose calls depend on
what the agents remember) are counted as they start. :class:`ProgressBar` draws the current
step's ``done/planned`` calls, with tokens, failures and estimated times, and moves on
every finished call rather than once per step.

Progress is display only: nothing here feeds back into a run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from tqdm import tqdm

REDRAW_S = 0.1


class Bar(tqdm):
    """A tqdm bar whose writes are serialised by a thread lock of its own.

    tqdm's default lock also holds a ``multiprocessing`` lock. Its semaphore is registered
    with multiprocessing's resource tracker, a helper process that outlives a killed run
    (``kill -9``, the out-of-memory killer) and then prints a "leaked semaphore" warning into
    the user's terminal. simworld draws its bars from one process, so a thread lock is all
    they need, and a run that does not start processes of its own starts no tracker.
    """

    _lock = threading.RLock()


@dataclass
class StepCalls:
    """The model calls of one step so far.

    Attributes:
        step: The step (0: the initial probe).
        announced: Calls the simulation said the step would make, so far.
        started: Calls that have started.
        done: Calls that have finished (answered, from the cache, or failed).
        failures: Finished calls that failed.
        prompt_tokens: Input tokens of the finished calls.
        completion_tokens: Output tokens of the finished calls.
    """

    step: int = 0
    announced: int = 0
    started: int = 0
    done: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def planned(self) -> int:
        """Calls known so far: the announced ones, or more if more have started."""
        return max(self.announced, self.started)

    @property
    def tokens(self) -> int:
        """Input plus output tokens of the finished calls."""
        return self.prompt_tokens + self.completion_tokens


Listener = Callable[["CallProgress"], None]


class CallProgress:
    """Counts a run's logical model calls per step as they are planned, start and finish.

    Args:
        clock: Seconds, monotonic (for the estimated times; injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.current = StepCalls()
        self.finished_steps: list[StepCalls] = []
        self.run_started = clock()
        self.step_started = self.run_started
        self.forecast_per_step: int | None = None
        """Calls a step is expected to make, from the scenario (:meth:`forecast`)."""
        self._listeners: list[Listener] = []

    def forecast(self, calls_per_step: int) -> None:
        """Expect ``calls_per_step`` calls of each step to come, until one has finished (the
        run's estimate before then: a run's first step, the initial probe, is smaller)."""
        self.forecast_per_step = calls_per_step

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(self)`` after every change."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener(self)

    def begin_step(self, step: int) -> None:
        """Start counting step ``step`` (the previous step's counts are kept)."""
        if self.current.started or self.current.announced:
            self.finished_steps.append(self.current)
        self.current = StepCalls(step=step)
        self.step_started = self._clock()
        self._changed()

    def expect(self, calls: int) -> None:
        """The simulation has planned ``calls`` more calls in the current step (negative: it
        corrects a forecast, e.g. fewer stance calls because some messages failed)."""
        if calls:
            self.current.announced += calls
            self._changed()

    def call_started(self) -> None:
        """A logical call has started."""
        self.current.started += 1
        if self.current.started > self.current.announced:
            self._changed()

    def call_finished(self, *, ok: bool, prompt_tokens: int, completion_tokens: int) -> None:
        """A logical call has finished (answered, served from the cache, or failed)."""
        cur = self.current
        cur.done += 1
        cur.failures += int(not ok)
        cur.prompt_tokens += prompt_tokens
        cur.completion_tokens += completion_tokens
        self._changed()

    # -- estimates ---------------------------------------------------------------------------
    def seconds_per_call(self) -> float | None:
        """Mean wall time per finished call over the run so far (``None`` before the first)."""
        done = self.current.done + sum(s.done for s in self.finished_steps)
        if done == 0:
            return None
        return (self._clock() - self.run_started) / done

    def step_eta(self) -> float | None:
        """Estimated seconds until the current step's known calls have finished."""
        rate = self.seconds_per_call()
        if rate is None:
            return None
        return rate * (self.current.planned - self.current.done)

    def run_eta(self, steps_total: int) -> float | None:
        """Estimated seconds until the run ends: the current step's remaining calls, plus each
        step still to come at the mean calls of the steps finished so far (before one has:
        the :meth:`forecast`, or this step's calls)."""
        rate = self.seconds_per_call()
        if rate is None:
            return None
        past = [s.started for s in self.finished_steps if s.step > 0]
        if past:
            per_step: float = sum(past) / len(past)
        elif self.forecast_per_step is not None:
            per_step = self.forecast_per_step
        else:
            per_step = self.current.planned
        steps_left = max(0, steps_total - self.current.step)
        return rate * (self.current.planned - self.current.done + steps_left * per_step)


def clock_text(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration; ``?`` when unknown."""
    if seconds is None:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """A tqdm bar of the current step's calls: ``name step 2/3: 41/90 calls`` with tokens,
    failures, the step's and the run's estimated remaining time.

    Args:
        progress: The counts to show (the gateway's).
        name: The scenario's name.
        steps: The run's last step number.
        disable: Draw nothing.
        file: Where to draw (default stderr).
        redraw_s: Least seconds between two redraws within a step (the step's first and last
            call are always drawn), so replaying thousands of cached calls does not flood
            the terminal.
    """

    def __init__(
        self,
        progress: CallProgress,
        *,
        name: str,
        steps: int,
        disable: bool = False,
        file: IO[str] | None = None,
        redraw_s: float = REDRAW_S,
    ) -> None:
        self._name = name
        self._steps = steps
        self._step = -1
        self._drawn = 0.0
        self._redraw_s = redraw_s
        self._bar: tqdm[Any] = Bar(
            desc=f"{name} starting",
            total=0,
            unit="call",
            disable=disable,
            leave=False,
            file=file,
            bar_format="{desc} |{bar}|",
            dynamic_ncols=True,
        )
        if not disable:
            progress.subscribe(self.show)

    def show(self, progress: CallProgress) -> None:
        """Redraw from ``progress`` (subscribed to it)."""
        cur, bar = progress.current, self._bar
        now = time.monotonic()
        if cur.step != self._step:
            self._step = cur.step
            bar.reset(total=cur.planned)
        elif (
            now - self._drawn < self._redraw_s
            and cur.planned == bar.total  # the plan last drawn
            and cur.done < cur.planned
        ):
            return
        self._drawn = now
        bar.total = cur.planned
        bar.n = cur.done
        where = f"{self._name} step {cur.step}/{self._steps}: "
        if cur.planned == 0:
            # the step has begun but its calls are not announced yet: no counts, no estimates
            bar.set_description_str(f"{where}planning calls", refresh=False)
        else:
            bar.set_description_str(
                f"{where}{cur.done}/{cur.planned} calls, "
                f"tokens={cur.tokens} fails={cur.failures} "
                f"step ETA {clock_text(progress.step_eta())} "
                f"run ETA {clock_text(progress.run_eta(self._steps))}",
                refresh=False,
            )
        bar.refresh()

    def close(self) -> None:
        """Remove the bar."""
        self._bar.close()
