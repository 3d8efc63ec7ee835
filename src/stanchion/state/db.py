"""One small database interface over sqlite3 and psycopg, so the control-plane SQL is written once.

SQL uses ``?`` placeholders; the PostgreSQL side rewrites them to ``%s``. Both sides are safe to
call from many threads: SQLite keeps a connection per thread (WAL, busy timeout), PostgreSQL a pool.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from stanchion.errors import StoreError
from stanchion.state.secrets import redact

Dialect = Literal["sqlite", "postgres"]
Row = tuple[Any, ...]


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class Database(Protocol):
    dialect: Dialect

    def transaction(self) -> contextlib.AbstractContextManager[Tx]: ...
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    def close(self) -> None: ...


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()


class SQLiteDatabase:
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        conn = self._conn()
        # IMMEDIATE takes the write lock up front, so two workers never deadlock upgrading a read.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SQLiteTx(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn().execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn().execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class _PostgresTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.conn.execute(_pg(sql), params)
        return int(cur.rowcount)

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # psycopg 3 pipelines executemany: one round trip for the batch, not one per row.
        with self.conn.cursor() as cur:
            cur.executemany(_pg(sql), rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self.conn.execute(_pg(sql), params).fetchall())


class PostgresDatabase:
    dialect: Dialect = "postgres"

    def __init__(self, dsn: str, *, pool_size: int = 8) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self._errors = (psycopg.OperationalError, psycopg.InterfaceError)
        self.pool = ConnectionPool(
            dsn, min_size=1, max_size=pool_size, open=False, kwargs={"connect_timeout": 10}, name="state"
        )
        try:
            self.pool.open(wait=True, timeout=15)
        except Exception as exc:
            self.pool.close()
            raise StoreError(
                f"cannot reach PostgreSQL for the control-plane state: {redact(str(exc))}"
            ) from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.pool.connection() as conn, conn.transaction():
            yield _PostgresTx(conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.pool.connection() as conn:
            return list(conn.execute(_pg(sql), params).fetchall())

    def close(self) -> None:
        self.pool.close()


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")
