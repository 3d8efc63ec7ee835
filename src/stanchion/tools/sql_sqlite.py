"""The ``sql`` tool on a SQLite file: the engine itself refuses anything but reads of the allowed
tables, and a caller sees only its tenant's rows.

Every call opens the file afresh, read-only (``mode=ro`` URI), and then:

- with a ``tenant_column``, builds two TEMP views per table: ``_t<random>_tickets`` selects the
  caller's rows of ``main.tickets`` (the tenant as a quoted literal), and ``tickets``, which shadows
  the table for unqualified names, selects from it without the tenant column. The random name is
  new on every connection and the model never sees it;
- sets ``PRAGMA query_only`` and a limit on the length of any value (``SQLITE_LIMIT_LENGTH``);
- installs an authorizer that allows SELECT, reads of the views, reads of ``main``'s allowed
  tables only from inside the random-named view (or, without tenants, directly), recursive CTEs
  and an allow-list of pure functions, and denies everything else: writes, PRAGMA, ATTACH,
  transactions, ``sqlite_master``, pragma table functions. SQLite reports the innermost view *or
  CTE* a read comes from, which is why the inner view's name must be unguessable: a CTE named
  ``tickets`` over ``main.tickets`` reads as ``tickets``, not as the random name, and is denied;
- interrupts the query from a progress handler once the time limit has passed.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from stanchion.errors import ToolError
from stanchion.tools.sql_types import Column, Rows, Table

__all__ = ["SqliteBackend"]

_MAX_VALUE_BYTES = 1_000_000  # any string or blob a query builds (printf('%.*c', 1e9, 'x'))
_PROGRESS_STEPS = 1_000  # VM instructions between two looks at the clock

_FUNCTIONS = frozenset(
    {
        "abs", "avg", "char", "coalesce", "count", "date", "datetime", "glob", "group_concat", "hex",
        "ifnull", "iif", "instr", "julianday", "length", "like", "likely", "unlikely", "likelihood",
        "lower", "ltrim", "max", "min", "nullif", "printf", "format", "quote", "replace", "round",
        "rtrim", "sign", "strftime", "string_agg", "substr", "substring", "sum", "time", "total",
        "trim", "typeof", "unicode", "unixepoch", "upper", "concat", "concat_ws", "timediff",
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
        "first_value", "last_value", "nth_value", "ceil", "ceiling", "floor", "ln", "log", "log10",
        "log2", "exp", "pow", "power", "sqrt", "mod", "pi", "json", "json_extract", "json_array",
        "json_object", "json_type", "json_valid", "json_array_length", "->", "->>", "random",
        "sqlite_version",
    }
)  # fmt: skip


class SqliteBackend:
    """Reads ``path`` for the tool ``tool``; ``tables`` None means every table of the file."""

    dialect = "sqlite"

    def __init__(
        self,
        tool: str,
        path: Path,
        *,
        tables: list[str] | None,
        tenant_column: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tool = tool
        self._path = path
        self._tenant_column = tenant_column
        self._clock = clock
        self.tables = _read_schema(tool, path, tables, tenant_column)

    def run(self, query: str, *, tenant: str, max_rows: int, timeout_s: float) -> Rows:
        with closing(_connect(self._path)) as conn:
            conn.execute("PRAGMA temp_store = MEMORY")  # the views' TEMP schema: no file on disk
            views = self._make_views(conn, tenant) if self._tenant_column else {}
            conn.execute("PRAGMA query_only = ON")
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
            conn.set_authorizer(self._authorizer(views))
            deadline = self._clock() + timeout_s
            conn.set_progress_handler(lambda: int(self._clock() > deadline), _PROGRESS_STEPS)
            try:
                cursor = conn.execute(query)
                rows = cursor.fetchmany(max_rows + 1)
            except sqlite3.OperationalError as exc:
                if str(exc) == "interrupted":
                    raise ToolError(
                        f"the query ran past the time limit ({timeout_s:g} s); narrow it or add a LIMIT",
                        tool=self._tool,
                    ) from None
                raise ToolError(_wording(exc, views), tool=self._tool) from None
            except sqlite3.Error as exc:  # DatabaseError (not authorized), ProgrammingError (bindings)
                raise ToolError(_wording(exc, views), tool=self._tool) from None
            columns = [d[0] for d in cursor.description or ()]
        return Rows(columns, [tuple(r) for r in rows[:max_rows]], truncated=len(rows) > max_rows)

    def _make_views(self, conn: sqlite3.Connection, tenant: str) -> dict[str, str]:
        """The views for ``tenant``: the random-named inner view's name by table."""
        prefix = f"_t{secrets.token_hex(8)}_"
        inner: dict[str, str] = {}
        tenant_literal = "'" + tenant.replace("'", "''") + "'"
        for table in self.tables:
            hidden = _quote(prefix + table.name)
            names = ", ".join(_quote(c.name) for c in table.columns)
            conn.execute(
                f"CREATE TEMP VIEW {hidden} AS SELECT {names} FROM main.{_quote(table.name)} "
                f"WHERE {_quote(self._tenant_column or '')} = {tenant_literal}"
            )
            conn.execute(f"CREATE TEMP VIEW {_quote(table.name)} AS SELECT {names} FROM {hidden}")
            inner[table.name] = prefix + table.name
        return inner

    def _authorizer(
        self, views: dict[str, str]
    ) -> Callable[[int, str | None, str | None, str | None, str | None], int]:
        allowed = {t.name for t in self.tables}
        hidden = set(views.values())
        tenants = self._tenant_column is not None

        def decide(action: int, arg1: str | None, arg2: str | None, db: str | None, inner: str | None) -> int:
            if action == sqlite3.SQLITE_SELECT or action == sqlite3.SQLITE_RECURSIVE:
                return sqlite3.SQLITE_OK
            if action == sqlite3.SQLITE_FUNCTION:
                return sqlite3.SQLITE_OK if (arg2 or "").lower() in _FUNCTIONS else sqlite3.SQLITE_DENY
            if action == sqlite3.SQLITE_READ:
                if db is None:  # a CTE or subquery of the query itself, no table of any database
                    return sqlite3.SQLITE_OK
                if db == "temp" and tenants and (arg1 in allowed or arg1 in hidden):
                    return sqlite3.SQLITE_OK
                # With tenants, main's tables only from inside their own random-named view.
                direct = not tenants or (inner in hidden and inner == views.get(arg1 or ""))
                if db == "main" and arg1 in allowed and direct:
                    return sqlite3.SQLITE_OK
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_DENY

        return decide


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)


