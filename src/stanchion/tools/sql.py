"""``sql``: read-only queries against one database the spec names, SQLite or PostgreSQL.

The model is offered the allowed tables' columns and types in the tool's description, writes one
SELECT, and reads the rows back as a small table (at most ``max_rows`` rows and ``max_chars``
characters, saying when it was cut). Read-only is enforced in depth: the statement check
(``sql_check.py``) refuses anything but one SELECT with words a model can act on; behind it the
engine holds on its own (SQLite: read-only file, ``query_only``, an authorizer; PostgreSQL: a
read-only transaction, a plan check of the relations read, the role's grants). A spec's
``tenant_column`` keeps each caller to its tenant's rows: by views and the authorizer on SQLite, by
row-level security on PostgreSQL (``sql_postgres.py`` checks that it is on).
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stanchion.errors import SpecError, ToolError
from stanchion.request_context import RequestContext
from stanchion.retrieve.search import Retriever
from stanchion.tools.base import ToolResult, parse_arguments
from stanchion.tools.sql_check import QueryRefused, check_query
from stanchion.tools.sql_types import VALUE_CHARS, Backend, Rows
from stanchion.types import ToolSpec

__all__ = ["SqlOptions", "SqlTool", "build", "render"]

_CELL_CHARS = VALUE_CHARS


class SqlArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(
        min_length=1,
        max_length=8000,
        description="one read-only SQL query: SELECT ... or WITH ... SELECT ...",
    )


class SqlOptions(BaseModel):
    """The ``sql`` tool's options in the spec. Exactly one of ``database`` and ``dsn_env``."""

    model_config = ConfigDict(extra="forbid")

    database: str | None = Field(None, description="SQLite file, relative to the spec's folder")
    dsn_env: str | None = Field(
        None, description="PostgreSQL: the environment variable holding the DSN (never the DSN itself)"
    )
    schema_name: str = Field("public", alias="schema", description="PostgreSQL schema of the tables")
    tables: list[str] | None = Field(None, description="the tables the model may read (default: all)")
    tenant_column: str | None = Field(
        None, description="column holding each row's tenant: a caller sees only its tenant's rows"
    )
    description: str = Field("", description="what the data is, told to the model before the schema")
    max_rows: int = Field(200, ge=1, le=10_000, description="rows returned at most; the result says when cut")
    timeout_s: float = Field(5.0, gt=0, le=300, description="time limit of one query")
    max_chars: int = Field(20_000, ge=500, le=1_000_000, description="characters of the result at most")

    @model_validator(mode="after")
    def _one_database(self) -> SqlOptions:
        if (self.database is None) == (self.dsn_env is None):
            raise ValueError(
                "name the database: database: <SQLite file> or dsn_env: <variable holding a PostgreSQL DSN>, not both"
            )
        return self


class SqlTool:
    """Runs one checked query for the caller (its tenant, where the options name a tenant column)."""

    def __init__(self, name: str, backend: Backend, options: SqlOptions) -> None:
        self._backend = backend
        self._options = options
        dialect = "SQLite" if backend.dialect == "sqlite" else "PostgreSQL"
        schema = "; ".join(t.text() for t in backend.tables) or "none"
        lead = options.description.strip() or "Query a database."
        self.spec = ToolSpec(
            name,
            f"{lead} Runs one read-only {dialect} SELECT and returns at most {options.max_rows} rows. "
            f"Tables: {schema}.",
            SqlArguments.model_json_schema(),
        )

    def call(self, arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        args = parse_arguments(self.spec.name, SqlArguments, arguments)
        try:
            check_query(args.query, "sqlite" if self._backend.dialect == "sqlite" else "postgresql")
        except QueryRefused as exc:
            raise ToolError(str(exc), tool=self.spec.name) from None
        rows = self._backend.run(
            args.query,
            tenant=context.tenant,
            max_rows=self._options.max_rows,
            timeout_s=self._options.timeout_s,
        )
        return render(rows, max_chars=self._options.max_chars)


def render(result: Rows, *, max_chars: int) -> ToolResult:
    """The rows as ``a | b`` lines under a header, cut to ``max_chars``; ``data`` holds the same
    as JSON (columns, rows, row_count, truncated)."""
    lines = [" | ".join(result.columns)]
    size = len(lines[0])
    kept: list[list[Any]] = []
    truncated = result.truncated
    for row in result.rows:
        values = [_json_value(v) for v in row]
        line = " | ".join(_cell(v) for v in values)
        if size + len(line) + 1 > max_chars:
            truncated = True
            break
        lines.append(line)
        size += len(line) + 1
        kept.append(values)
    count = f"{len(kept)} row{'s' if len(kept) != 1 else ''}"
    if truncated:
        count += (
            " shown; more rows matched (cut at the tool's limit): narrow the query, aggregate, or add LIMIT"
        )
    content = "\n".join([*lines, f"({count})"])
    data = {"columns": result.columns, "rows": kept, "row_count": len(kept), "truncated": truncated}
    return ToolResult(content, data)


def _json_value(value: Any) -> Any:
    """``value`` as JSON a model can read: long text cut to ``_CELL_CHARS``, NaN and infinity as text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.date | datetime.time | datetime.datetime):
        return value.isoformat()
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return _cut(str(value))
    return value if len(text) <= _CELL_CHARS else _cut(text)


def _cut(text: str) -> str:
    return text if len(text) <= _CELL_CHARS else text[:_CELL_CHARS] + "…"


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("\n", " ")


def build(
    name: str,
    options: Mapping[str, Any],
    *,
    retriever: Callable[[], Retriever],
    base_dir: Path | None = None,
) -> SqlTool:
    """The ``stanchion.tools`` entry point. ``database`` resolves against ``base_dir`` (the spec's
    folder) when it is relative; without ``base_dir`` it must be absolute (or ``${VAR}``)."""
    chosen = SqlOptions.model_validate(dict(options))
    key = f"tools.{name}.options"
    backend: Backend
    if chosen.database is not None:
        from stanchion.tools.sql_sqlite import SqliteBackend

        path = Path(chosen.database).expanduser()
        if not path.is_absolute():
            if base_dir is None:
                raise SpecError(
                    f"{key}.database: {chosen.database!r} is relative and this tool was built without the "
                    "spec's folder; write an absolute path (or ${VAR})",
                    key_path=f"{key}.database",
                )
            path = base_dir / path
        backend = SqliteBackend(name, path, tables=chosen.tables, tenant_column=chosen.tenant_column)
    else:
        from stanchion.tools.sql_postgres import PostgresBackend

        dsn = os.environ.get(chosen.dsn_env or "")
        if not dsn:
            raise SpecError(
                f"{key}.dsn_env: environment variable {chosen.dsn_env} is not set (export the PostgreSQL DSN there)",
                key_path=f"{key}.dsn_env",
            )
        backend = PostgresBackend(
            name, dsn, schema=chosen.schema_name, tables=chosen.tables, tenant_column=chosen.tenant_column
        )
    return SqlTool(name, backend, chosen)
