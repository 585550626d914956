"""Shared helpers of the measures: missing answers, answer kinds, pluralities, entropy, rates.

Every measure treats a missing answer (``None``, ``float('nan')``, ``numpy.nan`` or
``pandas.NA``, which is what a failed model call leaves behind) as missing: it is dropped
before anything is counted and never compared, averaged or tallied as if it were a value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Answer = int | float | str
"""One answer: a Likert value (ordinal) or a choice letter (categorical)."""

ScaleKind = Literal["ordinal", "categorical"]
"""Whether answers are ordered numbers (``"ordinal"``) or unordered categories."""

ORDINAL: ScaleKind = "ordinal"
CATEGORICAL: ScaleKind = "categorical"
SCALE_KINDS: tuple[ScaleKind, ...] = (ORDINAL, CATEGORICAL)


def is_missing(value: object) -> bool:
    """Whether ``value`` is a missing answer (``None``, NaN or ``pandas.NA``).

    Args:
        value: One answer.

    Returns:
        True for ``None``, ``pandas.NA``/``NaT`` and float NaN; False for anything else.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(float(value))
    return False


def present(values: Iterable[object]) -> list[Answer]:
    """The non-missing answers of ``values``, in order."""
    return [v for v in values if not is_missing(v)]  # type: ignore[misc]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def infer_scale(values: Iterable[object], scale: ScaleKind | None = None) -> ScaleKind:
    """Decide whether answers are ordinal or categorical.

    Args:
        values: Answers (missing ones are ignored).
        scale: The kind to use; when given it is checked, not inferred.

    Returns:
        ``scale`` if given, else ``"ordinal"`` when every present answer is a number and
        ``"categorical"`` when every present answer is a string. With no present answer the
        inferred kind is ``"categorical"`` (nothing numeric to compute on).

    Raises:
        ValueError: ``scale`` is not a known kind, answers mix numbers and strings, or
            ``scale="ordinal"`` is asked for non-numeric answers.
    """
    if scale is not None and scale not in SCALE_KINDS:
        raise ValueError(f"scale must be one of {SCALE_KINDS}, got {scale!r}")
    vals = present(values)
    numeric = [_is_number(v) for v in vals]
    if scale == CATEGORICAL:
        return CATEGORICAL
    if scale == ORDINAL:
        if not all(numeric):
            bad = next(v for v, ok in zip(vals, numeric, strict=True) if not ok)
            raise ValueError(f"ordinal answers must be numbers, got {bad!r}")
        return ORDINAL
    if vals and all(numeric):
        return ORDINAL
    if any(numeric) and not all(numeric):
        raise ValueError("answers mix numbers and strings; pass scale= explicitly")
    return CATEGORICAL


def ordinal_array(values: Iterable[object], what: str) -> np.ndarray:
    """Float array of the answers, missing ones as NaN.

    Args:
        values: Answers.
        what: Name of the measure, used in the error message.

    Returns:
        The answers as float64, with NaN where an answer is missing.

    Raises:
        ValueError: A present answer is not a number (the measure is ordinal-only).
    """
    out: list[float] = []
    for v in values:
        if is_missing(v):
            out.append(math.nan)
        elif _is_number(v):
            out.append(float(v))  # type: ignore[arg-type]
        else:
            raise ValueError(
                f"{what} is defined for ordinal (numeric Likert) answers only, got {v!r}"
            )
    return np.asarray(out, dtype=float)


def plurality(values: Iterable[object]) -> Answer | None:
    """The single most frequent present answer, or None when there is none or a tie.

    Args:
        values: Answers; missing ones are dropped first.

    Returns:
        The unique modal answer; None when no answer is present or two or more answers
        share the top count (a tie is left undefined rather than broken arbitrarily).
    """
    counts = Counter(present(values))
    if not counts:
        return None
    ranked = counts.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def shannon_entropy(values: Iterable[object], *, base: float = 2.0) -> float:
    """Shannon entropy ``-Σ_o p(o) log p(o)`` of the empirical answer distribution.

    Args:
        values: Answers; missing ones are dropped (they are not a category of their own).
        base: Logarithm base (2 gives bits).

    Returns:
        The entropy; 0.0 when all present answers agree, NaN when none is present.
    """
    counts = np.array(list(Counter(present(values)).values()), dtype=float)
    if counts.size == 0:
        return math.nan
    p = counts / counts.sum()
    h = float(-(p * np.log(p)).sum() / math.log(base))
    return h + 0.0  # turn -0.0 into 0.0


@dataclass(frozen=True)
class Rate:
    """A count over a denominator, with how many items were excluded as missing.

    Attributes:
        count: Items with the property.
        total: Items the property could be decided for (the denominator).
        excluded: Items left out because an answer they need is missing or undefined.
    """

    count: int
    total: int
    excluded: int = 0

    @property
    def value(self) -> float:
        """``count / total``, NaN when ``total`` is 0."""
        return self.count / self.total if self.total else math.nan


def rate_of(flags: Sequence[bool | None]) -> Rate:
    """Rate of True among decided flags; None flags count as excluded."""
    decided = [f for f in flags if f is not None]
    return Rate(
        count=sum(bool(f) for f in decided),
        total=len(decided),
        excluded=len(flags) - len(decided),
    )


def as_key(value: Hashable) -> Hashable:
    """Normalise a numpy scalar answer to a plain Python value for dict keys and output."""
    if isinstance(value, np.generic):
        return value.item()
    return value
