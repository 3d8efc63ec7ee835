"""The ``sql`` tool on PostgreSQL: a read-only transaction, a time limit, and a check of the plan.

Every call connects with ``default_transaction_read_only=on``, opens a ``READ ONLY`` transaction,
sets ``statement_timeout`` and ``search_path`` (and, with a ``tenant_column``, the setting
``stanchion.tenant`` to the caller's tenant) with ``SET LOCAL`` semantics, and sends the query as
a prepared statement, which PostgreSQL refuses to hold more than one command. Before it runs, the
server's own ``EXPLAIN`` names every relation and table function the plan reads, and anything
outside the allowed tables (``pg_catalog``, ``information_schema``, another schema) is refused.
The transaction is rolled back.

Tenants are kept apart by the database, with row-level security: a policy on each table compares
the tenant column with ``current_setting('stanchion.tenant')``. The tool refuses to start unless
that holds: the role is no superuser and does not bypass RLS, every table has RLS on (forced when
the role owns it), and every permissive SELECT policy reads ``stanchion.tenant``. A query cannot
change the setting: the statement check refuses ``SET`` and ``set_config``, and the plan check
finds ``set_config`` however it is spelt, in the server's own reading of the query.

The DSN lives only in this object; it never appears in an error, a log or a repr.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from stanchion.errors import SpecError, ToolError
from stanchion.tools.sql_check import QueryRefused, forbidden_function, statement_body
from stanchion.tools.sql_types import VALUE_CHARS, Column, Rows, Table

__all__ = ["TENANT_SETTING", "PostgresBackend"]

TENANT_SETTING = "stanchion.tenant"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CONNECT_OPTIONS = "-c default_transaction_read_only=on"
# Types whose values are short (numbers, dates, booleans, uuids): sent as they are; any other is
# cast to text and cut by the server.
_SHORT_TYPES = frozenset({16, 20, 21, 23, 26, 700, 701, 790, 1082, 1083, 1114, 1184, 1186, 1266, 1700, 2950})
# A name before "(": matched only from the start of a word, so a long run of letters (a folded
# constant) is scanned once, not once per letter.
_CALL = re.compile(r"(?<![A-Za-z0-9_$])([A-Za-z_][A-Za-z0-9_$]*)\s*\(")


class PostgresBackend:
    """Reads ``schema``'s tables (``tables`` None: all of them) for the tool ``tool``."""

    dialect = "postgresql"

    def __init__(
        self, tool: str, dsn: str, *, schema: str, tables: list[str] | None, tenant_column: str | None
    ) -> None:
        self._tool = tool
        self._dsn = dsn
        self._key = f"tools.{tool}.options"
        if not _IDENTIFIER.fullmatch(schema):
            raise SpecError(
                f"{self._key}.schema: {schema!r} is not a plain identifier", key_path=f"{self._key}.schema"
            )
        self._schema = schema
        self._tenant_column = tenant_column
        with self._connect() as conn:
            self.tables = self._read_schema(conn, tables)
            if tenant_column is not None:
                self._check_row_security(conn)

    def __repr__(self) -> str:
        return f"PostgresBackend(tool={self._tool!r}, schema={self._schema!r})"

    def run(self, query: str, *, tenant: str, max_rows: int, timeout_s: float) -> Rows:
        try:
            body = statement_body(query, "postgresql")
        except QueryRefused as exc:
            raise ToolError(str(exc), tool=self._tool) from None
        try:
            with self._connect() as conn:
                conn.read_only = True
                with conn.transaction(force_rollback=True):
                    settings = [
                        ("statement_timeout", f"{max(1, int(timeout_s * 1000))}ms"),
                        ("search_path", self._schema),
                    ]
                    if self._tenant_column is not None:
                        settings.append((TENANT_SETTING, tenant))
                    for name, value in settings:
                        conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                    plan = conn.execute(f"EXPLAIN (VERBOSE, FORMAT JSON) {body}", prepare=True).fetchone()
                    self._check_plan(plan[0] if plan else [])
                    columns, rows = self._fetch(conn, body, max_rows + 1)
        except pg_errors.QueryCanceled:
            raise ToolError(
                f"the query ran past the time limit ({timeout_s:g} s); narrow it or add a LIMIT",
                tool=self._tool,
            ) from None
        except psycopg.OperationalError as exc:
            raise ToolError(f"cannot reach the database ({_first_line(exc)})", tool=self._tool) from None
        except psycopg.Error as exc:
            raise ToolError(_first_line(exc), tool=self._tool) from None
        return Rows(columns, [tuple(r) for r in rows[:max_rows]], truncated=len(rows) > max_rows)

    def _fetch(self, conn: psycopg.Connection[Any], body: str, limit: int) -> tuple[list[str], list[Any]]:
        """At most ``limit`` rows, each value of a type that can be long (text, JSON, arrays, ...)
        cut by the server to ``VALUE_CHARS`` + 1 characters: neither a huge result set nor a huge
        value is sent. The columns are learnt first from the query with LIMIT 0."""
        described = list(
            conn.execute(f"SELECT * FROM (\n{body}\n) AS stanchion_q LIMIT 0", prepare=True).description or ()
        )
        aliases = [f"c{n}" for n in range(len(described))]
        outputs = ", ".join(
            alias if d.type_code in _SHORT_TYPES else f"left({alias}::text, {VALUE_CHARS + 1})"
            for alias, d in zip(aliases, described, strict=True)
        )
        named = f"({', '.join(aliases)})" if aliases else ""
        cursor = conn.execute(
            f"SELECT {outputs} FROM (\n{body}\n) AS stanchion_q{named} LIMIT {limit}", prepare=True
        )
        return [d.name for d in described], cursor.fetchall()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._dsn, options=_CONNECT_OPTIONS, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise ToolError(f"cannot reach the database ({_first_line(exc)})", tool=self._tool) from None

    def _check_plan(self, plan: Any) -> None:
        """ToolError naming a relation the plan reads that this tool does not offer, or a function
        on the deny-list anywhere in it (the server's own reading: names resolved, quoting gone)."""
        allowed = {t.name for t in self.tables}
        for node in _nodes(plan):
            relation = node.get("Relation Name")
            if relation is not None and (node.get("Schema") != self._schema or relation not in allowed):
                raise ToolError(
                    f"the query reads {node.get('Schema')}.{relation}, which this tool does not offer "
                    f"(tables: {', '.join(sorted(allowed)) or 'none'})",
                    tool=self._tool,
                )
            for text in _strings(node):
                for name in _CALL.findall(text):
                    if forbidden_function(name.lower(), "postgresql"):
                        raise ToolError(
                            f"the function {name}() is not allowed in this tool's queries", tool=self._tool
                        )

    def _read_schema(self, conn: psycopg.Connection[Any], tables: list[str] | None) -> tuple[Table, ...]:
        found: dict[str, list[tuple[str, str]]] = {}
        for table, column, kind in conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.table_schema = %s AND t.table_type = 'BASE TABLE' ORDER BY c.table_name, c.ordinal_position",
            (self._schema,),
        ):
            found.setdefault(table, []).append((column, kind))
        chosen = sorted(found) if tables is None else tables
        unknown = [t for t in chosen if t not in found]
        if unknown:
            raise SpecError(
                f"{self._key}.tables: no table {', '.join(unknown)} in schema {self._schema} "
                f"(tables: {', '.join(sorted(found)) or 'none'})",
                key_path=f"{self._key}.tables",
            )
        column = self._tenant_column
        for name in chosen:
            if column is not None and column not in {c for c, _ in found[name]}:
                raise SpecError(
                    f"{self._key}.tenant_column: table {name} has no column {column!r}; leave the table out "
                    "of tables: or add the column",
                    key_path=f"{self._key}.tenant_column",
                )
        return tuple(Table(n, tuple(Column(c, k) for c, k in found[n] if c != column)) for n in chosen)

    def _check_row_security(self, conn: psycopg.Connection[Any]) -> None:
        """SpecError unless the database itself keeps tenants apart for this role (see the module)."""
        key = f"{self._key}.tenant_column"
        how = (
            f"ALTER TABLE <t> ENABLE ROW LEVEL SECURITY; CREATE POLICY tenant ON <t> FOR SELECT USING "
            f"({self._tenant_column} = current_setting('{TENANT_SETTING}', true)); connect as a role that "
            "does not own the table (or FORCE ROW LEVEL SECURITY)"
        )
        role = conn.execute(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if role is None or role[0]:
            raise SpecError(
                f"{key}: the role in the DSN is a superuser or bypasses row-level security, so tenants "
                "cannot be kept apart; connect as a read-only role (see README, sql tool)",
                key_path=key,
            )
        for table in self.tables:
            row = conn.execute(
                "SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) = current_user "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                (self._schema, table.name),
            ).fetchone()
            enabled, forced, owner = row if row else (False, False, False)
            policies = conn.execute(
                "SELECT coalesce(qual, '') FROM pg_policies WHERE schemaname = %s AND tablename = %s "
                "AND cmd IN ('SELECT', 'ALL') AND permissive = 'PERMISSIVE'",
                (self._schema, table.name),
            ).fetchall()
            keyed = bool(policies) and all(TENANT_SETTING in qual for (qual,) in policies)
            if not enabled or (owner and not forced) or not keyed:
                raise SpecError(
                    f"{key}: table {table.name} is not kept apart by tenant in the database "
                    f"(row-level security {'on' if enabled else 'off'}"
                    f"{', not forced for its owner' if enabled and owner and not forced else ''}"
                    f"{'' if keyed else ', no policy reading ' + TENANT_SETTING}); {how}",
                    key_path=key,
                )


def _nodes(plan: Any) -> Iterator[dict[str, Any]]:
    """Every plan node in EXPLAIN's JSON, subplans and init plans included."""
    if isinstance(plan, list):
        for item in plan:
            yield from _nodes(item)
    elif isinstance(plan, dict):
        yield plan
        for value in plan.values():
            if isinstance(value, list | dict):
                yield from _nodes(value)


def _strings(node: dict[str, Any]) -> Iterator[str]:
    """The node's own text fields (Output, Filter, Function Call, ...), not its subplans'."""
    for key, value in node.items():
        if key == "Plans":
            continue
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, str))


def _first_line(exc: BaseException) -> str:
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    if primary:
        return str(primary)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
