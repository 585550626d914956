"""Progress inside a step: calls planned and finished, per step, and the bar that shows them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from simworld.cli import main
from simworld.runs.run import run_scenario
from simworld.support.progress import CallProgress, ProgressBar, StepCalls, clock_text


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def step_ends(run_dir: Path) -> dict[int, int]:
    lines = (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    return {e["step"]: e["calls"] for e in events if e["type"] == "step_end"}


def test_counts_and_estimates_follow_calls():
    clock = FakeClock()
    progress = CallProgress(clock)
    progress.begin_step(1)
    progress.expect(4)
    assert (progress.current.planned, progress.current.done) == (4, 0)
    assert progress.step_eta() is None
    for _ in range(4):
        progress.call_started()
    clock.now += 10.0
    progress.call_finished(ok=True, prompt_tokens=100, completion_tokens=5)
    progress.call_finished(ok=False, prompt_tokens=30, completion_tokens=0)
    cur = progress.current
    assert (cur.done, cur.failures, cur.tokens) == (2, 1, 135)
    # 10 s for 2 calls: 2 calls left in the step, then 2 more steps of 4 calls
    assert progress.step_eta() == 10.0
    assert progress.run_eta(steps_total=3) == 5.0 * (2 + 2 * 4)
    # a call nobody announced (memory upkeep) raises the plan instead of overflowing it
    progress.call_started()
    assert progress.current.planned == 5
    progress.begin_step(2)
    assert progress.finished_steps == [StepCalls(1, 4, 5, 2, 1, 130, 5)]
    assert progress.current == StepCalls(step=2)


def test_run_eta_counts_the_forecast_steps_until_one_has_finished():
    """The initial probe (step 0) is smaller than the steps after it: until step 1 has
    finished, the steps to come count at the scenario's forecast, not at step 0's calls."""
    clock = FakeClock()
    progress = CallProgress(clock)
    progress.forecast(10)
    progress.begin_step(0)
    progress.expect(4)
    progress.call_started()
    clock.now += 2.0
    progress.call_finished(ok=True, prompt_tokens=1, completion_tokens=1)
    # 2 s per call: 3 calls left in step 0, then 2 steps of 10
    assert progress.run_eta(steps_total=2) == 2.0 * (3 + 2 * 10)
    for _ in range(3):
        progress.call_started()
        progress.call_finished(ok=True, prompt_tokens=1, completion_tokens=1)
    progress.begin_step(1)
    progress.expect(6)
    for _ in range(6):
        progress.call_started()
        progress.call_finished(ok=True, prompt_tokens=1, completion_tokens=1)
    progress.begin_step(2)
    progress.expect(6)
    # 2 s for 10 calls; step 1 made 6 calls: the step after this one counts at that, no
    # longer at the forecast
    assert progress.run_eta(steps_total=3) == pytest.approx(2.0 / 10 * (6 + 1 * 6))


def test_run_forecasts_its_steps_calls_for_the_bar(make_scenario, tmp_path):
    """A run tells the bar its steps' calls before step 0, so the first estimate of the
    whole run already counts steps larger than the initial probe."""
    forecasts = []
    run_scenario(
        make_scenario({"protocol.steps": 1}),
        out_dir=tmp_path / "run",
        cache_path=tmp_path / "c.db",
        before_step=lambda model: forecasts.append(model.gateway.progress.forecast_per_step),
    )
    calls = step_ends(tmp_path / "run")
    assert calls[1] > calls[0]
    assert forecasts == [calls[1]]


def _drawing(redraw_s: float) -> tuple[FakeClock, CallProgress, io.StringIO, ProgressBar]:
    """A bar of a 3-step run named ``demo`` drawing into a string, on a fake clock."""
    clock = FakeClock()
    progress = CallProgress(clock)
    out = io.StringIO()
    return (
        clock,
        progress,
        out,
        ProgressBar(progress, name="demo", steps=3, file=out, redraw_s=redraw_s),
    )


def test_bar_draws_step_calls_tokens_failures_and_eta():
    clock, progress, out, bar = _drawing(redraw_s=0.0)
    progress.begin_step(2)
    progress.expect(5)
    progress.call_started()
    progress.call_started()
    clock.now += 61.0
    progress.call_finished(ok=True, prompt_tokens=10, completion_tokens=2)
    progress.call_finished(ok=False, prompt_tokens=7, completion_tokens=0)
    bar.close()
    drawn = [line for line in out.getvalue().split("\r") if line.strip()]
    last = drawn[-1]
    assert last.startswith("demo step 2/3: 2/5 calls, tokens=19 fails=1")
    assert "|####      |" in last
    # 30.5 s per call: 3 left in the step; then one more step of 5
    assert "step ETA 1:32" in last and "run ETA 4:04" in last


def test_bar_shows_a_new_steps_plan_at_once_and_never_an_empty_one():
    """Between a step's start and its first finished call the bar says what is planned: the
    first call of a step on the embedded model can take seconds, longer than any redraw."""
    clock, progress, out, bar = _drawing(redraw_s=3600.0)
    progress.begin_step(1)
    progress.expect(4)
    progress.call_started()
    clock.now += 5.0
    progress.call_finished(ok=True, prompt_tokens=10, completion_tokens=2)
    progress.begin_step(2)
    planning = out.getvalue().split("\r")[-1]
    progress.expect(6)
    bar.close()
    drawn = [line for line in out.getvalue().split("\r") if line.strip()]
    assert planning.startswith("demo step 2/3: planning calls")
    assert "ETA" not in planning
    assert not [line for line in drawn if "0/0 calls" in line]
    assert drawn[-1].startswith("demo step 2/3: 0/6 calls, tokens=0 fails=0 step ETA 0:30")


def test_clock_text():
    assert clock_text(None) == "?"
    assert clock_text(59.6) == "1:00"
    assert clock_text(3725) == "1:02:05"


def _run_watching(make_scenario, tmp_path: Path, changes: dict) -> tuple[list, Path]:
    """Run a scenario, recording (step, planned, done) after every progress change."""
    seen: list[tuple[int, int, int]] = []

    def watch(model) -> None:
        if not seen:
            model.gateway.progress.subscribe(
                lambda p: seen.append((p.current.step, p.current.planned, p.current.done))
            )

    run_dir = tmp_path / "run"
    result = run_scenario(
        make_scenario(changes), out_dir=run_dir, cache_path=tmp_path / "c.db", before_step=watch
    )
    assert result.status == "completed"
    return seen, run_dir


def test_plan_is_known_before_the_steps_calls_finish(make_scenario, tmp_path):
    """Broadcast with probes: the whole step is announced up front, calls tick by one."""
    seen, run_dir = _run_watching(
        make_scenario, tmp_path, {"llm.model": "fake/default?latency_ms=2", "llm.concurrency": 3}
    )
    calls = step_ends(run_dir)
    for step in (1, 2, 3):
        ticks = [(planned, done) for s, planned, done in seen if s == step and done > 0]
        dones = [done for _, done in ticks]
        assert dones == sorted(dones)
        assert sorted(set(dones)) == list(range(1, calls[step] + 1))
        assert {planned for planned, _ in ticks} == {calls[step]}


@pytest.mark.parametrize(
    "changes",
    [
        # memory-stream upkeep calls (rated importance) are not announced; they still count
        {"memory": {"store": "chroma", "importance": {"mode": "llm"}}},
        # failed posts make no message, hence fewer stance calls than forecast
        {"llm.model": "fake/default?failure_rate=0.4", "llm.max_retries": 0},
    ],
    ids=["memory", "failures"],
)
def test_plan_ends_at_the_calls_made(make_scenario, tmp_path, changes):
    seen, run_dir = _run_watching(make_scenario, tmp_path, {**changes, "protocol.steps": 2})
    calls = step_ends(run_dir)
    for step in (1, 2):
        final = [(planned, done) for s, planned, done in seen if s == step][-1]
        assert final == (calls[step], calls[step])


def test_cli_run_draws_the_bar_per_call(make_scenario, tmp_path, capsys):
    code = main(
        [
            "run",
            str(make_scenario({"protocol.steps": 1})),
            "--out",
            str(tmp_path / "run"),
            "--cache",
            str(tmp_path / "c.db"),
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    calls = step_ends(tmp_path / "run")
    assert f"tiny step 1/1: {calls[1]}/{calls[1]} calls" in err
    assert "fails=0" in err and "run ETA" in err
