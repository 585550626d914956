"""simworld: multi-agent social simulation with LLM-backed persona agents.

The public face. ``import simworld as sw`` is cheap: each name below is imported on first use
(PEP 562), so litellm, pandas and Mesa load only when something needs them.

Scenarios:
    :class:`Scenario`, :func:`load_scenario`.
The Mesa model:
    :class:`SocialSimulation` (``SocialSimulation.from_scenario(...)``, a context manager),
    :class:`PersonaAgent`, :class:`StepRecord`.
Runs (a recorded run directory):
    :func:`run_scenario`, :func:`resume_run`, :func:`verify_replay` (replay),
    :func:`branch_run` (a counterfactual branch), :func:`read_transcript` (its events),
    :class:`RunResult`, :class:`RunStatus`.
Sweeps:
    :func:`run_sweep`.
Trackers:
    :class:`Tracker` (the protocol a tracker implements), :class:`TrackerSet`,
    :func:`analyze_run`.
Analysis:
    :class:`Run` (a run directory's frames as pandas), :func:`build_report`, and the
    ``measures`` and ``analysis`` subpackages.
The LLM layer:
    :class:`Gateway`, :class:`LiteLLMModel`.
Errors:
    :class:`SimworldError`, :class:`ConfigError`, :class:`PluginError`.

Example::

    import simworld as sw

    scenario = sw.load_scenario("scenarios/opinion_exchange.yaml", {"llm.model": "fake/default"})
    with sw.SocialSimulation.from_scenario(scenario) as model:
        while model.running:
            model.step()
    result = sw.run_scenario(scenario, out_root="outputs")  # a recorded run directory
    drift = sw.Run(result.run_dir).frame("drift")  # a tracker frame as pandas
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# litellm fetches a cost map over the network at import unless told not to; simworld never
# needs the network, so this is set before any module imports litellm.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Scenario": "simworld.config.scenario",
    "load_scenario": "simworld.config.scenario",
    "SocialSimulation": "simworld.engine.model",
    "PersonaAgent": "simworld.engine.agent",
    "StepRecord": "simworld.engine.record",
    "RunResult": "simworld.runs.run",
    "run_scenario": "simworld.runs.run",
    "resume_run": "simworld.runs.run",
    "verify_replay": "simworld.runs.replay",
    "branch_run": "simworld.runs.replay",
    "read_transcript": "simworld.runs.writer",
    "RunStatus": "simworld.support.rundir",
    "run_sweep": "simworld.sweeps.driver",
    "Tracker": "simworld.trackers.base",
    "TrackerSet": "simworld.trackers.tracker_set",
    "analyze_run": "simworld.trackers.tracker_set",
    "Run": "simworld.analysis.tables",
    "build_report": "simworld.analysis.report",
    "Gateway": "simworld.llm.gateway",
    "LiteLLMModel": "simworld.llm.litellm_backend",
    "SimworldError": "simworld.errors",
    "ConfigError": "simworld.errors",
    "PluginError": "simworld.errors",
}
_SUBPACKAGES = ("measures", "analysis")

__all__ = [
    "ConfigError",
    "Gateway",
    "LiteLLMModel",
    "PersonaAgent",
    "PluginError",
    "Run",
    "RunResult",
    "RunStatus",
    "Scenario",
    "SimworldError",
    "SocialSimulation",
    "StepRecord",
    "Tracker",
    "TrackerSet",
    "analysis",
    "analyze_run",
    "branch_run",
    "build_report",
    "load_scenario",
    "measures",
    "read_transcript",
    "resume_run",
    "run_scenario",
    "run_sweep",
    "verify_replay",
]

if TYPE_CHECKING:
    from simworld.analysis.report import build_report
    from simworld.analysis.tables import Run
    from simworld.config.scenario import Scenario, load_scenario
    from simworld.engine.agent import PersonaAgent
    from simworld.engine.model import SocialSimulation
    from simworld.engine.record import StepRecord
    from simworld.errors import ConfigError, PluginError, SimworldError
    from simworld.llm.gateway import Gateway
    from simworld.llm.litellm_backend import LiteLLMModel
    from simworld.runs.replay import branch_run, verify_replay
    from simworld.runs.run import RunResult, resume_run, run_scenario
    from simworld.runs.writer import read_transcript
    from simworld.support.rundir import RunStatus
    from simworld.sweeps.driver import run_sweep
    from simworld.trackers.base import Tracker
    from simworld.trackers.tracker_set import TrackerSet, analyze_run

    from . import analysis, measures


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562) and keep it in the module."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
