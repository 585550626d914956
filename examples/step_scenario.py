"""Step a shipped scenario from Python and read what it produced with pandas.

Run from the repository root (the fake provider needs no model):

    .venv/bin/python examples/step_scenario.py [OUT_ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import simworld as sw

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "opinion_exchange.yaml"


def main(out_root: str = "outputs/examples") -> None:
    """Step a shipped scenario from Python, then record it as a run directory."""
    scenario = sw.load_scenario(SCENARIO, {"llm.model": "fake/default", "protocol.steps": 2})

    # 1. The Mesa model, stepped by hand: the data collector holds one row per probe step.
    with sw.SocialSimulation.from_scenario(scenario) as model:
        while model.running:
            model.step()
        population = model.datacollector.get_model_vars_dataframe()
        agents = model.datacollector.get_agent_vars_dataframe()
    print("population measures per step (step 0 = before anyone spoke):")
    print(population[["step", "bias:remote_work", "diversity:remote_work"]])
    opinions = agents["opinion:remote_work"].unstack("Step")
    print(f"\nopinions of {len(opinions)} agents, steps {list(opinions.columns)}")

    # 2. A recorded run directory, read back as pandas frames.
    result = sw.run_scenario(scenario, out_root=out_root)
    run = sw.Run(result.run_dir)
    drift = run.frame("drift")
    last = drift[drift.step == drift.step.max()]
    print(f"\nrun {result.run_dir}: {result.status}")
    print("mean |drift| at the last probe:", round(float(last.abs_drift.mean()), 3))
    print(sw.analysis.trajectories([result.run_dir]).head())


if __name__ == "__main__":
    main(*sys.argv[1:])
