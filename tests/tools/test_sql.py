"""The ``sql`` tool on SQLite: one read-only SELECT, the caller's tenant's rows only, within limits.

Every attack is run twice where it matters: through the tool (the statement check refuses it with
words a model can act on) and straight at the backend (SQLite's own guards refuse it without the
check). The database is a real file whose bytes must not change.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import itertools
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stanchion.app import build as build_app
from stanchion.cli import app as cli
from stanchion.errors import SpecError, ToolError
from stanchion.request_context import RequestContext
from stanchion.spec import parse_spec
from stanchion.tools.sql import SqlTool, build, render
from stanchion.tools.sql_sqlite import SqliteBackend
from stanchion.tools.sql_types import Rows

runner = CliRunner()

ACME = RequestContext("acme", "ann")
GLOBEX = RequestContext("globex", "gus")


def no_retriever() -> object:
    raise AssertionError("the sql tool never searches the index")


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """``tickets`` (3 acme rows, 2 globex rows) and ``salaries``, which no spec below offers."""
    path = tmp_path / "support.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE tickets (id INTEGER PRIMARY KEY, subject TEXT, status TEXT, tenant TEXT NOT NULL)"
        )
        conn.executemany(
            "INSERT INTO tickets (subject, status, tenant) VALUES (?, ?, ?)",
            [
                ("acme refund", "open", "acme"),
                ("acme login", "closed", "acme"),
                ("acme invoice", "open", "acme"),
                ("globex secret merger", "open", "globex"),
                ("globex payroll", "open", "globex"),
            ],
        )
        conn.execute("CREATE TABLE salaries (name TEXT, amount INTEGER, tenant TEXT)")
        conn.execute("INSERT INTO salaries VALUES ('ceo', 900000, 'acme')")
    conn.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tool(database: Path, **options: object) -> SqlTool:
    return build("tickets", {"database": str(database), **options}, retriever=no_retriever)  # type: ignore[arg-type]


def query(sql_tool: SqlTool, sql: str, context: RequestContext = ACME) -> list[list[object]]:
    rows: list[list[object]] = sql_tool.call({"query": sql}, context).data["rows"]
    return rows


WRITES = [
    "INSERT INTO tickets (subject, tenant) VALUES ('x', 'acme')",
    "UPDATE tickets SET status = 'closed'",
    "DELETE FROM tickets",
    "DROP TABLE tickets",
    "CREATE TABLE t (a)",
    "REPLACE INTO tickets (id, subject, tenant) VALUES (1, 'x', 'acme')",
    "WITH x AS (SELECT 1) DELETE FROM tickets",
    "ATTACH DATABASE '/tmp/other.db' AS other",
    "DETACH DATABASE main",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema = ON",
    "VACUUM INTO '/tmp/copy.db'",
    "SELECT 1; DELETE FROM tickets",
    "SELECT 1 /* ; */ ; DELETE FROM tickets",
    "SELECT 1 -- comment\n; DROP TABLE tickets",
    "SELECT * INTO copy FROM tickets",
    "SELECT load_extension('/tmp/evil.so')",
    "EXPLAIN SELECT 1",
    "BEGIN; DELETE FROM tickets; COMMIT",
]


class TestReadOnly:
    @pytest.mark.parametrize("sql", WRITES)
    def test_the_tool_refuses_anything_but_one_select(self, database: Path, sql: str) -> None:
        """Each is a ToolError the model can read, and the file's bytes do not change."""
        before = digest(database)
        with pytest.raises(ToolError) as info:
            tool(database).call({"query": sql}, ACME)
        assert info.value.tool == "tickets"
        assert digest(database) == before

    @pytest.mark.parametrize(
        "sql",
        [
            "INSERT INTO tickets (subject, tenant) VALUES ('x', 'acme')",
            "DELETE FROM tickets",
            "DROP TABLE tickets",
            "CREATE TEMP TABLE t (a)",
            "ATTACH DATABASE ':memory:' AS other",
            "PRAGMA query_only = OFF",
            "PRAGMA table_info(tickets)",
            "SELECT * FROM sqlite_master",
            "SELECT * FROM salaries",
            "SELECT load_extension('/tmp/evil.so')",
            "SELECT zeroblob(2000000000)",
            "BEGIN IMMEDIATE",
        ],
    )
    def test_sqlite_refuses_them_without_the_statement_check(self, database: Path, sql: str) -> None:
        """The backend alone (read-only file, query_only, authorizer) holds."""
        before = digest(database)
        backend = SqliteBackend("t", database, tables=["tickets"], tenant_column=None)
        with pytest.raises(ToolError):
            backend.run(sql, tenant="acme", max_rows=10, timeout_s=5)
        assert digest(database) == before

    def test_a_keyword_inside_a_string_or_comment_is_text(self, database: Path) -> None:
        rows = query(tool(database), "SELECT 'DROP TABLE tickets; --' AS s /* DELETE */ -- UPDATE")
        assert rows == [["DROP TABLE tickets; --"]]

    def test_a_trailing_semicolon_and_comment_are_fine(self, database: Path) -> None:
        assert query(tool(database), "SELECT count(*) FROM tickets; -- all of them") == [[5]]

    def test_a_column_named_like_a_keyword_can_be_quoted(self, tmp_path: Path) -> None:
        path = tmp_path / "k.db"
        with sqlite3.connect(path) as conn:
            conn.execute('CREATE TABLE t ("update" TEXT)')
            conn.execute("INSERT INTO t VALUES ('2026-01-01')")
        conn.close()
        assert query(tool(path), 'SELECT "update" FROM t') == [["2026-01-01"]]
        with pytest.raises(ToolError, match=r"UPDATE is not allowed.*double quotes"):
            query(tool(path), "SELECT update FROM t")


