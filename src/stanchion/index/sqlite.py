"""The embedded Store: one SQLite file (WAL) with FTS5 for BM25 and vectors searched in process.

Layout: ``documents`` and ``chunks`` rows, ``chunk_terms`` (FTS5 over analysed terms, rowid =
chunk rowid), ``chunk_acl`` (one row per access group), ``embeddings`` (vectors keyed by model and
chunk content hash, which doubles as the embedding cache), ``units`` (which source files are fully
ingested). Every write is one transaction, so a crash never leaves half a document visible.

Vectors are searched exactly (one matrix product) from a matrix loaded lazily and reloaded when
any connection commits (``PRAGMA data_version``). Keyword search runs, by default, on an in-memory
BM25 index built the same way from the FTS5 terms (``bm25.py`` says why); ``keyword_engine="fts5"``
ranks inside FTS5 instead. Filters restrict the rows scored, so a filtered search can never miss a
match nor return one it excludes. They are resolved in memory (``filter_index.py``: metadata
columns loaded per key, from the same snapshot of the file as the matrix or BM25 index they
restrict), or in SQL when the file keeps changing under a search and for the FTS5 engine.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from stanchion.core.analyze import terms as analyze
from stanchion.core.filters import Condition, SearchFilter
from stanchion.core.text import index_text
from stanchion.errors import StoreError
from stanchion.index.bm25 import BM25Index
from stanchion.index.filter_index import FilterIndex, StaleSnapshot, positions
from stanchion.index.migrations import DOCUMENT_TENANT, migrate
from stanchion.index.store import DocumentWrite, Scored, StoredDocument, StoreStats, Vector
from stanchion.types import Chunk, InjectionMark

KeywordEngine = Literal["memory", "fts5"]
_T = TypeVar("_T", BM25Index, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]])
log = logging.getLogger(__name__)
_CHUNK_COLUMNS = "c.id, c.document_id, c.text, c.position, c.metadata, c.access_groups, c.injection_score, c.injection_reasons"


class SQLiteStore:
    """The embedded index. Safe to share between threads; one writer at a time (SQLite's rule)."""

    def __init__(self, path: str | Path, *, keyword_engine: KeywordEngine = "memory") -> None:
        self.path = Path(path)
        self.keyword_engine = keyword_engine
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open index {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        try:
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            migrate(self._db)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path} is not a Stanchion index (or is corrupt): {exc}") from exc
        self._writes = 0  # our own commits; PRAGMA data_version only counts other connections
        self._matrix: (
            tuple[int, npt.NDArray[np.int64], npt.NDArray[np.object_], npt.NDArray[np.float32]] | None
        ) = None
        self._terms: tuple[int, BM25Index, npt.NDArray[np.object_]] | None = None
        self._filters: tuple[int, FilterIndex] | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    # --- writes ---------------------------------------------------------------------------------
    def write(self, batch: Sequence[DocumentWrite], *, model: str) -> None:
        with self._lock, self._transaction():
            for item in batch:
                if len(item.chunks) != len(item.vectors):
                    raise StoreError(
                        f"{item.document.id}: {len(item.chunks)} chunks but {len(item.vectors)} vectors"
                    )
                self._delete(item.document.id)
                self._insert(item, model)

    def _insert(self, item: DocumentWrite, model: str) -> None:
        doc = item.document
        self._db.execute(
            "INSERT INTO documents(id, source, path, title, hash, unit, metadata, access_groups, chunk_count)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (
                doc.id,
                doc.source,
                doc.path,
                doc.title,
                doc.hash,
                item.unit,
                _dumps(dict(doc.metadata)),
                _dumps(list(doc.access_groups)),
                len(item.chunks),
            ),
        )
        for chunk, vector in zip(item.chunks, item.vectors, strict=True):
            cur = self._db.execute(
                "INSERT INTO chunks(id, document_id, position, text, hash, model, metadata, access_groups, public,"
                " injection_score, injection_reasons) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    chunk.id,
                    doc.id,
                    chunk.position,
                    chunk.text,
                    chunk.hash,
                    model,
                    _dumps(dict(chunk.metadata)),
                    _dumps(list(chunk.access_groups)),
                    0 if chunk.access_groups else 1,
                    None if chunk.injection is None else chunk.injection.score,
                    None if chunk.injection is None else _dumps(list(chunk.injection.reasons)),
                ),
            )
            rowid = cur.lastrowid
            self._db.execute(
                "INSERT INTO chunk_terms(rowid, terms) VALUES (?, ?)",
                (rowid, " ".join(analyze(index_text(chunk)))),
            )
            self._db.executemany(
                "INSERT INTO chunk_acl(chunk, grp) VALUES (?, ?)",
                [(rowid, g) for g in set(chunk.access_groups)],
            )
            self._db.execute(
                "INSERT OR REPLACE INTO embeddings(model, hash, dim, vector) VALUES (?,?,?,?)",
                (model, chunk.hash, int(vector.shape[0]), np.asarray(vector, dtype=np.float32).tobytes()),
            )

    def _delete(self, document_id: str) -> bool:
        rowids = [
            r[0] for r in self._db.execute("SELECT rowid FROM chunks WHERE document_id = ?", (document_id,))
        ]
        self._db.executemany("DELETE FROM chunk_terms WHERE rowid = ?", [(r,) for r in rowids])
        # chunk_acl and chunks go by ON DELETE CASCADE from documents.
        return self._db.execute("DELETE FROM documents WHERE id = ?", (document_id,)).rowcount > 0

    def delete_documents(self, ids: Sequence[str]) -> int:
        with self._lock, self._transaction():
            return sum(self._delete(i) for i in ids)

    def set_unit(self, source: str, unit: str, signature: str) -> None:
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO units(source, unit, signature) VALUES (?,?,?)",
                (source, unit, signature),
            )

    def delete_unit(self, source: str, unit: str) -> None:
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM units WHERE source = ? AND unit = ?", (source, unit))

    def prune_embeddings(self) -> int:
        """Drop cached vectors no chunk uses any more (keeps the file from growing forever)."""
        with self._lock, self._transaction():
            return self._db.execute(
                "DELETE FROM embeddings WHERE NOT EXISTS"
                " (SELECT 1 FROM chunks c WHERE c.model = embeddings.model AND c.hash = embeddings.hash)"
            ).rowcount

    # --- reads ----------------------------------------------------------------------------------
    def units(self, source: str) -> dict[str, str]:
        rows = self._db.execute("SELECT unit, signature FROM units WHERE source = ?", (source,))
        return dict(rows.fetchall())

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
        clauses = ["1 = 1"]
        params: list[object] = []
        for condition, value in (
            ("source = ?", source),
            ("unit = ?", unit),
            (f"{DOCUMENT_TENANT} = ?", tenant),
            ("id > ?", after),
        ):
            if value is not None:
                clauses.append(condition)
                params.append(value)
        if groups is not None:
            wanted = sorted(groups)  # none: only documents open to all (SQLite allows "IN ()")
            clauses.append(
                "(json_array_length(access_groups) = 0 OR EXISTS (SELECT 1 FROM"
                f" json_each(documents.access_groups) WHERE value IN ({_marks(wanted)})))"
            )
            params.extend(wanted)
        rows = self._db.execute(
            "SELECT id, source, path, title, hash, unit, chunk_count, metadata, access_groups FROM documents"
            f" WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
            [*params, -1 if limit is None else limit],  # -1: no limit
        )
        return [
            StoredDocument(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), tuple(json.loads(r[8]))
            )
            for r in rows
        ]

    def cached_vectors(self, model: str, hashes: Sequence[str]) -> dict[str, Vector]:
        found: dict[str, Vector] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            rows = self._db.execute(
                f"SELECT hash, vector FROM embeddings WHERE model = ? AND hash IN ({_marks(part)})",
                [model, *part],
            )
            found.update((h, np.frombuffer(v, dtype=np.float32)) for h, v in rows)
        return found

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        out: dict[str, Chunk] = {}
        for start in range(0, len(ids), 500):
            part = list(ids[start : start + 500])
            rows = self._reader().execute(
                f"SELECT {_CHUNK_COLUMNS} FROM chunks c WHERE c.id IN ({_marks(part)})", part
            )
            out.update((r[0], _chunk(r)) for r in rows)
        return [out[i] for i in ids if i in out]

    def keyword_search(self, terms: Sequence[str], k: int, where: SearchFilter) -> list[Scored]:
        if not terms or k <= 0:
            return []
        if self.keyword_engine == "memory":
            return self._memory_keyword_search(terms, k, where)
        match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms)
        if where.is_empty:
            # Rank inside FTS5 alone, then join the k winners: joining every match first costs 2x.
            sql = (
                "SELECT c.id, s.score FROM (SELECT rowid, -bm25(chunk_terms) AS score FROM chunk_terms"
                " WHERE chunk_terms MATCH ? ORDER BY bm25(chunk_terms) LIMIT ?) s"
                " JOIN chunks c ON c.rowid = s.rowid ORDER BY s.score DESC, c.rowid"
            )
            rows = self._reader().execute(sql, [match, k]).fetchall()
        else:
            clause, params = _where_sql(where)
            sql = (
                "SELECT c.id, -bm25(chunk_terms) AS score FROM chunk_terms"
                " JOIN chunks c ON c.rowid = chunk_terms.rowid"
                f" WHERE chunk_terms MATCH ? {clause} ORDER BY bm25(chunk_terms) LIMIT ?"
            )
            rows = self._reader().execute(sql, [match, *params, k]).fetchall()
        return [Scored(r[0], float(r[1])) for r in rows]

    def _memory_keyword_search(self, terms: Sequence[str], k: int, where: SearchFilter) -> list[Scored]:
        if where.is_empty:
            index, ids = self._load_terms()[1:]
            allowed = None
        else:
            (index, ids), allowed = self._restricted(self._load_terms, where)
            if not len(allowed):
                return []
        return [Scored(str(ids[row]), score) for row, score in index.search(terms, k, allowed)]

    def _restricted(
        self, load: Callable[[], tuple[int, _T, npt.NDArray[np.object_]]], where: SearchFilter
    ) -> tuple[tuple[_T, npt.NDArray[np.object_]], npt.NDArray[np.int64]]:
        """A cache (``load``: its version, its data, its chunk ids) and the positions in it of the
        chunks ``where`` admits, both read from the same state of the file."""
        with self._lock:
            for _ in range(3):
                version, data, ids = load()
                try:
                    filters = self._load_filters()
                    # -1 is "a commit landed during the load" for both: never the same snapshot
                    # (a row of one paired with the groups of another would leak a chunk).
                    if version != -1 and filters[0] == version:
                        return (data, ids), positions(_rowids(data), filters[1].admitted(where))
                except StaleSnapshot:
                    pass
                log.info("index.filter_snapshot_moved", extra={"path": str(self.path)})
            # Another process keeps committing: evaluate the filter in SQL, as of now.
            version, data, ids = load()
            return (data, ids), self._allowed_positions(_rowids(data), where)

    def _load_filters(self) -> tuple[int, FilterIndex]:
        """Access groups of every chunk now, and metadata columns read on demand (same version)."""
        with self._lock:
            version = self._version()
            if self._filters is None or self._filters[0] != version:
                # Both from indexes (a covering one for rowids): no pass over the chunks' text.
                rowids = [r[0] for r in self._db.execute("SELECT rowid FROM chunks")]
                acl = self._db.execute("SELECT chunk, grp FROM chunk_acl").fetchall()
                loaded = FilterIndex.build(rowids, acl, lambda key: self._column(key, version))
                self._filters = (version if self._version() == version else -1, loaded)
            return self._filters

    def _column(self, key: str, version: int) -> list[tuple[int, object]]:
        """(rowid, value) of every chunk whose metadata has ``key``, as of ``version``."""
        path = '$."' + key.replace('"', "") + '"'
        with self._lock:
            if self._version() != version:
                raise StaleSnapshot(f"the index changed before reading the metadata key {key!r}")
            # json_type/json_extract, not the '->' operator: that needs SQLite 3.38 (2022), and
            # Ubuntu 22.04's Python links 3.37.
            rows = self._db.execute(
                "SELECT rowid, json_type(metadata, ?), json_extract(metadata, ?) FROM chunks "
                "WHERE json_type(metadata, ?) IS NOT NULL ORDER BY rowid",
                (path, path, path),
            ).fetchall()
            if self._version() != version:
                raise StaleSnapshot(f"the index changed while reading the metadata key {key!r}")
        return [(rowid, _json_value(kind, value)) for rowid, kind, value in rows]

    def _allowed_positions(self, rowids: npt.NDArray[np.int64], where: SearchFilter) -> npt.NDArray[np.int64]:
        """Positions in ``rowids`` of the chunks the filter admits, computed in SQL."""
        clause, params = _where_sql(where)
        allowed = np.fromiter(
            (
                r[0]
                for r in self._reader().execute(f"SELECT c.rowid FROM chunks c WHERE 1=1 {clause}", params)
            ),
            dtype=np.int64,
        )
        if not len(rowids):
            return np.zeros(0, dtype=np.int64)
        positions = np.searchsorted(rowids, allowed)
        # A chunk committed after the cache was loaded is not searchable yet: skip it, never misplace it.
        inside = positions < len(rowids)
        positions, allowed = positions[inside], allowed[inside]
        admitted: npt.NDArray[np.int64] = positions[rowids[positions] == allowed]
        return admitted

    def _load_terms(self) -> tuple[int, BM25Index, npt.NDArray[np.object_]]:
        """(version, the BM25 index, its chunk ids), reloaded when any connection has committed.

        A version of -1 says a commit landed during the load: usable, but never taken as the same
        state as another cache (and reloaded next time)."""
        with self._lock:
            version = self._version()
            if self._terms is None or self._terms[0] != version:
                rows = self._db.execute(
                    "SELECT t.rowid, t.terms, c.id FROM chunk_terms t JOIN chunks c ON c.rowid = t.rowid"
                    " ORDER BY t.rowid"
                ).fetchall()
                index = BM25Index((r[0], r[1]) for r in rows)
                stable = version if self._version() == version else -1
                self._terms = (stable, index, np.array([r[2] for r in rows], dtype=object))
            return self._terms

    def _version(self) -> int:
        # data_version moves when another connection commits; _writes counts our own commits.
        return int(self._db.execute("PRAGMA data_version").fetchone()[0]) + self._writes

    def vector_search(self, vector: Vector, k: int, where: SearchFilter) -> list[Scored]:
        if k <= 0:
            return []
        if where.is_empty:
            _, (rowids, matrix), ids = self._load_matrix()
            candidates = None
        else:
            ((rowids, matrix), ids), candidates = self._restricted(self._load_matrix, where)
        if not len(rowids):
            return []
        if matrix.shape[1] != vector.shape[0]:
            raise StoreError(
                f"query vector has {vector.shape[0]} dimensions but the index holds {matrix.shape[1]}; "
                "was the index built with another embedding model?"
            )
        if candidates is None:
            scores = matrix @ vector
            candidates = np.arange(len(rowids))
        elif not len(candidates):
            return []
        elif 3 * len(candidates) > len(rowids):
            scores = (matrix @ vector)[candidates]  # one product beats copying most of the matrix
        else:
            scores = matrix[candidates] @ vector
        top = min(k, len(candidates))
        best = np.argpartition(-scores, top - 1)[:top]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [Scored(str(ids[candidates[i]]), float(scores[i])) for i in best]

    def _load_matrix(
        self,
    ) -> tuple[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]], npt.NDArray[np.object_]]:
        """(version, (sorted chunk rowids, their vectors), their ids), cached until any connection
        commits; the version is -1 when a commit landed during the load (as in ``_load_terms``)."""
        with self._lock:
            version = self._version()
            if self._matrix is not None and self._matrix[0] == version:
                return self._matrix[0], (self._matrix[1], self._matrix[3]), self._matrix[2]
            rows = self._db.execute(
                "SELECT c.rowid, c.id, e.vector FROM chunks c"
                " JOIN embeddings e ON e.model = c.model AND e.hash = c.hash ORDER BY c.rowid"
            ).fetchall()
            rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            ids = np.array([r[1] for r in rows], dtype=object)
            blob = b"".join(r[2] for r in rows)
            matrix = (
                np.frombuffer(blob, dtype=np.float32).reshape(len(rows), -1)
                if rows
                else np.zeros((0, 0), np.float32)
            )
            stable = version if self._version() == version else -1
            self._matrix = (stable, rowids, ids, matrix)
            return stable, (rowids, matrix), ids

    def _reader(self) -> sqlite3.Connection:
        """A read-only connection per thread, so a BM25 query and a vector search can overlap."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def ping(self) -> None:
        try:
            self._reader().execute("SELECT 1 FROM documents LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the index at {self.path}: {exc}") from exc

    def stats(self) -> StoreStats:
        docs, chunks = self._db.execute(
            "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks)"
        ).fetchone()
        vectors = self._db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        return StoreStats(int(docs), int(chunks), int(vectors))

    def close(self) -> None:
        with self._lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            self._db.close()

    # --- helpers --------------------------------------------------------------------------------
    def _transaction(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error; bumps the store's write counter."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        db = self._store._db
        if exc_type is None:
            db.execute("COMMIT")
            self._store._writes += 1
        else:
            db.execute("ROLLBACK")


def _rowids(data: BM25Index | tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]) -> npt.NDArray[np.int64]:
    return data.rowids if isinstance(data, BM25Index) else data[0]


def _marks(items: Sequence[object]) -> str:
    return ",".join("?" * len(items))


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _chunk(row: Sequence[Any]) -> Chunk:
    return Chunk(
        id=row[0],
        document_id=row[1],
        text=row[2],
        position=row[3],
        metadata=json.loads(row[4]),
        access_groups=tuple(json.loads(row[5])),
        injection=None if row[6] is None else InjectionMark(float(row[6]), tuple(json.loads(row[7] or "[]"))),
    )


def _where_sql(where: SearchFilter) -> tuple[str, list[object]]:
    """SQL (starting with AND) that applies the filter inside the query, and its parameters."""
    parts: list[str] = []
    params: list[object] = []
    if where.groups is not None:
        groups = sorted(where.groups)
        parts.append(
            "(c.public = 1"
            + (
                f" OR EXISTS (SELECT 1 FROM chunk_acl a WHERE a.chunk = c.rowid AND a.grp IN ({_marks(groups)}))"
                if groups
                else ""
            )
            + ")"
        )
        params.extend(groups)
    for cond in where.conditions:
        sql, cond_params = _condition_sql(cond)
        parts.append(sql)
        params.extend(cond_params)
    return ("AND " + " AND ".join(parts) if parts else ""), params


_SQL_OPS = {"eq": "=", "ne": "=", "in": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _condition_sql(cond: Condition) -> tuple[str, list[object]]:
    # json_each over a scalar yields that one value, over a list each element: one rule for both.
    path = '$."' + cond.key.replace('"', "") + '"'
    wanted = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    op = _SQL_OPS[cond.op]
    tests: list[str] = []
    params: list[object] = [path]
    for value in wanted:
        if isinstance(value, bool):
            # Python: True == 1 == 1.0, and a boolean has no order.
            tests.append(
                f"(j.type = '{'true' if value else 'false'}' OR (j.type IN ('integer','real') AND j.value = {int(value)}))"
                if op == "="
                else "0"
            )
        elif isinstance(value, int | float):
            # As Python compares: numbers as numbers, text as text, a boolean equal to 1 or 0 only.
            boolean = (
                f"WHEN 'true' THEN {int(value == 1)} WHEN 'false' THEN {int(value == 0)}" if op == "=" else ""
            )
            tests.append(
                f"(CASE j.type WHEN 'integer' THEN j.value {op} ? WHEN 'real' THEN j.value {op} ?"
                f" WHEN 'text' THEN j.value {op} ? {boolean} ELSE 0 END)"
            )
            params.extend([value, value, str(value)])
        else:
            tests.append(
                f"(j.type NOT IN ('null','true','false','array','object') AND CAST(j.value AS TEXT) {op} ?)"
            )
            params.append(value)
    body = " OR ".join(tests)
    exists = f"EXISTS (SELECT 1 FROM json_each(c.metadata, ?) j WHERE {body})"
    return (f"NOT {exists}" if cond.op == "ne" else exists), params


def _json_value(kind: str, value: object) -> object:
    """A metadata value as ``json.loads`` gives it, from SQLite's ``json_type`` and ``json_extract``."""
    if kind in ("array", "object"):
        return json.loads(str(value))
    if kind == "true":
        return True
    if kind == "false":
        return False
    return value  # text, integer, real; None for a JSON null
