"""One migration runner for every database, and databases made before it keep what they have.

Each "made by the old code" test builds its file the way the code before ``stanchion.migrations``
did (the same statements and the same record of them, copied here), then opens it with today's
code: nothing may run again, and the data stays.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest

from stanchion.errors import StoreError
from stanchion.index import migrations as index_migrations
from stanchion.index.pg_migrations import SCHEMA, migrations
from stanchion.index.pg_migrations import migrate as migrate_pg_index
from stanchion.index.sqlite import SQLiteStore
from stanchion.migrations import Ledger, Migration, SQLiteTarget, migrate
from stanchion.server.ratelimit import Limits, SQLiteRateLimiter
from stanchion.state import schema as state_schema
from stanchion.state.db import SQLiteDatabase
from stanchion.testing.store_suite import DIM

LEDGER = Ledger(
    "_migrations",
    "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
    "INSERT INTO _migrations(name, applied_at) VALUES (?, datetime('now'))",
)


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


class TestRunner:
    def test_applies_in_order_once_and_records_names(self, tmp_path: Path) -> None:
        """Pending migrations run in order and are recorded; a second run applies none."""
        db = connect(tmp_path / "x.db")
        steps = [
            Migration("m001_a", {"sqlite": "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1)"}),
            Migration("m002_b", {"sqlite": "ALTER TABLE a ADD COLUMN y TEXT"}),
        ]
        assert migrate(SQLiteTarget(db), steps, LEDGER) == ["m001_a", "m002_b"]
        assert migrate(SQLiteTarget(db), steps, LEDGER) == []
        assert [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")] == [
            "m001_a",
            "m002_b",
        ]
        assert db.execute("SELECT x, y FROM a").fetchall() == [(1, None)]

    def test_a_failed_migration_leaves_no_trace(self, tmp_path: Path) -> None:
        """A migration that fails is rolled back with its record; the ones before it stay applied."""
        db = connect(tmp_path / "x.db")
        good = Migration("m001_a", {"sqlite": "CREATE TABLE a (x INTEGER)"})
        bad = Migration("m002_bad", {"sqlite": "CREATE TABLE b (x INTEGER); CREATE TABLE a (x INTEGER)"})
        with pytest.raises(sqlite3.OperationalError, match="already exists"):
            migrate(SQLiteTarget(db), [good, bad], LEDGER)
        assert [r[0] for r in db.execute("SELECT name FROM _migrations")] == ["m001_a"]
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'b'").fetchall() == []

    def test_adopts_what_an_older_mechanism_applied(self, tmp_path: Path) -> None:
        """``adopt`` records the leading migrations an older mechanism applied, without running them."""
        db = connect(tmp_path / "x.db")
        db.execute("CREATE TABLE a (x INTEGER)")
        steps = [
            Migration("m001_a", {"sqlite": "CREATE TABLE a (x INTEGER)"}),
            Migration("m002_b", {"sqlite": "CREATE TABLE b (x INTEGER)"}),
        ]
        assert migrate(SQLiteTarget(db), steps, LEDGER, adopt=lambda tx: 1) == ["m002_b"]
        assert migrate(SQLiteTarget(db), steps, LEDGER, adopt=lambda tx: 2) == []  # the ledger rules now

    def test_a_dialect_without_statements_is_an_error(self) -> None:
        """A migration written for one dialect cannot silently be skipped on another."""
        with pytest.raises(ValueError, match="m001_a has no statements for postgres"):
            Migration("m001_a", {"sqlite": "SELECT 1"}).statements("postgres")


class TestMadeByTheOldCode:
    def test_sqlite_index(self, tmp_path: Path) -> None:
        """An index whose ``_migrations`` the old loop filled opens with nothing re-applied."""
        path = tmp_path / "index.db"
        db = connect(path)
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for migration in index_migrations.MIGRATIONS:
            db.execute("BEGIN IMMEDIATE")
            for statement in migration.statements("sqlite"):
                db.execute(statement)
            db.execute(
                "INSERT INTO _migrations(name, applied_at) VALUES (?, datetime('now'))", (migration.name,)
            )
            db.execute("COMMIT")
        db.execute("INSERT INTO units VALUES ('s', 'u', 'sig')")
        db.close()
        store = SQLiteStore(path)  # re-running m001 would fail: its tables exist
        try:
            assert index_migrations.migrate(connect(path)) == []
            assert store.units("s") == {"u": "sig"}
        finally:
            store.close()

    def test_rate_limiter_counted_in_user_version(self, tmp_path: Path) -> None:
        """A limiter file from before the ledger (its count in PRAGMA user_version) keeps its windows
        and records m001 as applied instead of creating the table again."""
        path = tmp_path / "limits.db"
        db = connect(path)
        db.execute(
            "CREATE TABLE rate_windows (key_id TEXT PRIMARY KEY, win INTEGER NOT NULL, requests INTEGER NOT NULL,"
            " prev_requests INTEGER NOT NULL, tokens INTEGER NOT NULL, prev_tokens INTEGER NOT NULL) WITHOUT ROWID"
        )
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO rate_windows VALUES ('k', 0, 1, 0, 0, 0)")
        db.close()

        async def use() -> None:
            limiter = SQLiteRateLimiter(path, now=lambda: 1.0)
            try:
                assert (await limiter.admit("k", Limits(2, 10_000))).allowed
                assert not (await limiter.admit("k", Limits(2, 10_000))).allowed  # 1 + 1 used
            finally:
                await limiter.close()

        asyncio.run(use())
        db = connect(path)
        assert db.execute("SELECT name FROM _migrations").fetchall() == [("m001_rate_windows",)]

    def test_rate_limiter_new_file(self, tmp_path: Path) -> None:
        """A new limiter file gets its table through the runner, recorded by name."""
        path = tmp_path / "limits.db"

        async def use() -> None:
            limiter = SQLiteRateLimiter(path)
            try:
                assert (await limiter.admit("k", Limits(1, 10_000))).allowed
            finally:
                await limiter.close()

        asyncio.run(use())
        assert connect(path).execute("SELECT name FROM _migrations").fetchall() == [("m001_rate_windows",)]

    def test_state(self, tmp_path: Path) -> None:
        """A state file whose ``state_migrations`` the old loop filled migrates to nothing new."""
        path = tmp_path / "state.db"
        db = connect(path)
        db.execute("CREATE TABLE IF NOT EXISTS state_migrations (name TEXT PRIMARY KEY, at DOUBLE PRECISION)")
        for migration in state_schema.MIGRATIONS:
            db.execute("BEGIN IMMEDIATE")
            for statement in migration.statements("sqlite"):
                db.execute(statement)
            db.execute("INSERT INTO state_migrations (name, at) VALUES (?, 0)", (migration.name,))
            db.execute("COMMIT")
        db.close()
        database = SQLiteDatabase(path)
        try:
            assert state_schema.migrate(database) == []
        finally:
            database.close()

    def test_postgres_index(self, pg_dsn: str) -> None:
        """An index whose ``stanchion_index._migrations`` the old single transaction filled
        migrates to nothing new, and still checks its vector dimension."""
        with psycopg.connect(pg_dsn) as conn, conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}._migrations"
                " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration in migrations(DIM):
                for statement in migration.statements("postgres"):
                    conn.execute(statement)
                conn.execute(f"INSERT INTO {SCHEMA}._migrations (name) VALUES (%s)", [migration.name])
        assert migrate_pg_index(pg_dsn, dim=DIM) == []
        with pytest.raises(StoreError, match=f"built with dim {DIM}"):
            migrate_pg_index(pg_dsn, dim=DIM + 1)
