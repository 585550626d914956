"""Published human results that shipped scenarios reproduce, drawn beside simulated ones.

Asch's line-judgement experiments varied the size of the unanimous wrong majority; the
``asch_conformity`` scenario varies the number ``p`` of scripted peers the same way. The
human conformity rate at each majority size is the mean number of errors toward the
majority over the 12 critical trials, divided by 12 (Asch 1951, the table of majorities of
differing size; the control group judged alone, in writing).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Reference:
    """Human values of one measure as a function of one design variable.

    Attributes:
        measure: What was measured (as the simulated column is named).
        variable: The design variable (as the simulated column is named).
        values: ``(variable value, measure value, subjects)`` rows.
        label: Legend text.
        citation: Full reference.
        note: How the values were derived from the publication.
    """

    measure: str
    variable: str
    values: tuple[tuple[int, float, int], ...]
    label: str
    citation: str
    note: str

    def frame(self) -> pd.DataFrame:
        """The values as a frame: the variable, the measure and ``n`` (subjects)."""
        return pd.DataFrame(list(self.values), columns=[self.variable, self.measure, "n"])


ASCH_TRIALS = 12
_ASCH_MEAN_ERRORS = ((0, 0.08, 37), (1, 0.33, 10), (2, 1.53, 15), (3, 4.0, 10), (4, 4.20, 10),
                     (8, 3.84, 50))  # fmt: skip
ASCH_1951 = Reference(
    measure="CL",
    variable="p",
    values=tuple((p, round(err / ASCH_TRIALS, 4), n) for p, err, n in _ASCH_MEAN_ERRORS),
    label="humans, Asch (1951)",
    citation=(
        "Asch, S. E. (1951). Effects of group pressure upon the modification and distortion "
        "of judgments. In H. Guetzkow (Ed.), Groups, leadership and men (pp. 177–190). "
        "Pittsburgh: Carnegie Press."
    ),
    note=(
        "Share of the 12 critical trials on which subjects went with a unanimous wrong "
        "majority of p confederates (mean errors / 12; p = 0 is the control group, who "
        "answered alone in writing). Majorities of 10–15 gave 3.75 errors (31 %)."
    ),
)
"""Asch's conformity rate by majority size (the ``CL`` of ``simworld.measures.asch_table``)."""

__all__ = ["ASCH_1951", "Reference"]
