"""The embedded cache backend: one SQLite file (WAL), which the workers of one machine may share.

Entries are rows of ``cache_entries``; each gets a ``seq`` (AUTOINCREMENT: rising in commit order,
never reused). A worker keeps the vectors of each partition it has searched in a local
``VectorIndex`` and, at every semantic lookup, adds the rows with a ``seq`` above the last it saw
(one indexed range query, empty when nothing changed). The candidates the index proposes are read
back from the table before they are returned: a row that is gone (expired, evicted, replaced,
deleted by another process) is dropped from the local index instead, so the index never has to
hear about deletions.

Expired rows are never returned and are deleted lazily: each ``put`` sweeps a bounded batch of
them. ``cache_partitions`` keeps each partition's row count for ``max_entries`` (every statement
that deletes rows here reports the partitions it touched). Statements run on the event loop (a
lookup is well under a millisecond of SQLite); waiting for another process's write lock does not:
a busy lock is retried after an ``asyncio.sleep`` backoff, like the SQLite rate limiter.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from stanchion.cache.codec import (
    LocalIndexes,
    PartitionIndex,
    check_entry,
    check_tenant,
    decode_dependencies,
    decode_response,
    decode_vector,
    encode_dependencies,
    encode_response,
    encode_vector,
    nearest_live,
)
from stanchion.cache.entry import CacheEntry, CacheStats, Candidate, Vector
from stanchion.cache.vector_index import DEFAULT_DEPTH
from stanchion.errors import BackendUnavailable, StoreError
from stanchion.migrations import Ledger, Migration, SQLiteTarget, migrate

__all__ = ["SQLiteCacheBackend"]

_T = TypeVar("_T")

_LEDGER = Ledger(
    "cache_migrations",
    "CREATE TABLE IF NOT EXISTS cache_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
    "INSERT INTO cache_migrations(name, applied_at) VALUES (?, datetime('now'))",
)
_MIGRATIONS = [
    Migration(
        "m001_cache_entries",
        {
            "sqlite": """
            CREATE TABLE cache_entries (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL,
                tenant TEXT NOT NULL,
                partition TEXT NOT NULL,
                exact_key TEXT NOT NULL,
                created REAL NOT NULL,
                expires REAL NOT NULL,
                question TEXT NOT NULL,
                response TEXT NOT NULL,
                vector BLOB,
                dependencies TEXT NOT NULL,
                tokens INTEGER NOT NULL,
                cost REAL NOT NULL
            );
            CREATE UNIQUE INDEX cache_entries_by_id ON cache_entries (tenant, id);
            CREATE UNIQUE INDEX cache_entries_by_key ON cache_entries (tenant, partition, exact_key);
            CREATE INDEX cache_entries_by_seq ON cache_entries (tenant, partition, seq);
            CREATE INDEX cache_entries_by_expiry ON cache_entries (expires);
            CREATE TABLE cache_partitions (
                tenant TEXT NOT NULL,
                partition TEXT NOT NULL,
                entries INTEGER NOT NULL,
                evicted_through INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant, partition)
            ) WITHOUT ROWID;
            CREATE TABLE cache_counters (
                tenant TEXT NOT NULL,
                name TEXT NOT NULL,
                value REAL NOT NULL,
                PRIMARY KEY (tenant, name)
            ) WITHOUT ROWID
            """
        },
    )
]

_COLUMNS = "id, tenant, partition, exact_key, created, expires, question, response, vector, dependencies, tokens, cost"
_SWEEP = 256  # expired rows deleted per put, at most
_CATCH_UP_BATCH = 4096  # rows read per step when a worker catches up (the loop runs between steps)
_BACKOFF_FIRST_S = 0.0001
_BACKOFF_MAX_S = 0.002


class SQLiteCacheBackend:
    """Cache entries in the SQLite file at ``path`` (created with its folder if absent).

    ``now`` is the clock that decides expiry (epoch seconds); ``depth`` the candidates each
    semantic lookup rescores (``VectorIndex``); ``busy_timeout_s`` how long a write waits for
    another process's lock before ``BackendUnavailable``."""

    name = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        now: Callable[[], float] = time.time,
        depth: int = DEFAULT_DEPTH,
        busy_timeout_s: float = 2.0,
    ) -> None:
        self.path = Path(path)
        self._now = now
        self._busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._busy: asyncio.Lock | None = None
        self.indexes = LocalIndexes(depth)

    # --- the protocol ---------------------------------------------------------------------------

    async def get_exact(self, tenant: str, partition: str, exact_key: str) -> CacheEntry | None:
        check_tenant(tenant)
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM cache_entries WHERE tenant = ? AND partition = ? AND exact_key = ?"
            " AND expires > ?",
            (tenant, partition, exact_key, self._now()),
        )
        return _entry(rows[0]) if rows else None

    async def nearest(self, tenant: str, partition: str, vector: Vector, k: int) -> list[Candidate]:
        check_tenant(tenant)
        index = await self._caught_up(tenant, partition)

        async def fetch(ids: list[str]) -> dict[str, CacheEntry]:
            marks = ",".join("?" * len(ids))
            rows = await self._read(
                f"SELECT {_COLUMNS} FROM cache_entries WHERE tenant = ? AND id IN ({marks}) AND expires > ?",
                (tenant, *ids, self._now()),
            )  # by (tenant, id): naming the partition here made SQLite scan the partition's index
            return {row[0]: _entry(row) for row in rows if row[2] == partition}

        return await nearest_live(index, vector, k, fetch)

    async def put(self, entry: CacheEntry, *, max_entries: int) -> None:
        check_entry(entry, max_entries)
        row = (
            entry.id,
            entry.tenant,
            entry.partition,
            entry.exact_key,
            float(entry.created),
            float(entry.expires),
            entry.question,
            encode_response(entry.response),
            encode_vector(entry.vector) if entry.vector is not None else None,
            encode_dependencies(entry.dependencies),
            int(entry.tokens),
            float(entry.cost_usd),
        )
        now = self._now()

        def body(db: sqlite3.Connection) -> None:
            removed = db.execute(
                "DELETE FROM cache_entries WHERE seq IN (SELECT seq FROM cache_entries WHERE expires <= ? LIMIT ?)"
                " RETURNING tenant, partition",
                (now, _SWEEP),
            ).fetchall()
            removed += db.execute(
                "DELETE FROM cache_entries WHERE tenant = ? AND (id = ? OR (partition = ? AND exact_key = ?))"
                " RETURNING tenant, partition",
                (entry.tenant, entry.id, entry.partition, entry.exact_key),
            ).fetchall()
            _uncount(db, removed)
            if entry.expires <= now:
                return  # stored already expired: it only replaces what its key held
            db.execute(f"INSERT INTO cache_entries ({_COLUMNS}) VALUES ({','.join('?' * 12)})", row)
            held = db.execute(
                "INSERT INTO cache_partitions (tenant, partition, entries) VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET entries = entries + 1"
                " RETURNING entries",
                (entry.tenant, entry.partition),
            ).fetchone()[0]
            if held > max_entries:
                evicted = [
                    seq
                    for (seq,) in db.execute(
                        "DELETE FROM cache_entries WHERE seq IN (SELECT seq FROM cache_entries"
                        " WHERE tenant = ? AND partition = ? ORDER BY seq LIMIT ?) RETURNING seq",
                        (entry.tenant, entry.partition, held - max_entries),
                    )
                ]
                if len(evicted) == held - max_entries:
                    db.execute(
                        "UPDATE cache_partitions SET entries = entries - ?,"
                        " evicted_through = max(evicted_through, ?) WHERE tenant = ? AND partition = ?",
                        (len(evicted), max(evicted), entry.tenant, entry.partition),
                    )
                else:  # the count had drifted from the rows (a file edited by hand?): count again
                    db.execute(
                        "UPDATE cache_partitions SET entries = (SELECT count(*) FROM cache_entries"
                        " WHERE tenant = ?1 AND partition = ?2), evicted_through = max(evicted_through, ?3)"
                        " WHERE tenant = ?1 AND partition = ?2",
                        (entry.tenant, entry.partition, max(evicted, default=0)),
                    )

        await self._write(body)

    async def delete(self, tenant: str, ids: Sequence[str]) -> int:
        check_tenant(tenant)
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        now = self._now()

        def body(db: sqlite3.Connection) -> int:
            removed = 0
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                rows = db.execute(
                    f"DELETE FROM cache_entries WHERE tenant = ? AND id IN ({','.join('?' * len(part))})"
                    " RETURNING tenant, partition, expires",
                    (tenant, *part),
                ).fetchall()
                _uncount(db, [(t, p) for t, p, _ in rows])
                removed += sum(1 for _, _, expires in rows if expires > now)
            return removed

        removed = await self._write(body)
        self.indexes.remove(tenant, ids)
        return removed

    async def clear(self, tenant: str | None = None) -> int:
        if tenant is not None:
            check_tenant(tenant)
        now = self._now()

        def body(db: sqlite3.Connection) -> int:
            where, args = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
            live: int = db.execute(
                f"SELECT count(*) FROM cache_entries {where} {'AND' if where else 'WHERE'} expires > ?",
                (*args, now),
            ).fetchone()[0]
            for table in ("cache_entries", "cache_partitions", "cache_counters"):
                db.execute(f"DELETE FROM {table} {where}", args)
            return live

        removed = await self._write(body)
        self.indexes.drop(tenant)
        return removed

    async def count(self, tenant: str, counters: Mapping[str, float]) -> None:
        check_tenant(tenant)
        values = [(tenant, name, float(value)) for name, value in counters.items() if value]
        if not values:
            return

        def body(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO cache_counters VALUES (?, ?, ?)"
                " ON CONFLICT DO UPDATE SET value = value + excluded.value",
                values,
            )

        await self._write(body)

    async def stats(self, tenant: str | None = None) -> CacheStats:
        if tenant is not None:
            check_tenant(tenant)
        where, args = ("AND tenant = ?", (tenant,)) if tenant is not None else ("", ())
        held = await self._read(
            f"SELECT tenant, count(*) FROM cache_entries WHERE expires > ? {where} GROUP BY tenant",
            (self._now(), *args),
        )
        counted = await self._read(
            f"SELECT tenant, name, value FROM cache_counters WHERE 1 {where} ORDER BY tenant, name", args
        )
        entries = {t: int(n) for t, n in held}
        counters: dict[str, dict[str, float]] = {}
        for t, name, value in counted:
            counters.setdefault(t, {})[name] = float(value)
        if tenant is not None:
            entries.setdefault(tenant, 0)
        return CacheStats(entries=entries, counters=counters)

    async def ping(self) -> None:
        await self._read("SELECT 1", ())

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    # --- keeping the local index in step -----------------------------------------------------

    async def _caught_up(self, tenant: str, partition: str) -> PartitionIndex:
        """This partition's local index, after adding the rows committed since it last looked and
        dropping those evicted or expired since."""
        while True:
            index = self.indexes.get(tenant, partition)
            before = index.position
            rows = await self._read(
                "SELECT seq, id, vector, expires FROM cache_entries WHERE tenant = ? AND partition = ?"
                " AND seq > ? ORDER BY seq LIMIT ?",
                (tenant, partition, before or 0, _CATCH_UP_BATCH),
            )
            if self.indexes.get(tenant, partition) is not index or index.position != before:
                continue  # another lookup of this worker moved it on meanwhile: read from there
            index.extend(
                [(seq, entry_id, expires, decode_vector(blob)) for seq, entry_id, blob, expires in rows]
            )
            if rows:
                index.position = rows[-1][0]
            if len(rows) == _CATCH_UP_BATCH:
                await asyncio.sleep(0)  # a long catch-up lets the other requests of this worker run
                continue
            mark = await self._read(
                "SELECT evicted_through FROM cache_partitions WHERE tenant = ? AND partition = ?",
                (tenant, partition),
            )
            index.forget(through=mark[0][0] if mark else None, now=self._now())
            return index

    # --- running statements ---------------------------------------------------------------------

    async def _read(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._retrying(lambda db: db.execute(sql, args).fetchall(), write=False)

    async def _write(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._busy is None:
            self._busy = asyncio.Lock()
        async with self._busy:  # this worker's writers queue here instead of each polling the lock
            return await self._retrying(body, write=True)

    async def _retrying(self, body: Callable[[sqlite3.Connection], _T], *, write: bool) -> _T:
        deadline = time.monotonic() + self._busy_timeout_s
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                return _transaction(self._connection(), body) if write else body(self._connection())
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy:
                    raise self._failed(exc) from exc
                if time.monotonic() >= deadline:
                    raise BackendUnavailable(
                        "the response cache (SQLite) stayed locked by another process",
                        backend="sqlite",
                        detail=str(exc),
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc

    def _failed(self, exc: sqlite3.Error) -> StoreError:
        return StoreError("the response cache (SQLite) failed", backend="sqlite", detail=str(exc))

    def _connection(self) -> sqlite3.Connection:
        # Opened on first use, so constructing a backend is free (and fork-safe).
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # timeout=0: a busy lock raises at once and _retrying backs off without blocking the loop.
            db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # a cache may lose its last commits on power loss
                migrate(SQLiteTarget(db), _MIGRATIONS, _LEDGER)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db


def _transaction(db: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = body(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (I/O error, full disk)
            db.execute("ROLLBACK")
        raise
    return result


def _uncount(db: sqlite3.Connection, removed: Iterable[tuple[str, str]]) -> None:
    """Lower the row counts of the partitions that lost ``removed`` rows ((tenant, partition) each)."""
    for (tenant, partition), n in Counter(removed).items():
        db.execute(
            "UPDATE cache_partitions SET entries = entries - ? WHERE tenant = ? AND partition = ?",
            (n, tenant, partition),
        )


def _entry(row: Sequence[Any]) -> CacheEntry:
    (
        entry_id,
        tenant,
        partition,
        exact_key,
        created,
        expires,
        question,
        response,
        vector,
        deps,
        tokens,
        cost,
    ) = row
    return CacheEntry(
        id=entry_id,
        tenant=tenant,
        partition=partition,
        exact_key=exact_key,
        question=question,
        response=decode_response(response),
        created=float(created),
        expires=float(expires),
        vector=decode_vector(vector),
        dependencies=decode_dependencies(deps),
        tokens=int(tokens),
        cost_usd=float(cost),
    )
