"""The PostgreSQL Store: pgvector HNSW for dense search, BM25 computed in SQL from a postings table.

Layout (schema ``stanchion_index``, created by ``pg_migrations``): ``documents``; ``chunks`` with
their vector (``vector(dim)``, HNSW cosine index), ``metadata`` (jsonb) and ``access_groups``
(text[], GIN); ``postings`` (chunk, term, tf, chunk length) with a B-tree on term;
``corpus_stats`` (BM25's N and total length, and a generation every write moves: each worker keeps
term document frequencies until it does); ``embeddings`` (the cache keyed by model and chunk
content hash, as in SQLite); ``units``. Every ``write`` is one transaction. Filters become SQL on the
chunk rows, so they restrict the rows searched rather than filtering results afterwards.

Both searches are exact with respect to filters. A filter's admitted chunks are counted (once a
minute per filter: the count only picks the plan). A selective filter is searched on exactly its
chunks: BM25 by (chunk, term) lookups, vectors by an exact scan. A broad one (the server always
adds a tenant condition) searches a candidate set sized by its share, with the filter inside
(HNSW's ef_search nearest; BM25's best matches), which is provably the right answer when it yields
k rows, and otherwise searches every admitted row.

Safe to share between threads (a connection pool) and between processes (PostgreSQL's MVCC: a
commit is visible to every other worker's next query).
"""

from __future__ import annotations

import json
import logging
import math
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from stanchion.core.analyze import terms as analyze
from stanchion.core.filters import SearchFilter
from stanchion.core.text import index_text
from stanchion.errors import BackendUnavailable, StoreError
from stanchion.index.filter_index import filter_key
from stanchion.index.pg_migrations import DOCUMENT_TENANT, SCHEMA, connect, describe_dsn, migrate, redact_dsn
from stanchion.index.pg_sql import bm25_sql, vector_sql, where_sql
from stanchion.index.store import DocumentWrite, Scored, StoredDocument, StoreStats, Vector
from stanchion.types import Chunk, InjectionMark

MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
KEYWORD_WINDOW = 1000  # best keyword matches checked against a broad filter before checking them all
KEYWORD_WINDOW_MAX = 10_000
# A filter admitting at most this many chunks ranks them by BM25 through (chunk, term) lookups.
LOOKUP_MAX = 2000
# How long a filter's count of admitted chunks is trusted. It only picks a plan: a stale one costs
# time, never a result (every plan checks the filter on every row it returns).
SHARE_TTL_S = 60.0
_SHARES_KEPT = 1024
_DF_KEPT = 200_000  # terms whose document frequency is kept (per worker, until the next write)
_S = SCHEMA
log = logging.getLogger(__name__)