class TestTenants:
    def test_each_caller_sees_only_its_tenants_rows(self, database: Path) -> None:
        sql_tool = tool(database, tenant_column="tenant", tables=["tickets"])
        sql = "SELECT subject FROM tickets ORDER BY id"
        assert query(sql_tool, sql, ACME) == [["acme refund"], ["acme login"], ["acme invoice"]]
        assert query(sql_tool, sql, GLOBEX) == [["globex secret merger"], ["globex payroll"]]
        assert query(sql_tool, sql, RequestContext("initech")) == []

    @pytest.mark.parametrize(
        "sql",
        [
            "SELECT subject FROM main.tickets",
            "SELECT subject FROM main.tickets AS tickets",
            'SELECT subject FROM "main"."tickets"',
            "WITH tickets AS (SELECT * FROM main.tickets) SELECT subject FROM tickets",
            "WITH t AS MATERIALIZED (SELECT subject FROM main.tickets) SELECT * FROM t",
            "SELECT subject FROM tickets UNION SELECT subject FROM main.tickets",
            "SELECT (SELECT group_concat(subject) FROM main.tickets)",
            "SELECT subject FROM tickets WHERE EXISTS (SELECT 1 FROM main.tickets WHERE tenant = 'globex')",
            "SELECT count(*) FROM main.tickets",
            "SELECT sql FROM sqlite_master",
            "SELECT sql FROM sqlite_temp_master",
            "SELECT name FROM temp.sqlite_schema",
            "SELECT * FROM pragma_table_info('tickets')",
            "SELECT tenant FROM tickets",
        ],
    )
    def test_no_query_reads_another_tenants_rows(self, database: Path, sql: str) -> None:
        """Qualified names, aliases, a CTE named like the table, UNION, subqueries, the schema
        tables and pragma functions: each is refused (or sees only acme's rows), never globex's."""
        sql_tool = tool(database, tenant_column="tenant", tables=["tickets"])
        try:
            result = sql_tool.call({"query": sql}, ACME)
        except ToolError as exc:
            assert "globex" not in str(exc)
            return
        assert "globex" not in result.content

    def test_the_hidden_views_name_is_not_guessable_or_listed(self, database: Path) -> None:
        """The view that reads main.tickets is named afresh on every call; a CTE can't pose as it."""
        backend = SqliteBackend("t", database, tables=["tickets"], tenant_column="tenant")
        views = []
        for _ in range(2):
            conn = sqlite3.connect(database)
            views.append(backend._make_views(conn, "acme")["tickets"])
            conn.close()
        assert views[0] != views[1] and len(views[0]) > 16
        guess = f"WITH {views[0]} AS (SELECT * FROM main.tickets) SELECT subject FROM {views[0]}"
        with pytest.raises(ToolError, match=r"prohibited|not authorized"):
            backend.run(guess, tenant="acme", max_rows=10, timeout_s=5)

    def test_a_tenant_with_a_quote_in_its_name_is_a_literal(self, database: Path) -> None:
        sql_tool = tool(database, tenant_column="tenant", tables=["tickets"])
        assert query(sql_tool, "SELECT count(*) FROM tickets", RequestContext("x' OR '1'='1")) == [[0]]

    def test_the_tenant_column_is_not_offered(self, database: Path) -> None:
        sql_tool = tool(database, tenant_column="tenant", tables=["tickets"])
        assert "tickets(id INTEGER, subject TEXT, status TEXT)" in sql_tool.spec.description
        assert "tenant" not in sql_tool.spec.description


