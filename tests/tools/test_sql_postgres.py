"""The ``sql`` tool on a real PostgreSQL (pgserver): read-only transaction, one statement, plan
check of what is read, time limit, and tenants kept apart by row-level security it verifies.

Attacks go through the tool (the statement check words the refusal) and straight at the backend
(the server's guards refuse them without the check); afterwards the data is unchanged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from stanchion.cli import app as cli
from stanchion.errors import SpecError, ToolError
from stanchion.request_context import RequestContext
from stanchion.tools.sql import SqlTool, build
from stanchion.tools.sql_postgres import PostgresBackend

runner = CliRunner()
ACME = RequestContext("acme", "ann")
GLOBEX = RequestContext("globex", "gus")
ROWS = [
    ("acme refund", "open", "acme"),
    ("acme login", "closed", "acme"),
    ("globex secret merger", "open", "globex"),
]


def no_retriever() -> object:
    raise AssertionError("the sql tool never searches the index")


def as_role(dsn: str, role: str) -> str:
    params = conninfo_to_dict(dsn)
    params["user"] = role
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture
def owner_dsn(pg_dsn: str) -> str:
    """A fresh database holding ``tickets`` (with a tenant column) and ``salaries``."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tickets (id serial PRIMARY KEY, subject text, status text, tenant text NOT NULL)"
        )
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO tickets (subject, status, tenant) VALUES (%s, %s, %s)", ROWS)
        conn.execute(
            "CREATE FUNCTION bump() RETURNS int LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO tickets (subject, tenant) VALUES ('bump', 'acme'); RETURN 1; END $$"
        )
        conn.execute("CREATE TABLE salaries (name text, amount int)")
        conn.execute("INSERT INTO salaries VALUES ('ceo', 900000)")
    return pg_dsn


@pytest.fixture
def reader_dsn(owner_dsn: str) -> Iterator[str]:
    """A login role that may only SELECT ``tickets``, kept apart by tenant with row-level security."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON tickets TO {role}")
        conn.execute("ALTER TABLE tickets ENABLE ROW LEVEL SECURITY")
        conn.execute(
            "CREATE POLICY tenant ON tickets FOR SELECT "
            "USING (tenant = current_setting('stanchion.tenant', true))"
        )
    yield as_role(owner_dsn, role)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def tool(dsn: str, monkeypatch: pytest.MonkeyPatch, **options: object) -> SqlTool:
    monkeypatch.setenv("SUPPORT_PG_DSN", dsn)
    return build("tickets", {"dsn_env": "SUPPORT_PG_DSN", **options}, retriever=no_retriever)  # type: ignore[arg-type]


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM tickets").fetchone()
    assert row is not None
    return int(row[0])


class TestReadOnly:
    @pytest.mark.parametrize(
        "sql",
        [
            "INSERT INTO tickets (subject, tenant) VALUES ('x', 'acme')",
            "DELETE FROM tickets",
            "WITH gone AS (DELETE FROM tickets RETURNING *) SELECT count(*) FROM gone",
            "SELECT 1; DROP TABLE tickets",
            "SELECT 1 /* nested /* ; */ */ ; DROP TABLE tickets",
            "SELECT * INTO copy FROM tickets",
            "SELECT * FROM tickets FOR UPDATE",
            "COPY tickets TO STDOUT",
            "COMMIT",
            "SET default_transaction_read_only = off",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT pg_sleep(30)",
            "SELECT lo_import('/etc/passwd')",
            "SELECT query_to_xml('select * from salaries', true, true, '')",
            "SELECT set_config('stanchion.tenant', 'globex', true)",
            "SELECT nextval('tickets_id_seq')",
            "SELECT repeat('x', 500000000)",
        ],
    )
    def test_the_tool_refuses_anything_but_one_select(
        self, owner_dsn: str, monkeypatch: pytest.MonkeyPatch, sql: str
    ) -> None:
        with pytest.raises(ToolError):
            tool(owner_dsn, monkeypatch, tables=["tickets"]).call({"query": sql}, ACME)
        assert count(owner_dsn) == 3

    @pytest.mark.parametrize(
        ("sql", "says"),
        [
            (
                "INSERT INTO tickets (id, subject, tenant) VALUES (99, 'x', 'acme')",
                'syntax error at or near "INTO"',
            ),
            (
                "WITH gone AS (DELETE FROM tickets RETURNING *) SELECT count(*) FROM gone",
                "data-modifying statement must be at the top level",
            ),
            ("SELECT bump()", "cannot execute INSERT in a read-only transaction"),
            ("SELECT 1; DROP TABLE tickets", "cannot insert multiple commands into a prepared statement"),
            ("COMMIT; DROP TABLE tickets", 'syntax error at or near "COMMIT"'),
            ("SELECT nextval('tickets_id_seq')", "nextval() is not allowed"),
            ("INSERT INTO tickets (subject, tenant) VALUES ('x', 'acme')", "nextval() is not allowed"),
            ("SELECT * FROM salaries", "reads public.salaries, which this tool does not offer"),
            ("SELECT usename FROM pg_catalog.pg_user", "reads pg_catalog.pg_authid"),
            ("SELECT * FROM information_schema.tables", "which this tool does not offer"),
            ("SELECT subject FROM tickets WHERE pg_catalog.pg_sleep(0) IS NULL", "pg_sleep() is not allowed"),
            ("SELECT \"set_config\"('stanchion.tenant', 'globex', true)", "set_config() is not allowed"),
            ("SELECT * FROM pg_ls_dir('.')", "pg_ls_dir() is not allowed"),
        ],
    )
    def test_postgresql_refuses_them_without_the_statement_check(
        self, owner_dsn: str, sql: str, says: str
    ) -> None:
        """The backend alone: READ ONLY, prepared (one command), the plan's relations and functions."""
        backend = PostgresBackend("t", owner_dsn, schema="public", tables=["tickets"], tenant_column=None)
        with pytest.raises(ToolError, match=says.replace("(", r"\(").replace(")", r"\)")):
            backend.run(sql, tenant="acme", max_rows=10, timeout_s=5)
        assert count(owner_dsn) == 3

    def test_a_constant_folded_into_the_plan_is_read_once_and_cut(self, owner_dsn: str) -> None:
        """The tool refuses repeat(); straight at the backend, the planner folds it into a 300,000
        character literal in EXPLAIN's output, which the plan check scans in one pass (a name is
        matched from a word's start only), and the server cuts the value it sends."""
        backend = PostgresBackend("t", owner_dsn, schema="public", tables=["tickets"], tenant_column=None)
        rows = backend.run("SELECT repeat('x', 300000) AS big", tenant="acme", max_rows=10, timeout_s=5)
        assert [len(v) for v in rows.rows[0]] == [501]

    def test_a_query_past_the_time_limit_is_cancelled(self, owner_dsn: str) -> None:
        backend = PostgresBackend("t", owner_dsn, schema="public", tables=["tickets"], tenant_column=None)
        endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
        with pytest.raises(ToolError, match=r"ran past the time limit \(0.2 s\)"):
            backend.run(endless, tenant="acme", max_rows=10, timeout_s=0.2)


class TestResults:
    def test_rows_schema_and_limits(self, owner_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
        sql_tool = tool(owner_dsn, monkeypatch, tables=["tickets"], max_rows=2)
        assert "Runs one read-only PostgreSQL SELECT" in sql_tool.spec.description
        assert "tickets(id integer, subject text, status text, tenant text)" in sql_tool.spec.description
        assert "salaries" not in sql_tool.spec.description
        result = sql_tool.call({"query": "SELECT id, subject FROM tickets ORDER BY id"}, ACME)
        assert result.data["rows"] == [[1, "acme refund"], [2, "acme login"]] and result.data["truncated"]
        trailing = sql_tool.call({"query": "SELECT count(*) FROM tickets; -- all of them"}, ACME)
        assert trailing.data["rows"] == [[3]]
        numbers = sql_tool.call(
            {"query": "SELECT 1.5::numeric AS n, now()::date = current_date AS today"}, ACME
        )
        assert numbers.data["rows"] == [[1.5, True]]

    def test_the_server_sends_no_more_than_the_limits(
        self, owner_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Rows past max_rows and characters past 500 in a long value never leave the server."""
        sql_tool = tool(owner_dsn, monkeypatch, tables=["tickets"], max_rows=3)
        many = sql_tool.call({"query": "SELECT generate_series(1, 50000000) AS x"}, ACME)
        assert many.data["rows"] == [[1], [2], [3]] and many.data["truncated"] is True
        big = sql_tool.call(
            {
                "query": "SELECT (SELECT string_agg('x', '') FROM generate_series(1, 100000)) AS big, 7 AS n, "
                "'{\"a\": 1}'::jsonb AS j -- comment"
            },
            ACME,
        )
        assert big.data["columns"] == ["big", "n", "j"]
        assert big.data["rows"] == [["x" * 500 + "…", 7, '{"a": 1}']]
        empty = sql_tool.call({"query": "SELECT FROM tickets;"}, ACME)
        assert empty.data["columns"] == [] and empty.data["row_count"] == 3

    @pytest.mark.parametrize(
        ("sql", "says"),
        [
            ("SELECT * FROM tickts", 'relation "tickts" does not exist'),
            ("SELECT nme FROM tickets", 'column "nme" does not exist'),
            ("SELECT * FROM tickets WHERE", "syntax error at end of input"),
        ],
    )
    def test_errors_the_model_can_fix(
        self, owner_dsn: str, monkeypatch: pytest.MonkeyPatch, sql: str, says: str
    ) -> None:
        with pytest.raises(ToolError, match=says):
            tool(owner_dsn, monkeypatch).call({"query": sql}, ACME)

    def test_the_dsn_never_appears_in_errors(self, owner_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SUPPORT_PG_DSN", "postgresql://u:hunter2@127.0.0.1:1/x?connect_timeout=1")
        with pytest.raises(ToolError, match="cannot reach the database") as info:
            build("tickets", {"dsn_env": "SUPPORT_PG_DSN"}, retriever=no_retriever)  # type: ignore[arg-type]
        assert "hunter2" not in str(info.value)
        monkeypatch.delenv("SUPPORT_PG_DSN")
        with pytest.raises(SpecError, match="environment variable SUPPORT_PG_DSN is not set"):
            build("tickets", {"dsn_env": "SUPPORT_PG_DSN"}, retriever=no_retriever)  # type: ignore[arg-type]


class TestTenants:
    def test_each_caller_sees_only_its_tenants_rows(
        self, reader_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sql_tool = tool(reader_dsn, monkeypatch, tables=["tickets"], tenant_column="tenant")
        sql = "SELECT subject FROM tickets ORDER BY id"
        assert sql_tool.call({"query": sql}, ACME).data["rows"] == [["acme refund"], ["acme login"]]
        assert sql_tool.call({"query": sql}, GLOBEX).data["rows"] == [["globex secret merger"]]
        assert sql_tool.call({"query": sql}, RequestContext("initech")).data["rows"] == []

    @pytest.mark.parametrize(
        "sql",
        [
            "SELECT subject FROM public.tickets",
            "SELECT subject FROM ONLY tickets",
            "SELECT subject FROM tickets WHERE tenant = 'globex' OR true",
            "WITH t AS MATERIALIZED (SELECT * FROM tickets) SELECT subject FROM t",
            "SELECT subject FROM tickets UNION ALL SELECT subject FROM public.tickets",
            "SELECT (SELECT string_agg(subject, ',') FROM tickets x)",
            "SELECT current_setting('stanchion.tenant')",
            "SELECT subject FROM tickets, LATERAL (SELECT set_config('stanchion.tenant', 'globex', true)) s",
            "SELECT * FROM pg_catalog.pg_policies",
        ],
    )
    def test_no_query_reads_another_tenants_rows(
        self, reader_dsn: str, monkeypatch: pytest.MonkeyPatch, sql: str
    ) -> None:
        sql_tool = tool(reader_dsn, monkeypatch, tables=["tickets"], tenant_column="tenant")
        try:
            result = sql_tool.call({"query": sql}, ACME)
        except ToolError as exc:
            assert "globex secret" not in str(exc)
            return
        assert "globex secret" not in result.content

    def test_tenants_need_row_level_security_the_tool_can_verify(
        self, owner_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A superuser bypasses RLS; a table without a policy on stanchion.tenant keeps nothing apart."""
        with pytest.raises(SpecError, match="superuser or bypasses row-level security") as info:
            tool(owner_dsn, monkeypatch, tables=["tickets"], tenant_column="tenant")
        assert info.value.key_path == "tools.tickets.options.tenant_column"
        role = f"reader_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute(f"GRANT SELECT ON tickets TO {role}")
        try:
            with pytest.raises(
                SpecError, match=r"table tickets is not kept apart by tenant.*row-level security off"
            ):
                tool(as_role(owner_dsn, role), monkeypatch, tables=["tickets"], tenant_column="tenant")
            with psycopg.connect(owner_dsn, autocommit=True) as conn:
                conn.execute("ALTER TABLE tickets ENABLE ROW LEVEL SECURITY")
                conn.execute("CREATE POLICY everyone ON tickets FOR SELECT USING (true)")
            with pytest.raises(SpecError, match=r"no policy reading stanchion\.tenant"):
                tool(as_role(owner_dsn, role), monkeypatch, tables=["tickets"], tenant_column="tenant")
        finally:
            with psycopg.connect(owner_dsn, autocommit=True) as conn:
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE {role}")


class TestTheCommandLine:
    def test_call_through_the_spec(
        self, reader_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SUPPORT_PG_DSN", reader_dsn)
        spec = tmp_path / "stanchion.yaml"
        spec.write_text(
            "tools:\n  tickets:\n    tool: sql\n    options: {dsn_env: SUPPORT_PG_DSN, tenant_column: tenant, tables: [tickets]}\n",
            encoding="utf-8",
        )
        query = '{"query": "SELECT count(*) AS n FROM tickets"}'
        called = runner.invoke(cli, ["tools", "call", "tickets", query, "--spec", str(spec), "--json"])
        assert called.exit_code == 0, called.stderr
        assert json.loads(called.stdout)["data"] == {
            "columns": ["n"],
            "rows": [[0]],  # the CLI's tenant (default) owns no row
            "row_count": 1,
            "truncated": False,
        }
