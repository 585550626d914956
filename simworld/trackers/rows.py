"""Rows of tracker frames: tidying cells to a schema, frames kept in groups, event cursors."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import pyarrow as pa

from simworld.measures import is_missing
from simworld.support.events import Event

Row = dict[str, Any]


class Cursor:
    """How far a tracker has read each of the store's append-only event lists."""

    def __init__(self) -> None:
        self._at: dict[int, int] = {}

    def new(self, events: list[Event]) -> list[Event]:
        """The events appended to ``events`` since the last call with the same list."""
        start = self._at.get(id(events), 0)
        self._at[id(events)] = len(events)
        return events[start:]


def _converter(type_: pa.DataType) -> Callable[[Any], Any]:
    """A cell (not None) → the column's Python type, or None when missing (see :func:`clean`).

    Cells already of the column's type skip the missing-value test (only floats can be NaN).
    """
    if pa.types.is_integer(type_):
        return _int_cell
    if pa.types.is_floating(type_):
        return _float_cell
    if pa.types.is_boolean(type_):
        return _bool_cell
    if pa.types.is_string(type_):
        return _string_cell
    return _same_cell


def _int_cell(value: Any) -> int | None:
    if type(value) is int:
        return value
    return None if is_missing(value) else int(value)


def _float_cell(value: Any) -> float | None:
    if type(value) is not float and is_missing(value):
        return None
    f = float(value)
    return None if math.isnan(f) else f


def _bool_cell(value: Any) -> bool | None:
    if type(value) is bool:
        return value
    return None if is_missing(value) else bool(value)


def _string_cell(value: Any) -> str | None:
    if type(value) is str:
        return value
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _same_cell(value: Any) -> Any:
    return None if is_missing(value) else value


def clean(value: Any, type_: pa.DataType) -> Any:
    """One cell for a parquet row: missing → None, else coerced to the column's type."""
    return None if value is None else _converter(type_)(value)


class Tidier:
    """Makes rows tidy for one schema: its columns, in its order, cells :func:`clean`-ed."""

    def __init__(self, schema: pa.Schema) -> None:
        self._columns = [(f.name, _converter(f.type)) for f in schema]

    def row(self, row: Row) -> Row:
        """One tidy row."""
        out = {}
        for name, convert in self._columns:
            value = row.get(name)
            out[name] = None if value is None else convert(value)
        return out

    def rows(self, rows: Iterable[Row]) -> list[Row]:
        """Tidy rows, in order."""
        return [self.row(r) for r in rows]


def tidy(rows: list[Row], schema: pa.Schema) -> list[Row]:
    """Rows restricted to the schema's columns, in its order, with cells :func:`clean`-ed."""
    return Tidier(schema).rows(rows)


class RowGroups:
    """A frame held as groups of tidy rows; only changed groups are recomputed.

    :meth:`rows` joins the groups in key order (``ordered=True``) or in the order they were
    first put, and hands back the same list until a group changes.
    """

    def __init__(self, *, ordered: bool) -> None:
        self._ordered = ordered
        # any hashable key; sortable ones when ordered
        self._groups: dict[Any, list[Row]] = {}
        self._rows: list[Row] = []
        self._changed = False

    def put(self, key: Hashable, rows: list[Row]) -> None:
        """Set (or replace) a group's rows."""
        self._groups[key] = rows
        self._changed = True

    def drop(self, key: Hashable) -> None:
        """Remove a group, if present."""
        if self._groups.pop(key, None) is not None:
            self._changed = True

    def touch(self) -> None:
        """Note that a group's list was changed in place."""
        self._changed = True

    def rows(self) -> list[Row]:
        """Every row, group after group."""
        if self._changed:
            keys = sorted(self._groups) if self._ordered else self._groups
            self._rows = [r for k in keys for r in self._groups[k]]
            self._changed = False
        return self._rows


__all__ = ["Cursor", "Event", "Row", "RowGroups", "Tidier", "clean", "tidy"]
