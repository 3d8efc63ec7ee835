"""Filters resolved in memory: metadata columns that turn a ``SearchFilter`` into the admitted rows.

Why: evaluating a filter in SQL parses every chunk's JSON metadata on every query. At 100k chunks
a one-path filter cost ~100 ms that way, twice per hybrid search. The embedded store instead keeps,
beside its vector matrix and BM25 index, one column per metadata key that a filter has named (and
the access groups), loaded once per snapshot of the file. A condition is then a dictionary lookup
(``eq``, ``in``, ``ne``) or a binary search (ranges): microseconds for a selective filter, a
boolean mask of the chunk count for a broad one.

Comparisons are ``SearchFilter.admits``'s (``filters._compare``): numbers as numbers, everything
else as text (``str(value)``), a boolean equal only to itself, 1 or 0, lists matching when any
element does, ``ne`` the complement of ``eq``. As in the SQL backends, a JSON null, object or
nested list never matches.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stanchion.core.filters import Condition, Scalar, SearchFilter

Rows = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
_MEMO = 64  # filters remembered per snapshot: a server repeats its tenant and group filters


class StaleSnapshot(Exception):
    """The chunks changed since the index was loaded: reload it (never raised to callers)."""


class _Sorted:
    """Values in ascending order with the row of each, for range conditions."""

    def __init__(self, values: list[str], rows: list[int]) -> None:
        order = sorted(range(len(values)), key=values.__getitem__)
        self.values = [values[i] for i in order]
        self.rows = np.asarray([rows[i] for i in order], dtype=np.int64)

    def where(self, op: str, want: str) -> Rows:
        lo, hi = 0, len(self.values)
        if op == "gt":
            lo = bisect.bisect_right(self.values, want)
        elif op == "gte":
            lo = bisect.bisect_left(self.values, want)
        elif op == "lt":
            hi = bisect.bisect_left(self.values, want)
        elif op == "lte":
            hi = bisect.bisect_right(self.values, want)
        return self.rows[lo:hi]


class _Groups:
    """Value -> rows, with the row arrays made on first use."""

    def __init__(self) -> None:
        self._lists: dict[object, list[int]] = {}
        self._arrays: dict[object, Rows] = {}

    def add(self, value: object, row: int) -> None:
        self._lists.setdefault(value, []).append(row)

    def get(self, value: object) -> Rows:
        found = self._arrays.get(value)
        if found is None:
            found = np.asarray(self._lists.get(value, ()), dtype=np.int64)
            self._arrays[value] = found
        return found


class Column:
    """One metadata key over every row: its values split by JSON type, indexed for filters."""

    def __init__(self, values: Iterable[tuple[int, object]]) -> None:
        texts: list[str] = []
        text_rows: list[int] = []
        numbers: list[float] = []
        number_texts: list[str] = []  # str() of each number, as Python compares it with text
        number_rows: list[int] = []
        self._text = _Groups()
        self._number = _Groups()
        self._number_text = _Groups()
        self._boolean = _Groups()
        for row, value in values:
            for item in value if isinstance(value, list) else (value,):
                if isinstance(item, bool):
                    self._boolean.add(item, row)
                elif isinstance(item, int | float):
                    numbers.append(_float(item))
                    number_texts.append(str(item))
                    number_rows.append(row)
                    self._number.add(_float(item), row)
                    self._number_text.add(str(item), row)
                elif isinstance(item, str):
                    texts.append(item)
                    text_rows.append(row)
                    self._text.add(item, row)
        self._text_sorted = _Sorted(texts, text_rows)
        self._number_text_sorted = _Sorted(number_texts, number_rows)
        order = np.argsort(np.asarray(numbers, dtype=np.float64), kind="stable")
        self._numbers = np.asarray(numbers, dtype=np.float64)[order]
        self._number_rows = np.asarray(number_rows, dtype=np.int64)[order]

    def equal(self, want: Scalar) -> list[Rows]:
        """Rows holding a value that ``filters._compare("eq", value, want)`` accepts."""
        if isinstance(want, bool):
            return [self._boolean.get(want), self._number.get(float(want))]
        if isinstance(want, int | float):
            found = [self._number.get(float(want)), self._text.get(str(want))]
            if float(want) in (0.0, 1.0):
                found.append(self._boolean.get(float(want) == 1.0))
            return found
        return [self._text.get(want), self._number_text.get(want)]

    def ordered(self, op: str, want: Scalar) -> list[Rows]:
        """Rows holding a value that ``filters._compare(op, value, want)`` accepts, for a range op."""
        if isinstance(want, bool):
            return []  # a boolean has no order
        if isinstance(want, int | float):
            if op in ("gt", "lte"):
                cut = int(np.searchsorted(self._numbers, float(want), side="right"))
            else:
                cut = int(np.searchsorted(self._numbers, float(want), side="left"))
            numeric = self._number_rows[cut:] if op in ("gt", "gte") else self._number_rows[:cut]
            return [numeric, self._text_sorted.where(op, str(want))]
        return [self._text_sorted.where(op, want), self._number_text_sorted.where(op, want)]


@dataclass
class FilterIndex:
    """The admitted rows of any filter over one snapshot of the chunks.

    ``rowids`` are the chunks' rowids in ascending order; rows are positions in it. ``column``
    reads one metadata key as (rowid, value) pairs, for the chunks that have it, from the same
    snapshot; it is called once per key, on first use.
    """

    rowids: Rows
    public: Mask
    group_rows: dict[str, Rows]
    column: Callable[[str], list[tuple[int, object]]]

    def __post_init__(self) -> None:
        self._columns: dict[str, Column] = {}
        self._memo: dict[object, Rows] = {}

    @classmethod
    def build(
        cls,
        rowids: Iterable[int],
        acl: Iterable[tuple[int, str]],
        column: Callable[[str], list[tuple[int, object]]],
    ) -> FilterIndex:
        """From every chunk's rowid (any order) and the (rowid, group) pairs of their access groups."""
        ordered = np.sort(np.fromiter(rowids, dtype=np.int64))
        pairs = list(acl)
        rows = np.searchsorted(ordered, np.fromiter((r for r, _ in pairs), dtype=np.int64, count=len(pairs)))
        public = np.ones(len(ordered), dtype=bool)
        groups: dict[str, list[int]] = {}
        for row, (rowid, name) in zip(rows.tolist(), pairs, strict=True):
            if row < len(ordered) and ordered[row] == rowid:  # else the pair came after the rowids
                public[row] = False
                groups.setdefault(name, []).append(row)
        members = {name: np.asarray(found, dtype=np.int64) for name, found in groups.items()}
        return cls(ordered, public, members, column)

    def admitted(self, where: SearchFilter) -> Rows:
        """Rowids (ascending) of the chunks ``where`` admits."""
        key = filter_key(where)
        found = self._memo.get(key)
        if found is None:
            found = self.rowids[self.mask(where)]
            if len(self._memo) >= _MEMO:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = found
        return found

    def mask(self, where: SearchFilter) -> Mask:
        mask = np.ones(len(self.rowids), dtype=bool)
        if where.groups is not None:
            visible = self.public.copy()
            for name in where.groups:
                visible[self.group_rows.get(name, _NONE)] = True
            mask &= visible
        for cond in where.conditions:
            mask &= self._holds(cond)
        return mask

    def _holds(self, cond: Condition) -> Mask:
        column = self._columns.get(cond.key)
        if column is None:
            pairs = self.column(cond.key)
            rowids = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
            rows = np.searchsorted(self.rowids, rowids)
            if len(rows) and (rows[-1] >= len(self.rowids) or not np.array_equal(self.rowids[rows], rowids)):
                raise StaleSnapshot(f"the chunks changed while reading the metadata key {cond.key!r}")
            column = Column(zip(rows.tolist(), (p[1] for p in pairs), strict=True))
            self._columns[cond.key] = column
        wanted = cond.value if isinstance(cond.value, tuple) else (cond.value,)
        parts: list[Rows] = []
        for value in wanted:
            if cond.op in ("eq", "in", "ne"):
                parts += column.equal(value)
            else:
                parts += column.ordered(cond.op, value)
        mask = np.zeros(len(self.rowids), dtype=bool)
        for rows in parts:
            mask[rows] = True
        return ~mask if cond.op == "ne" else mask


_NONE = np.zeros(0, dtype=np.int64)


def positions(target: Rows, admitted: Rows) -> Rows:
    """Positions in ``target`` (ascending rowids) of the ``admitted`` rowids (ascending) it holds."""
    if len(target) == len(admitted) and np.array_equal(target, admitted):
        return np.arange(len(target), dtype=np.int64)
    at = np.searchsorted(target, admitted)
    keep = at < len(target)
    at, admitted = at[keep], admitted[keep]
    found: Rows = at[target[at] == admitted]
    return found


def filter_key(where: SearchFilter) -> object:
    """``where`` with each value's type: ``1``, ``1.0`` and ``True`` are equal in Python, not here."""
    conditions = tuple(
        (c.key, c.op, tuple((type(v), v) for v in (c.value if isinstance(c.value, tuple) else (c.value,))))
        for c in where.conditions
    )
    return conditions, where.groups


def _float(number: int | float) -> float:
    """A number as a float; an integer too large for one is infinite (as SQL reads it), so one
    tenant's huge value cannot break another tenant's filter on the key."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf
