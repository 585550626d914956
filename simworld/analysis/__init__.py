"""Analysis over one or many run directories.

Tables of the frames and the HTML report.

The table functions are importable from here too (``simworld.analysis.asch_levels``); they
live in :mod:`simworld.analysis.tables`.
"""

from simworld.analysis import tables
from simworld.analysis.tables import *  # noqa: F403  (the names of tables.__all__)

__all__ = list(tables.__all__)
