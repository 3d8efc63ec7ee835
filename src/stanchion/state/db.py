"""One small database interface over sqlite3 and psycopg, so the control-plane SQL is written once.

SQL uses ``?`` placeholders; the PostgreSQL side rewrites them to ``%s``. Both sides are safe to
call from many threads: SQLite keeps a connection per thread (WAL, busy timeout), PostgreSQL a pool.
Both raise only the package's errors: ``BackendUnavailable`` when the database cannot be reached
(or is locked), ``StoreError`` otherwise, with the driver's message in ``detail``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from stanchion.errors import BackendUnavailable, Conflict, StoreError
from stanchion.state.secrets import redact

log = logging.getLogger(__name__)
_UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE for a duplicate key

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
        with _sqlite_mapped(self.path):
            conn = self._conn()
            # IMMEDIATE takes the write lock up front, so two workers never deadlock upgrading a read.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteTx(conn)
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (I/O error, full disk)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with _sqlite_mapped(self.path):
            return self._conn().execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with _sqlite_mapped(self.path):
            return self._conn().execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


@contextlib.contextmanager
def _sqlite_mapped(path: Path) -> Iterator[None]:
    """sqlite3's errors as the package's: a busy or locked file is unavailable (retry later)."""
    try:
        yield
    except sqlite3.Error as exc:
        detail = f"{path}: {type(exc).__name__}: {exc}"
        busy = isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
        )
        log.warning("state.failed", extra={"backend": "sqlite", "detail": detail})
        error: type[StoreError] = BackendUnavailable if busy else StoreError
        if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
            error = Conflict
        raise error(
            f"the control-plane database (SQLite) failed ({type(exc).__name__})",
            backend="sqlite",
            detail=detail,
        ) from exc


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
    """A connection pool that checks each connection before handing it out (a server restart
    costs a reconnect, not a failed request) and waits at most ``pool_timeout_s`` for one: with
    the server down, a call fails with ``BackendUnavailable`` after that long, not 30 s."""

    dialect: Dialect = "postgres"

    def __init__(self, dsn: str, *, pool_size: int = 8, pool_timeout_s: float = 5.0) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        self._dsn = dsn
        self._unavailable = (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError)
        self._errors = psycopg.Error
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"connect_timeout": max(2, math.ceil(pool_timeout_s))},
            check=ConnectionPool.check_connection,
            timeout=pool_timeout_s,
            # The pool's reconnection attempts back off, each delay capped to this: after an outage
            # a waiting request gets a connection within it, well inside its own timeout.
            reconnect_timeout=pool_timeout_s / 2,
            name="state",
        )
        try:
            self.pool.open(wait=True, timeout=pool_timeout_s + 10)
        except Exception as exc:
            self.pool.close()
            raise StoreError(
                f"cannot reach PostgreSQL for the control-plane state: {self._redact(str(exc))}",
                backend="postgres",
            ) from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._mapped(), self.pool.connection() as conn, conn.transaction():
            yield _PostgresTx(conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._mapped(), self.pool.connection() as conn:
            return list(conn.execute(_pg(sql), params).fetchall())

    def close(self) -> None:
        self.pool.close()

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        """psycopg's and the pool's errors as the package's: short messages, the driver's in ``detail``."""
        try:
            yield
        except self._unavailable as exc:
            detail = self._redact(f"{type(exc).__name__}: {exc}")
            log.warning("state.unavailable", extra={"backend": "postgres", "detail": detail})
            raise BackendUnavailable(
                "the control-plane database (PostgreSQL) is unavailable", backend="postgres", detail=detail
            ) from exc
        except self._errors as exc:
            detail = self._redact(f"{type(exc).__name__}: {exc}")
            log.warning("state.failed", extra={"backend": "postgres", "detail": detail})
            error = Conflict if getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION else StoreError
            raise error(
                f"the control-plane database (PostgreSQL) refused a statement ({type(exc).__name__})",
                backend="postgres",
                detail=detail,
            ) from exc

    def _redact(self, text: str) -> str:
        from psycopg.conninfo import conninfo_to_dict

        try:
            password = conninfo_to_dict(self._dsn).get("password")
        except Exception:  # an unparsable DSN: say nothing of what the driver echoed
            return "(details withheld: the DSN cannot be parsed)"
        return redact(text.replace(str(password), "***") if password else text)


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")