class PostgresStore:
    """The server index. ``ef_search`` trades HNSW recall for speed (raised to ``k`` when smaller)."""

    def __init__(
        self,
        dsn: str,
        *,
        dim: int,
        ef_search: int = 100,
        pool_size: int = 8,
        connect_timeout: int = 10,
        pool_timeout_s: float = 5.0,
    ) -> None:
        self.dim = dim
        self.ef_search = ef_search
        self._shares: dict[object, tuple[float, int, float]] = {}  # filter -> (until, admitted, share)
        self._shares_lock = threading.Lock()
        self._df: tuple[int, dict[str, float]] = (-1, {})  # (corpus generation, term -> df)
        self._df_lock = threading.Lock()
        self._server = describe_dsn(dsn)
        self._dsn = dsn
        migrate(dsn, dim=dim, connect_timeout=connect_timeout)
        with connect(dsn, connect_timeout=connect_timeout) as conn:
            info = TypeInfo.fetch(conn, "vector")
        assert info is not None, "migrate() installs pgvector"
        oid = info.oid
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"connect_timeout": connect_timeout},
            configure=lambda conn: _configure(conn, oid),
            check=ConnectionPool.check_connection,  # a server restart costs one query, not an error
            # With the server down a query fails after pool_timeout_s (BackendUnavailable, a 503);
            # reconnection back-off is capped below it, so the first query after an outage succeeds.
            timeout=pool_timeout_s,
            reconnect_timeout=pool_timeout_s / 2,
            name="stanchion-index",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout + 5)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreError(
                f"cannot open a connection pool to PostgreSQL at {self._server}: {redact_dsn(str(exc), dsn)}"
            ) from None

    # --- writes ---------------------------------------------------------------------------------
    def write(self, batch: Sequence[DocumentWrite], *, model: str) -> None:
        latest = {item.document.id: item for item in batch}  # a document twice: the last one wins
        if not latest:
            return
        with self._connection(f"writing documents {_names(list(latest))}") as conn:
            removed, removed_length = self._delete(conn, list(latest))[1:]
            documents, chunks, cache = [], [], {}
            for item in latest.values():
                # Checked after the delete on purpose: a bad document rolls back the whole batch.
                self._check(item)
                doc = item.document
                documents.append(
                    (doc.id, doc.source, doc.path, doc.title, doc.hash, item.unit,
                     _jsonb(doc.metadata), list(doc.access_groups), len(item.chunks))
                )  # fmt: skip
                for chunk, vector in zip(item.chunks, item.vectors, strict=True):
                    tokens = analyze(index_text(chunk))
                    tf = Counter(tokens)
                    mark = chunk.injection
                    chunks.append(
                        (chunk.id, doc.id, chunk.position, chunk.text, chunk.hash, model,
                         _jsonb(chunk.metadata), list(chunk.access_groups), len(tokens), vector,
                         None if mark is None else mark.score, None if mark is None else list(mark.reasons),
                         len(tokens), list(tf), list(tf.values()))
                    )  # fmt: skip
                    cache[chunk.hash] = vector
            cur = conn.cursor()  # executemany pipelines its statements: one round trip per call
            cur.executemany(
                f"INSERT INTO {_S}.documents (id, source, path, title, hash, unit, metadata,"
                " access_groups, chunk_count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                documents,
            )
            # One statement per chunk inserts the chunk and its postings.
            cur.executemany(
                f"WITH c AS (INSERT INTO {_S}.chunks (id, document_id, position, text, hash, model,"
                " metadata, access_groups, length, embedding, injection_score, injection_reasons)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING rowid)"
                f" INSERT INTO {_S}.postings (chunk, term, tf, len)"
                " SELECT c.rowid, u.term, u.tf, %s FROM c, unnest(%s::text[], %s::int[]) AS u(term, tf)",
                chunks,
            )
            # Sorted, so two writers sharing cached vectors lock them in the same order (no deadlock).
            cur.executemany(
                f"INSERT INTO {_S}.embeddings (model, hash, vector) VALUES (%s, %s, %s)"
                " ON CONFLICT (model, hash) DO UPDATE SET vector = EXCLUDED.vector",
                [(model, h, cache[h]) for h in sorted(cache)],
            )
            added_length = sum(row[8] for row in chunks)
            self._count(conn, len(chunks) - removed, added_length - removed_length)

    def _check(self, item: DocumentWrite) -> None:
        doc_id = item.document.id
        if len(item.chunks) != len(item.vectors):
            raise StoreError(f"{doc_id}: {len(item.chunks)} chunks but {len(item.vectors)} vectors")
        if item.chunks and (item.vectors.ndim != 2 or item.vectors.shape[1] != self.dim):
            raise StoreError(
                f"{doc_id}: index was built with dim {self.dim}, the embedder gives "
                f"{item.vectors.shape[-1]}: use a new database or re-ingest"
            )

    @staticmethod
    def _delete(conn: psycopg.Connection[Any], ids: list[str]) -> tuple[int, int, int]:
        """Delete documents with their chunks and postings: (documents, chunks, their length) removed."""
        row = conn.execute(
            f"WITH gone AS (DELETE FROM {_S}.chunks WHERE document_id = ANY(%s) RETURNING rowid, length),"
            f" p AS (DELETE FROM {_S}.postings WHERE chunk IN (SELECT rowid FROM gone))"
            " SELECT count(*), coalesce(sum(length), 0) FROM gone",
            [ids],
        ).fetchone()
        assert row is not None
        documents = conn.execute(f"DELETE FROM {_S}.documents WHERE id = ANY(%s)", [ids]).rowcount
        return documents, int(row[0]), int(row[1])

    @staticmethod
    def _count(conn: psycopg.Connection[Any], chunks: int, length: int) -> None:
        """Move BM25's N and total length, and the generation that says the postings changed.

        The stats row is a lock all writers share: take it last (each caller does, once)."""
        conn.execute(
            f"UPDATE {_S}.corpus_stats SET chunks = chunks + %s, length = length + %s,"
            " generation = generation + 1",
            [chunks, length],
        )

    def delete_documents(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with self._connection(f"deleting documents {_names(ids)}") as conn:
            documents, chunks, length = self._delete(conn, list(ids))
            if documents:
                self._count(conn, -chunks, -length)
            return documents

    def set_unit(self, source: str, unit: str, signature: str) -> None:
        with self._connection("recording an ingested unit") as conn:
            conn.execute(
                f"INSERT INTO {_S}.units (source, unit, signature) VALUES (%s, %s, %s)"
                " ON CONFLICT (source, unit) DO UPDATE SET signature = EXCLUDED.signature",
                [source, unit, signature],
            )

    def delete_unit(self, source: str, unit: str) -> None:
        with self._connection("deleting an ingested unit") as conn:
            conn.execute(f"DELETE FROM {_S}.units WHERE source = %s AND unit = %s", [source, unit])

    def prune_embeddings(self) -> int:
        """Drop cached vectors no chunk uses any more (keeps the cache from growing forever)."""
        with self._connection("pruning cached embeddings") as conn:
            return conn.execute(
                f"DELETE FROM {_S}.embeddings e WHERE NOT EXISTS"
                f" (SELECT 1 FROM {_S}.chunks c WHERE c.hash = e.hash AND c.model = e.model)"
            ).rowcount

    # --- reads ----------------------------------------------------------------------------------
    def units(self, source: str) -> dict[str, str]:
        with self._connection("reading units") as conn:
            rows = conn.execute(f"SELECT unit, signature FROM {_S}.units WHERE source = %s", [source])
            return {r[0]: r[1] for r in rows}

    def documents(
        self,
        source: str | None = None,
        *,
        unit: str | None = None,
        tenant: str | None = None,
        groups: frozenset[str] | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[StoredDocument]:
        clauses = ["true"]
        params: list[object] = []
        for column, value in (("source", source), ("unit", unit), (DOCUMENT_TENANT, tenant)):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if groups is not None:
            clauses.append("(cardinality(access_groups) = 0 OR access_groups && %s::text[])")
            params.append(sorted(groups))
        if after is not None:
            clauses.append('id COLLATE "C" > %s')  # the listing's order, so pages neither skip nor repeat
            params.append(after)
        sql = (
            "SELECT id, source, path, title, hash, unit, chunk_count, metadata, access_groups"
            f' FROM {_S}.documents WHERE {" AND ".join(clauses)} ORDER BY id COLLATE "C"'
        )
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self._connection("listing documents") as conn:
            rows = conn.execute(sql, params).fetchall()
        return [StoredDocument(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], tuple(r[8])) for r in rows]

    def cached_vectors(self, model: str, hashes: Sequence[str]) -> dict[str, Vector]:
        if not hashes:
            return {}
        with self._connection("reading cached embeddings") as conn:
            cur = conn.cursor(binary=True)  # vectors as float32 bytes, not decimal text
            cur.execute(
                f"SELECT hash, vector FROM {_S}.embeddings WHERE model = %s AND hash = ANY(%s)",
                [model, list(dict.fromkeys(hashes))],
            )
            return {r[0]: r[1] for r in cur}

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        if not ids:
            return []
        with self._connection("reading chunks") as conn:
            rows = conn.execute(
                "SELECT id, document_id, text, position, metadata, access_groups, injection_score,"
                f" injection_reasons FROM {_S}.chunks WHERE id = ANY(%s)",
                [list(ids)],
            )
            found = {
                r[0]: Chunk(
                    r[0], r[1], r[2], r[3], r[4], tuple(r[5]),
                    None if r[6] is None else InjectionMark(float(r[6]), tuple(r[7] or ())),
                )
                for r in rows
            }  # fmt: skip
        return [found[i] for i in ids if i in found]

    def keyword_search(self, terms: Sequence[str], k: int, where: SearchFilter) -> list[Scored]:
        if not terms or k <= 0:
            return []
        counts = Counter(terms)  # a term given n times weighs n times, as in bm25.BM25Index
        distinct = list(counts)
        clause, params = where_sql(where)
        with self._connection("keyword search") as conn:
            stats = [distinct, self._frequencies(conn, distinct), [float(counts[t]) for t in distinct]]
            window = k
            if clause:
                admitted, share = self._admitted(conn, where, clause, params)
                if admitted == 0:
                    return []
                if admitted <= LOOKUP_MAX:
                    # Few chunks: score exactly those, a (chunk, term) lookup each, not every match.
                    sql = bm25_sql(clause, None, lookup=True)
                    return [Scored(r[0], float(r[1])) for r in conn.execute(sql, [*stats, *params, k])]
                # Checking the filter on a match costs a row lookup (100 ms for 60k matches), so
                # check it on the best ``window`` only, sized to hold ~3k admitted chunks (at least
                # 1000: every match is scored before the limit anyway, so a smaller one saves
                # little). If k of them pass, they are the exact answer: every chunk outside the
                # window ranks below them all.
                window = min(max(KEYWORD_WINDOW, 10 * k, math.ceil(3 * k / share)), KEYWORD_WINDOW_MAX)
            rows = conn.execute(bm25_sql(clause, window), [*stats, window, *params, k]).fetchall()
            if clause and len(rows) < k:
                rows = conn.execute(bm25_sql(clause, None), [*stats, *params, k]).fetchall()
        return [Scored(r[0], float(r[1])) for r in rows]

    def vector_search(self, vector: Vector, k: int, where: SearchFilter) -> list[Scored]:
        if k <= 0:
            return []
        if vector.shape != (self.dim,):
            raise StoreError(
                f"query vector has {vector.shape[-1]} dimensions but the index holds {self.dim}; "
                "was the index built with another embedding model?"
            )
        # pgvector 0.6 takes the ef_search nearest candidates from HNSW, then the executor applies
        # the WHERE clause and skips dead rows: fewer than k rows back means admitted rows may have
        # been missed. k rows back is as good as unfiltered HNSW (k admitted rows among the nearest
        # ef candidates means the k nearest admitted rows are among them). So: HNSW, HNSW with the
        # largest candidate list (~20 ms at 100k chunks), then an exact scan of the admitted rows
        # (~300 ms at 100k chunks unfiltered; cheap when a filter admits few rows).
        # With a filter, ef is sized so that the candidates hold ~1.5 k admitted rows, and a filter
        # too selective for even the largest list (a file, a small group) goes straight to the
        # exact scan: the HNSW tries would cost ~30 ms for nothing.
        ef = max(self.ef_search, k)
        clause, params = where_sql(where)
        with self._connection("vector search") as conn:
            if clause:
                admitted, share = self._admitted(conn, where, clause, params)
                if admitted == 0:
                    return []
                if share < 0.99:
                    ef = min(max(ef, math.ceil(1.5 * k / share)), MAX_EF_SEARCH)
                if share * MAX_EF_SEARCH < k:
                    ef = 0  # even the largest candidate list would not hold k admitted rows
            attempts = sorted({ef, MAX_EF_SEARCH}) if ef else []
            for ef in (ef for ef in attempts if k <= ef <= MAX_EF_SEARCH):
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef)])  # this transaction
                rows = conn.execute(*vector_sql(vector, k, where, exact=False)).fetchall()
                if len(rows) >= k:
                    break
            else:
                rows = conn.execute(*vector_sql(vector, k, where, exact=True)).fetchall()
        return [Scored(r[0], float(r[1])) for r in rows]

    def _frequencies(self, conn: psycopg.Connection[Any], terms: list[str]) -> list[float]:
        """Each term's document frequency (BM25's df): counted, then kept until the next write.

        Opens the search's transaction as one snapshot (N, the frequencies and the postings agree),
        in the same round trip as reading the generation."""
        cur = conn.execute(
            f"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT generation FROM {_S}.corpus_stats"
        )
        cur.nextset()
        row = cur.fetchone()
        assert row is not None
        generation = int(row[0])
        with self._df_lock:
            if self._df[0] != generation or len(self._df[1]) > _DF_KEPT:
                self._df = (generation, {})
            known = self._df[1]
            missing = [t for t in terms if t not in known]
        if missing:
            counted = conn.execute(
                f"SELECT q.term, (SELECT count(*) FROM {_S}.postings WHERE term = q.term)"
                " FROM unnest(%s::text[]) AS q(term)",
                [missing],
            ).fetchall()
            with self._df_lock:
                if self._df[0] == generation:
                    self._df[1].update((term, float(df)) for term, df in counted)
            known = {**known, **{term: float(df) for term, df in counted}}
        return [known[t] for t in terms]

    def _admitted(
        self, conn: psycopg.Connection[Any], where: SearchFilter, clause: str, params: list[object]
    ) -> tuple[int, float]:
        """How many chunks ``where`` admits and their share of all chunks (counted, then kept for
        ``SHARE_TTL_S``: a server repeats its tenant and group filters on every query)."""
        key = filter_key(where)
        now = time.monotonic()
        with self._shares_lock:
            known = self._shares.get(key)
        if known is not None and known[0] > now:
            return known[1], known[2]
        row = conn.execute(
            f"SELECT (SELECT count(*) FROM {_S}.chunks c WHERE {clause}), (SELECT chunks FROM {_S}.corpus_stats)",
            params,
        ).fetchone()
        assert row is not None
        admitted, share = int(row[0]), int(row[0]) / max(int(row[1]), int(row[0]), 1)
        if admitted == 0:
            # Not kept: "none" ends a search early, so a kept zero would hide an upload that
            # lands within the TTL (a count only picks a plan; zero would pick the result).
            return admitted, share
        with self._shares_lock:
            if len(self._shares) >= _SHARES_KEPT:
                self._shares.pop(next(iter(self._shares)))
            self._shares[key] = (now + SHARE_TTL_S, admitted, share)
        return admitted, share

    def ping(self) -> None:
        with self._connection("checking the connection") as conn:
            conn.execute("SELECT 1")

    def stats(self) -> StoreStats:
        with self._connection("reading stats") as conn:
            row = conn.execute(
                f"SELECT (SELECT count(*) FROM {_S}.documents), (SELECT chunks FROM {_S}.corpus_stats),"
                f" (SELECT count(*) FROM {_S}.embeddings)"
            ).fetchone()
        assert row is not None
        return StoreStats(int(row[0]), int(row[1]), int(row[2]))

    def close(self) -> None:
        self._pool.close()

    # --- helpers --------------------------------------------------------------------------------
    @contextmanager
    def _connection(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a transaction: committed on success, rolled back on any error."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as exc:
            detail = self._detail(doing, exc)
            log.warning("index.unavailable", extra={"backend": "postgres", "detail": detail})
            raise BackendUnavailable(
                f"{doing}: the index database (PostgreSQL) is unavailable", backend="postgres", detail=detail
            ) from exc
        except psycopg.Error as exc:
            # The message names no server and no SQL: it reaches job results and logs of callers.
            detail = self._detail(doing, exc)
            log.warning("index.failed", extra={"backend": "postgres", "detail": detail})
            raise StoreError(
                f"{doing} failed: the index database (PostgreSQL) refused it ({type(exc).__name__})",
                backend="postgres",
                detail=detail,
            ) from exc

    def _detail(self, doing: str, exc: Exception) -> str:
        """What PostgreSQL said, for the log: server, message, DETAIL and CONTEXT (no password)."""
        parts = [f"{doing} at {self._server}: {type(exc).__name__}: {exc}"]
        diag = getattr(exc, "diag", None)
        for extra in (getattr(diag, "message_detail", None), getattr(diag, "context", None)):
            if extra:
                parts.append(str(extra))
        return redact_dsn(" | ".join(parts), self._dsn)


# --- SQL builders ---------------------------------------------------------------------------------
def _configure(conn: psycopg.Connection[Any], oid: int) -> None:
    """Set up each pooled connection: vector adapters, and no JIT.

    JIT compilation starts above a plan cost that BM25 over a large corpus reaches, and costs tens
    of milliseconds per query: more than it saves on queries this size.
    """
    conn.execute("SET jit = off")
    conn.commit()  # the pool only accepts idle connections back from ``configure``
    _register_vector(conn, oid)


def _register_vector(conn: psycopg.Connection[Any], oid: int) -> None:
    """numpy arrays go out as pgvector's binary format; vectors come back as float32 arrays."""

    class VectorDumper(_VectorDumper):
        pass

    VectorDumper.oid = oid
    conn.adapters.register_dumper(np.ndarray, VectorDumper)
    conn.adapters.register_loader(oid, _VectorTextLoader)
    conn.adapters.register_loader(oid, _VectorBinaryLoader)


class _VectorDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> Buffer:
        values = np.asarray(obj, dtype=">f4")
        return struct.pack(">HH", values.shape[0], 0) + values.tobytes()


class _VectorTextLoader(Loader):
    def load(self, data: Buffer) -> Vector:
        return np.array(bytes(data)[1:-1].split(b","), dtype=np.float32)


class _VectorBinaryLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> Vector:
        (dim,) = struct.unpack_from(">H", data)
        return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


def _jsonb(value: Mapping[str, Any]) -> Jsonb:
    return Jsonb(dict(value), dumps=_dumps)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _names(ids: Sequence[str]) -> str:
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
