"""Metadata filters and the caller's access groups, applied inside every search.

A filter is a conjunction of conditions on chunk metadata. Values compare by type: numbers as
numbers, everything else as strings, which orders ISO 8601 dates correctly. On a list-valued key
(``participants``) ``eq`` and ``in`` mean "contains".

Every condition is checked when it is made, so no store ever sees one it cannot run: a key of
letters, digits and ``_ . -``; at least one value; numbers that are finite, integers within 64
bits; text that a store can hold (``types.unstorable``). A bad one is a ``SearchError`` naming the key and the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from stanchion.errors import SearchError
from stanchion.request_context import RequestContext
from stanchion.types import TENANT_KEY, unstorable

Op = Literal["eq", "ne", "in", "gt", "gte", "lt", "lte"]
Scalar = str | int | float | bool
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_EXPR = re.compile(r"^\s*([^!<>=\s]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")
_OPS: dict[str, Op] = {"=": "eq", "!=": "ne", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
_INT64 = range(-(2**63), 2**63)


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    op: Op
    value: Scalar | tuple[Scalar, ...]

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key):
            raise SearchError(
                f"filter key {_show(self.key)} is not a valid metadata key (letters, digits, _ . -)"
            )
        if self.op == "in" and not isinstance(self.value, tuple):
            raise SearchError(f"filter {self.key}: 'in' needs a list of values")
        if self.op == "in" and not self.value:
            raise SearchError(f"filter {self.key}: give at least one value (key=a,b matches any of them)")
        if self.op in ("gt", "gte", "lt", "lte") and not isinstance(self.value, str | int | float):
            raise SearchError(f"filter {self.key}: a range needs a number or an ISO date")
        for value in self.value if isinstance(self.value, tuple) else (self.value,):
            if problem := _unusable(value):
                raise SearchError(f"filter {self.key}: the value {_show(value)} {problem}")


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
    """``true``/``false``, then an integer, then a number written with digits, else the text."""
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
    except ValueError:
        return raw
    if not any(c.isdigit() for c in raw):
        return raw  # ``nan``, ``inf`` and ``infinity`` are words
    if not math.isfinite(number):
        raise SearchError(f"the number {_show(raw)} is out of range: numbers must be finite")
    return number


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
    listed = op == "eq" and "," in raw
    try:
        values = (
            tuple(parse_value(v.strip()) for v in raw.split(",") if v.strip())
            if listed
            else (parse_value(raw),)
        )
    except SearchError as exc:
        raise SearchError(f"filter {key}: {exc}") from None
    return Condition(key, "in", values) if listed else Condition(key, op, values[0])


def build_filter(
    exprs: Sequence[str] = (), *, groups: Sequence[str] | None = None, extra: Sequence[Condition] = ()
) -> SearchFilter:
    conditions = tuple(parse_condition(e) for e in exprs) + tuple(extra)
    return SearchFilter(conditions, None if groups is None else frozenset(groups))


def caller_filter(context: RequestContext, exprs: Sequence[str] = ()) -> SearchFilter:
    """What ``context``'s caller may search: its filters AND its tenant, within its groups unless
    it administers the tenant (scope ``admin``). The one rule for the server's searches and the
    tools', so a tool a model calls sees no more than its caller would."""
    tenant = Condition(TENANT_KEY, "eq", context.tenant)
    groups = None if "admin" in context.scopes else context.groups
    return SearchFilter((*build_filter(exprs).conditions, tenant), groups)


def _unusable(value: Scalar) -> str:
    """Why no store can compare with ``value``, or "" when one can."""
    if isinstance(value, bool):
        return ""
    if isinstance(value, int) and value not in _INT64:
        return "is out of range: integers must fit in 64 bits"
    if isinstance(value, float) and not math.isfinite(value):
        return "is out of range: numbers must be finite"
    return unstorable(value) if isinstance(value, str) else ""


def _show(value: object) -> str:
    """``value`` quoted for an error message, at most about 40 characters of it."""
    if isinstance(value, int) and value.bit_length() > 4096:
        return "an integer of many digits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