class TestLimits:
    def test_rows_past_max_rows_are_cut_and_the_result_says_so(self, database: Path) -> None:
        result = tool(database, max_rows=2).call({"query": "SELECT id FROM tickets ORDER BY id"}, ACME)
        assert result.data["rows"] == [[1], [2]] and result.data["truncated"] is True
        assert "2 rows shown; more rows matched" in result.content
        whole = tool(database, max_rows=5).call({"query": "SELECT id FROM tickets"}, ACME)
        assert whole.data["truncated"] is False and whole.content.endswith("(5 rows)")

    def test_the_result_is_cut_to_max_chars(self, database: Path) -> None:
        sql = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 150) SELECT printf('%080d', x) FROM n"
        result = tool(database, max_chars=1000).call({"query": sql}, ACME)
        assert len(result.content) < 1200 and result.data["truncated"] is True
        assert 5 < result.data["row_count"] < 150

    def test_a_query_past_the_time_limit_is_interrupted(self, database: Path) -> None:
        """A clock that moves a second per look: the endless CTE stops at the first look."""
        ticks = itertools.count()
        backend = SqliteBackend(
            "t", database, tables=None, tenant_column=None, clock=lambda: float(next(ticks))
        )
        endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
        with pytest.raises(ToolError, match=r"ran past the time limit \(0.5 s\)"):
            backend.run(endless, tenant="acme", max_rows=10, timeout_s=0.5)

    def test_a_value_past_the_length_limit_is_an_error(self, database: Path) -> None:
        with pytest.raises(ToolError, match="too big"):
            query(tool(database), "SELECT replace(printf('%.1000c', 'x'), 'x', printf('%.2000c', 'y'))")


class TestRendering:
    def test_long_values_are_cut_in_the_text_and_the_data(self, database: Path) -> None:
        result = tool(database).call({"query": "SELECT printf('%.900c', 'x') AS long"}, ACME)
        (value,) = result.data["rows"][0]
        assert value == "x" * 500 + "…"
        assert result.content == "long\n" + "x" * 500 + "…\n(1 row)"

    def test_every_value_becomes_strict_json(self) -> None:
        """Blobs, decimals, dates, NaN and nested JSON (PostgreSQL's types) all serialise."""
        odd = (
            b"\x00\x01",
            decimal.Decimal("2.50"),
            decimal.Decimal("7"),
            decimal.Decimal("NaN"),
            float("inf"),
            datetime.date(2026, 1, 19),
            {"a": [1, 2]},
            {"big": "y" * 900},
        )
        result = render(Rows([f"c{n}" for n in range(len(odd))], [odd], truncated=False), max_chars=5000)
        row = result.data["rows"][0]
        assert row[:7] == ["<2 bytes>", 2.5, 7, "NaN", "inf", "2026-01-19", {"a": [1, 2]}]
        assert row[7].endswith("…") and len(row[7]) == 501
        json.dumps(result.data, allow_nan=False)


class TestErrorsTheModelCanFix:
    @pytest.mark.parametrize(
        ("sql", "says"),
        [
            ("SELEC * FROM tickets", "'SELEC' is not"),
            ("SELECT * FROM tickts", "no such table: tickts"),
            ("SELECT nme FROM tickets", "no such column: nme"),
            ("SELECT * FROM tickets WHERE id = = 1", 'near "=": syntax error'),
            ("SELECT 'open", "a string opened with ' is never closed"),
            ("SELECT * FROM tickets WHERE id = ?", "parameters are not supported"),
            ("SELECT * FROM json_each('[1, 2]')", "table-valued functions (json_each"),
            ("", "query: String should have at least 1 character"),
        ],
    )
    def test_errors_name_the_problem(self, database: Path, sql: str, says: str) -> None:
        with pytest.raises(ToolError, match=says.replace("(", r"\(").replace("?", r"\?").replace("*", r"\*")):
            tool(database).call({"query": sql}, ACME)


