"""Analysis over one or many run directories.

Tables of the frames and the HTML report.

The table functions are importable from here too (``simworld.analysis.asch_levels``); they
live in :mod:`simworld.analysis.tables`.
"""

from simworld.analysis.tables import (
    RATE_MEASURES,
    Run,
    asch_levels,
    belief_curves,
    confidence_interval,
    conformity_rates,
    frames,
    inconstancy_by_diversity,
    personality_change,
    population_over_time,
    run_rates,
    runs,
    trajectories,
)

__all__ = [
    "RATE_MEASURES",
    "Run",
    "asch_levels",
    "belief_curves",
    "confidence_interval",
    "conformity_rates",
    "frames",
    "inconstancy_by_diversity",
    "personality_change",
    "population_over_time",
    "run_rates",
    "runs",
    "trajectories",
]
