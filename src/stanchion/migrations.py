"""The one schema migration runner: ordered, named migrations recorded in a table.

Every database Stanchion keeps migrates through ``migrate`` here: the SQLite index
(``index/migrations.py``), the PostgreSQL index (``index/pg_migrations.py``), the control-plane
state on either dialect (``state/schema.py``) and the SQLite rate limiter
(``server/ratelimit.py``). Each names its migrations (``m001_initial``, ...), gives their
statements per dialect, and says where the names it applied are recorded (its ``Ledger``, which
keeps the table each used before this runner, so no database re-applies anything).

Each migration runs in its own transaction together with the row that records it, so a failed
one leaves no trace and the next start tries it again. On PostgreSQL every transaction first
takes an advisory lock (``lock_key``): workers starting at once apply each migration exactly
once, the others wait and then find it recorded. SQLite transactions begin ``IMMEDIATE``, which
serialises writers the same way.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "Dialect",
    "Ledger",
    "Migration",
    "PsycopgTarget",
    "SQLiteTarget",
    "Target",
    "Tx",
    "migrate",
]

Dialect = Literal["sqlite", "postgres"]


class Tx(Protocol):
    """Statements in one transaction; SQL uses ``?`` placeholders on both dialects."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> object: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class Target(Protocol):
    """A database to migrate (``state.db.Database`` is one; the adapters below wrap connections)."""

    dialect: Dialect

    def transaction(self) -> contextlib.AbstractContextManager[Tx]: ...


@dataclass(frozen=True, slots=True)
class Migration:
    """One named schema change: a script per dialect, statements separated by ``;``."""

    name: str
    scripts: Mapping[Dialect, str]

    def statements(self, dialect: Dialect) -> list[str]:
        if dialect not in self.scripts:
            raise ValueError(f"migration {self.name} has no statements for {dialect}")
        return [s for s in self.scripts[dialect].split(";") if s.strip()]


@dataclass(frozen=True, slots=True)
class Ledger:
    """Where applied names are recorded: the table, how to create it, how to record one name."""

    table: str
    create: str  # CREATE TABLE IF NOT EXISTS ..., with a ``name`` primary key
    insert: str  # INSERT ... with one ``?``: the name


def migrate(
    db: Target,
    migrations: Sequence[Migration],
    ledger: Ledger,
    *,
    lock_key: int | None = None,
    adopt: Callable[[Tx], int] | None = None,
    one_transaction: bool = False,
) -> list[str]:
    """Apply the migrations not yet recorded, in order, each in its own transaction (or all in
    one, ``one_transaction``: then a worker that waited on the lock finds every one applied);
    returns the names applied. ``adopt`` says how many leading migrations an older mechanism
    applied (read once, while the ledger is empty), so they are recorded instead of run again."""
    with db.transaction() as tx:
        _lock(tx, db.dialect, lock_key)
        tx.execute(ledger.create)
        if adopt is not None and not tx.query(f"SELECT 1 FROM {ledger.table} LIMIT 1"):
            for migration in migrations[: adopt(tx)]:
                tx.execute(ledger.insert, (migration.name,))
        if one_transaction:
            return [m.name for m in migrations if _apply(tx, db.dialect, m, ledger)]
    applied: list[str] = []
    for migration in migrations:
        with db.transaction() as tx:
            _lock(tx, db.dialect, lock_key)
            if _apply(tx, db.dialect, migration, ledger):
                applied.append(migration.name)
    return applied


def _apply(tx: Tx, dialect: Dialect, migration: Migration, ledger: Ledger) -> bool:
    """Run ``migration`` and record it, unless it is recorded already; whether it ran."""
    if tx.query(f"SELECT 1 FROM {ledger.table} WHERE name = ?", (migration.name,)):
        return False
    for statement in migration.statements(dialect):
        tx.execute(statement)
    tx.execute(ledger.insert, (migration.name,))
    return True


def _lock(tx: Tx, dialect: Dialect, key: int | None) -> None:
    if dialect == "postgres" and key is not None:
        tx.query("SELECT pg_advisory_xact_lock(?)", (key,))


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> object:
        return self._conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()


class SQLiteTarget:
    """A ``sqlite3`` connection in autocommit mode (``isolation_level=None``)."""

    dialect: Dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        # executescript() would COMMIT; statements run one by one inside BEGIN IMMEDIATE instead.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SQLiteTx(self._conn)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:  # SQLite may have rolled back already (I/O error, full disk)
                self._conn.execute("ROLLBACK")
            raise


class _PsycopgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> object:
        return self._conn.execute(_pg(sql), params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._conn.execute(_pg(sql), params).fetchall()
        return rows


class PsycopgTarget:
    """A ``psycopg.Connection``; each transaction is ``conn.transaction()``."""

    dialect: Dialect = "postgres"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._conn.transaction():
            yield _PsycopgTx(self._conn)


def _pg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")