class TestOptions:
    def test_the_description_offers_the_allowed_tables_schema(self, database: Path) -> None:
        sql_tool = tool(database, tables=["tickets"], description="Kestrel's support tickets.")
        description = sql_tool.spec.description
        assert description.startswith("Kestrel's support tickets. Runs one read-only SQLite SELECT")
        assert "tickets(id INTEGER, subject TEXT, status TEXT, tenant TEXT)" in description
        assert "salaries" not in description
        assert sql_tool.spec.parameters["required"] == ["query"]

    def test_a_table_left_out_of_tables_cannot_be_read(self, database: Path) -> None:
        with pytest.raises(ToolError, match=r"access to salaries\.\w+ is prohibited"):
            query(tool(database, tables=["tickets"]), "SELECT * FROM salaries")

    @pytest.mark.parametrize(
        ("options", "says", "key"),
        [
            (
                {"tables": ["tickets", "nope"]},
                "no table nope in support.db (tables: salaries, tickets)",
                "tables",
            ),
            ({"tenant_column": "org"}, "table salaries has no column 'org'", "tenant_column"),
        ],
    )
    def test_bad_options_are_spec_errors_naming_the_key(
        self, database: Path, options: dict[str, object], says: str, key: str
    ) -> None:
        with pytest.raises(SpecError, match=says.replace("(", r"\(").replace(")", r"\)")) as info:
            tool(database, **options)
        assert info.value.key_path == f"tools.tickets.options.{key}"

    def test_a_relative_path_resolves_against_the_spec_folder(self, database: Path) -> None:
        built = build("t", {"database": "support.db"}, retriever=no_retriever, base_dir=database.parent)  # type: ignore[arg-type]
        assert query(built, "SELECT count(*) FROM tickets") == [[5]]
        with pytest.raises(SpecError, match="is relative and this tool was built without the spec's folder"):
            build("t", {"database": "support.db"}, retriever=no_retriever)  # type: ignore[arg-type]
        with pytest.raises(SpecError, match="no SQLite file at"):
            build("t", {"database": str(database.parent / "missing.db")}, retriever=no_retriever)  # type: ignore[arg-type]

    def test_the_spec_names_exactly_one_database(self, tmp_path: Path) -> None:
        for options in ({}, {"database": "/x.db", "dsn_env": "PG_DSN"}):
            app = build_app(
                parse_spec({"tools": {"q": {"tool": "sql", "options": options}}}, base_dir=tmp_path)
            )
            with pytest.raises(SpecError, match="name the database: database: <SQLite file> or dsn_env"):
                app.tools.get("q")
            app.close()


class TestTheCommandLine:
    def test_list_and_call_through_the_spec(self, database: Path, tmp_path: Path) -> None:
        spec = tmp_path / "stanchion.yaml"
        spec.write_text(
            "tools:\n  tickets:\n    tool: sql\n    options:\n"
            f"      database: {database}\n      tenant_column: tenant\n      tables: [tickets]\n",
            encoding="utf-8",
        )
        listed = runner.invoke(cli, ["tools", "list", "--spec", str(spec), "--json"])
        assert listed.exit_code == 0, listed.stderr
        (offered,) = json.loads(listed.stdout)["tools"]
        assert "tickets(id INTEGER, subject TEXT, status TEXT)" in offered["description"]
        called = runner.invoke(
            cli,
            [
                "tools",
                "call",
                "tickets",
                '{"query": "SELECT count(*) AS n FROM tickets"}',
                "--spec",
                str(spec),
                "--json",
            ],
        )
        assert called.exit_code == 0, called.stderr
        # The CLI calls as the spec's default tenant, which owns no row here.
        assert json.loads(called.stdout)["data"]["rows"] == [[0]]
        refused = runner.invoke(
            cli, ["tools", "call", "tickets", '{"query": "DELETE FROM tickets"}', "--spec", str(spec)]
        )
        assert refused.exit_code == 2 and "only read-only queries are allowed" in refused.stderr
