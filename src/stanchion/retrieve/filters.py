"""Metadata filters and the caller's access groups, applied inside every search.

A filter is a conjunction of conditions on chunk metadata. Values compare by type: numbers as
numbers, everything else as strings, which orders ISO 8601 dates correctly. On a list-valued key
(``participants``) ``eq`` and ``in`` mean "contains".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from stanchion.errors import SearchError

Op = Literal["eq", "ne", "in", "gt", "gte", "lt", "lte"]
Scalar = str | int | float | bool
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_EXPR = re.compile(r"^\s*([^!<>=\s]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")
_OPS: dict[str, Op] = {"=": "eq", "!=": "ne", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    op: Op
    value: Scalar | tuple[Scalar, ...]

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise SearchError(f"filter key {self.key!r} is not a valid metadata key (letters, digits, _ . -)")
        if self.op == "in" and not isinstance(self.value, tuple):
            raise SearchError(f"filter {self.key}: 'in' needs a list of values")
        if self.op in ("gt", "gte", "lt", "lte") and not isinstance(self.value, str | int | float):
            raise SearchError(f"filter {self.key}: a range needs a number or an ISO date")


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """What a search may return: metadata conditions (AND) and the caller's access groups.

    ``groups=None`` means no access restriction (an administrator or the embedded single user);
    otherwise a chunk is visible when it has no access groups (public) or shares one with the caller.
    """

    conditions: tuple[Condition, ...] = ()
    groups: frozenset[str] | None = None

    @property
    def is_empty(self) -> bool:
        return not self.conditions and self.groups is None

    def admits(self, metadata: dict[str, object], access_groups: Sequence[str]) -> bool:
        """The same rule in Python, used by tests and by backends as a final guard."""
        if self.groups is not None and access_groups and not self.groups.intersection(access_groups):
            return False
        return all(_holds(c, metadata.get(c.key)) for c in self.conditions)


def parse_value(raw: str) -> Scalar:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def parse_condition(expr: str) -> Condition:
    """``key=value``, ``key=a,b`` (any of), ``key!=v``, ``key>=v``, ``key<v`` ... -> Condition."""
    match = _EXPR.match(expr)
    if not match or not match.group(3):
        raise SearchError(
            f"cannot parse filter {expr!r}; use key=value, key=a,b (any of), key!=value, "
            "key>=value, key<=value, key>value or key<value"
        )
    key, op_text, raw = match.groups()
    op = _OPS[op_text]
    if op == "eq" and "," in raw:
        return Condition(key, "in", tuple(parse_value(v.strip()) for v in raw.split(",") if v.strip()))
    return Condition(key, op, parse_value(raw))


def build_filter(
    exprs: Sequence[str] = (), *, groups: Sequence[str] | None = None, extra: Sequence[Condition] = ()
) -> SearchFilter:
    conditions = tuple(parse_condition(e) for e in exprs) + tuple(extra)
    return SearchFilter(conditions, None if groups is None else frozenset(groups))


def _compare(op: Op, have: object, want: Scalar) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return (op == "eq" and have == want) or (op == "ne" and have != want)
    if isinstance(want, int | float) and isinstance(have, int | float):
        return _ordered(op, float(have), float(want))
    return _ordered(op, str(have), str(want))


_T = TypeVar("_T", float, str)


def _ordered(op: Op, a: _T, b: _T) -> bool:
    return {"eq": a == b, "ne": a != b, "gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}.get(op, False)


def _holds(cond: Condition, have: object) -> bool:
    wanted = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    values = have if isinstance(have, list) else [have]
    if cond.op == "ne":
        return all(v is None or _compare("ne", v, wanted[0]) for v in values)
    op: Op = "eq" if cond.op == "in" else cond.op
    return any(v is not None and _compare(op, v, w) for v in values for w in wanted)
