"""What the ``sql`` tool's backends share: the schema they offer and the rows they return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["VALUE_CHARS", "Backend", "Column", "Rows", "Table"]

VALUE_CHARS = 500  # one value, as the model reads it (and in data): longer ones are cut with …


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Table:
    """A table as the model sees it (a tenant column left out)."""

    name: str
    columns: tuple[Column, ...]

    def text(self) -> str:
        """Compact, for the tool's description: ``tickets(id INTEGER, subject TEXT)``."""
        return f"{self.name}({', '.join(f'{c.name} {c.type}'.strip() for c in self.columns)})"


@dataclass(frozen=True, slots=True)
class Rows:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows matched than max_rows


class Backend(Protocol):
    """One database. ``run`` raises ToolError for anything the model should read and correct."""

    @property
    def dialect(self) -> str: ...

    @property
    def tables(self) -> tuple[Table, ...]: ...

    def run(self, query: str, *, tenant: str, max_rows: int, timeout_s: float) -> Rows: ...