def _read_schema(
    tool: str, path: Path, tables: list[str] | None, tenant_column: str | None
) -> tuple[Table, ...]:
    from stanchion.errors import SpecError

    key = f"tools.{tool}.options"
    if not path.is_file():
        raise SpecError(f"{key}.database: no SQLite file at {path}", key_path=f"{key}.database")
    try:
        with closing(_connect(path)) as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY name"
                )
            ]
            columns = {
                name: [
                    (r[1], r[2] or "") for r in conn.execute("SELECT * FROM pragma_table_info(?)", (name,))
                ]
                for name in names
            }
    except sqlite3.DatabaseError as exc:
        raise SpecError(
            f"{key}.database: {path} is not a readable SQLite file ({exc})", key_path=f"{key}.database"
        ) from None
    chosen = names if tables is None else tables
    unknown = [t for t in chosen if t not in columns]
    if unknown:
        raise SpecError(
            f"{key}.tables: no table {', '.join(unknown)} in {path.name} (tables: {', '.join(names) or 'none'})",
            key_path=f"{key}.tables",
        )
    return tuple(_table(key, name, columns[name], tenant_column) for name in chosen)


def _table(key: str, name: str, columns: list[tuple[str, str]], tenant_column: str | None) -> Table:
    from stanchion.errors import SpecError

    if tenant_column is not None and tenant_column not in {c for c, _ in columns}:
        raise SpecError(
            f"{key}.tenant_column: table {name} has no column {tenant_column!r}; leave the table out "
            "of tables: or add the column",
            key_path=f"{key}.tenant_column",
        )
    return Table(name, tuple(Column(c, t) for c, t in columns if c != tenant_column))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _wording(exc: sqlite3.Error, views: dict[str, str]) -> str:
    """SQLite's message, with the random view names put back to the table names the model knows."""
    text = str(exc)
    for table, hidden in views.items():
        text = text.replace(hidden, table)
    if text.startswith("vtable constructor failed"):
        return f"{text}: table-valued functions (json_each, json_tree, pragma_*) are not available here"
    if text in ("not authorized", "authorization denied") or "prohibited" in text:
        return (
            f"{text}: this tool reads only the tables it lists, with SELECT and plain functions "
            "(no PRAGMA, ATTACH, sqlite_master or writes)"
        )
    return text
