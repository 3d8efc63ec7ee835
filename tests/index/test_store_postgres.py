"""The PostgreSQL + pgvector store passes the shared Store conformance suite, plus server-level checks."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from stanchion.core.analyze import query_terms
from stanchion.core.filters import SearchFilter, build_filter
from stanchion.errors import StoreError
from stanchion.index import postgres
from stanchion.index.pg_migrations import migrate, migrations
from stanchion.index.postgres import PostgresStore, vector_sql
from stanchion.index.sqlite import SQLiteStore
from stanchion.index.store import DocumentWrite
from stanchion.testing.store_suite import DIM, MODEL, StoreConformance, make_write, unit
from stanchion.types import Chunk


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_dsn, dim=DIM, pool_size=4)
    yield s
    s.close()


class TestPostgresStore(StoreConformance):
    """The shared suite, against a fresh database per test."""

    @pytest.fixture
    def store(self, pg_dsn: str) -> Iterator[PostgresStore]:
        # The suite's own fixture must be overridden in the class; a module-level one would not win.
        s = PostgresStore(pg_dsn, dim=DIM, pool_size=4)
        yield s
        s.close()


class TestMigrations:
    def test_idempotent(self, pg_dsn: str) -> None:
        """The first run applies every migration, later runs apply none."""
        assert migrate(pg_dsn, dim=DIM) == [m.name for m in migrations(DIM)]
        assert migrate(pg_dsn, dim=DIM) == []
        with psycopg.connect(pg_dsn) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM stanchion_index._migrations")]
        assert names == [m.name for m in migrations(DIM)]

    def test_concurrent(self, pg_dsn: str) -> None:
        """Two workers migrating at once: the advisory lock lets exactly one apply each migration."""
        results: list[list[str]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def run() -> None:
            start.wait()
            try:
                results.append(migrate(pg_dsn, dim=DIM))
            except BaseException as exc:  # reported below, not swallowed
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert sorted(results, key=len) == [[], [m.name for m in migrations(DIM)]]

    def test_dimension_mismatch(self, pg_dsn: str) -> None:
        """Opening an index with another embedding dimension says what to do."""
        PostgresStore(pg_dsn, dim=DIM).close()
        with pytest.raises(
            StoreError, match=f"built with dim {DIM}, the embedder gives 16: use a new database"
        ):
            PostgresStore(pg_dsn, dim=16)

    def test_tables_kept_apart(self, pg_dsn: str) -> None:
        """Index tables live in their own schema, so control-plane tables never clash with them."""
        migrate(pg_dsn, dim=DIM)
        with psycopg.connect(pg_dsn) as conn:
            public = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        assert public == []


class TestConnection:
    def test_unreachable_server_hides_password(self) -> None:
        """The error names host, port and database, never the password, and comes back quickly."""
        dsn = "postgresql://alice:s3cret-pw@127.0.0.1:1/stanchion_db"
        with pytest.raises(StoreError) as info:
            PostgresStore(dsn, dim=DIM, connect_timeout=2)
        message = str(info.value)
        assert "host=127.0.0.1" in message and "port=1" in message and "dbname=stanchion_db" in message
        assert "s3cret-pw" not in message and "s3cret-pw" not in repr(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__

    def test_malformed_dsn_hides_password(self) -> None:
        """libpq may echo a malformed DSN; the message withholds it."""
        with pytest.raises(StoreError) as info:
            PostgresStore("host=127.0.0.1 password=s3cret-pw junk", dim=DIM)
        assert "s3cret-pw" not in str(info.value)


class TestWrites:
    def test_failed_batch_leaves_nothing(self, store: PostgresStore) -> None:
        """A wrong-dimension vector in the 2nd document: nothing of the batch lands, old data stays."""
        store.write([make_write("keep", ["kept text"], [unit(1)])], model=MODEL)
        first = make_write("new1", ["first of the batch"], [unit(0, 1)])
        second = make_write("new2", ["second of the batch"], [unit(1)])
        wrong = DocumentWrite(second.document, second.chunks, np.ones((1, DIM * 2), np.float32), "")
        with pytest.raises(StoreError, match=f"dim {DIM}, the embedder gives {DIM * 2}"):
            store.write([first, wrong], model=MODEL)
        assert [d.id for d in store.documents()] == ["keep"]
        assert store.stats().chunks == 1
        assert store.keyword_search(query_terms("first"), 10, SearchFilter()) == []

    def test_server_error_mid_batch_rolls_back(self, store: PostgresStore) -> None:
        """A failure inside PostgreSQL (a duplicate chunk id) rolls back the replacement as well."""
        store.write([make_write("d1", ["original text"], [unit(1)])], model=MODEL)
        replacement = make_write("d1", ["replacement text"], [unit(0, 1)])
        clash = make_write("d2", ["clashing chunk"])
        chunk = clash.chunks[0]
        stolen = Chunk("d1#0", "d2", chunk.text, 0, chunk.metadata)
        clash = DocumentWrite(clash.document, [stolen], clash.vectors)
        with pytest.raises(StoreError, match="writing documents d1, d2"):
            store.write([replacement, clash], model=MODEL)
        assert [c.text for c in store.chunks(["d1#0"])] == ["original text"]
        assert [h.id for h in store.keyword_search(query_terms("original"), 10, SearchFilter())] == ["d1#0"]
        assert store.keyword_search(query_terms("replacement"), 10, SearchFilter()) == []

    def test_workers_see_each_others_writes(self, pg_dsn: str) -> None:
        """Two stores on one database (two workers) see each other's commits at once."""
        a = PostgresStore(pg_dsn, dim=DIM, pool_size=2)
        b = PostgresStore(pg_dsn, dim=DIM, pool_size=2)
        try:
            a.write([make_write("from-a", ["written by worker a"], [unit(1)])], model=MODEL)
            assert [h.id for h in b.vector_search(unit(1), 5, SearchFilter())] == ["from-a#0"]
            b.write([make_write("from-b", ["worker b too"], [unit(1, 0.01)])], model=MODEL)
            assert [h.id for h in a.keyword_search(["worker"], 5, SearchFilter())] != []
            assert {d.id for d in a.documents()} == {"from-a", "from-b"}
            assert a.delete_documents(["from-a"]) == 1
            assert [h.id for h in b.vector_search(unit(1), 5, SearchFilter())] == ["from-b#0"]
        finally:
            a.close()
            b.close()

    def test_concurrent_threads(self, store: PostgresStore) -> None:
        """Many threads writing and searching at once neither fail nor lose writes."""
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(5):
                    store.write([make_write(f"t{n}-{i}", [f"thread {n} note {i}"])], model=MODEL)
                    store.keyword_search(["note"], 5, SearchFilter())
                    store.vector_search(unit(1), 5, build_filter(["team=ops"]))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert store.stats().documents == 40 and store.stats().chunks == 40

    def test_prune_embeddings(self, store: PostgresStore) -> None:
        """Cached vectors outlive their chunks until pruned, then only used ones remain."""
        store.write([make_write("a", ["one"]), make_write("b", ["two"])], model=MODEL)
        store.delete_documents(["a"])
        assert store.stats().vectors == 2
        assert store.prune_embeddings() == 1
        assert store.stats().vectors == 1


class TestVectorSearch:
    def test_hnsw_matches_exact(self, store: PostgresStore) -> None:
        """On a few hundred random vectors the HNSW path returns the exact top results."""
        rng = np.random.default_rng(3)
        vectors = rng.normal(size=(400, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.write([make_write(f"v{i:03d}", ["x"], [v]) for i, v in enumerate(vectors)], model=MODEL)
        agree = 0
        with store._pool.connection() as conn:
            conn.execute("SET LOCAL enable_seqscan = off")  # a 400-row table would otherwise be scanned
            conn.execute("SET LOCAL hnsw.ef_search = 100")
            sql, params = vector_sql(unit(1), 10, SearchFilter(), exact=False)
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))
            assert "chunks_embedding" in plan  # the HNSW index really answers this path
            for query in rng.normal(size=(20, DIM)).astype(np.float32):
                query /= np.linalg.norm(query)
                hnsw = [r[0] for r in conn.execute(*vector_sql(query, 10, SearchFilter(), exact=False))]
                exact = [r[0] for r in conn.execute(*vector_sql(query, 10, SearchFilter(), exact=True))]
                assert hnsw[0] == exact[0]
                agree += hnsw == exact
        assert agree >= 19

    def test_filtered_hnsw_falls_back_to_exact(self, pg_dsn: str) -> None:
        """A filter HNSW's candidates miss (fewer than k admitted) is answered by an exact scan."""
        # enable_seqscan=off: the planner then uses HNSW even on a small table.
        forced = make_conninfo(pg_dsn, options="-c enable_seqscan=off")
        store = PostgresStore(forced, dim=DIM, ef_search=10)
        try:
            rng = np.random.default_rng(5)
            near = [unit(1, *(rng.normal(size=3) * 0.1)) for _ in range(300)]
            writes = [make_write(f"n{i:03d}", ["x"], [v], metadata={"page": 1}) for i, v in enumerate(near)]
            writes += [
                make_write(f"far{i}", ["x"], [unit(0, 0, 1, i)], metadata={"page": 9}) for i in range(3)
            ]
            store.write(writes, model=MODEL)
            where = build_filter(["page>=5"])
            with store._pool.connection() as conn:
                conn.execute("SET LOCAL hnsw.ef_search = 10")
                hnsw_only = conn.execute(*vector_sql(unit(1), 10, where, exact=False)).fetchall()
            assert len(hnsw_only) < 3  # the HNSW scan alone misses the admitted rows
            hits = store.vector_search(unit(1), 10, where)
            assert sorted(h.id for h in hits) == ["far0#0", "far1#0", "far2#0"]
            # A stale count that calls the filter broad picks HNSW first: still every admitted row.
            store._shares.clear()
            with patch.object(store, "_admitted", return_value=(300, 1.0)):
                hits = store.vector_search(unit(1), 10, where)
            assert sorted(h.id for h in hits) == ["far0#0", "far1#0", "far2#0"]
        finally:
            store.close()

    def test_a_stale_filter_count_changes_no_result(self, store: PostgresStore) -> None:
        """The count that picks a filter's plan is kept a minute; chunks written since are found
        whichever plan it picks, and a chunk no longer admitted is never returned."""
        store.write(
            [make_write(f"a{i}", ["freight"], metadata={"team": "ops"}) for i in range(3)], model=MODEL
        )
        where = build_filter(["team=ops"])
        assert len(store.keyword_search(["freight"], 100, where)) == 3  # counted: 3 chunks, selective
        store.write(
            [make_write(f"b{i:03d}", ["freight"], metadata={"team": "ops"}) for i in range(150)], model=MODEL
        )
        store.write([make_write("a0", ["freight"], metadata={"team": "hr"})], model=MODEL)
        expected = sorted([f"a{i}#0" for i in (1, 2)] + [f"b{i:03d}#0" for i in range(150)])
        assert sorted(h.id for h in store.keyword_search(["freight"], 1000, where)) == expected
        assert sorted(h.id for h in store.vector_search(unit(1), 1000, where)) == expected

    def test_large_k_falls_back_to_exact(self, store: PostgresStore) -> None:
        """k above what HNSW may return (ef_search <= 1000) is answered exactly, in full."""
        store.write([make_write(f"d{i}", ["x"]) for i in range(30)], model=MODEL)
        assert len(store.vector_search(unit(1), 2000, SearchFilter())) == 30

    def test_wrong_query_dimension(self, store: PostgresStore) -> None:
        with pytest.raises(StoreError, match="dimensions"):
            store.vector_search(np.ones(DIM + 1, np.float32), 5, SearchFilter())


class TestAgreement:
    def test_bm25_ranks_like_sqlite(self, store: PostgresStore, tmp_path: Path) -> None:
        """BM25 in SQL gives the embedded store's ranking and scores (same k1, b and idf)."""
        texts = [
            "trucks leave the depot at dawn",
            "the depot closes at night",
            "dawn patrol of trucks and vans and trucks",
            "unrelated note",
            "a very long note about the depot, the depot staff, their trucks and the night shift",
        ]
        writes = [make_write(f"d{i}", [t]) for i, t in enumerate(texts)]
        sqlite = SQLiteStore(tmp_path / "e.db")
        try:
            sqlite.write(writes, model=MODEL)
            store.write(writes, model=MODEL)
            for query in ("truck dawn", "depot", "vans night", "note depot staff"):
                terms = query_terms(query)
                want = sqlite.keyword_search(terms, 10, SearchFilter())
                got = store.keyword_search(terms, 10, SearchFilter())
                assert [h.id for h in got] == [h.id for h in want], query
                assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-5)
        finally:
            sqlite.close()

    def test_document_frequencies_follow_every_write(self, store: PostgresStore, tmp_path: Path) -> None:
        """Each worker keeps term document frequencies until the next write: a rewrite that keeps
        the chunk count and total length, a deletion, or another worker's write all refresh them."""
        other = PostgresStore(store._dsn, dim=DIM, pool_size=1)
        sqlite = SQLiteStore(tmp_path / "df.db")
        terms = query_terms("depot dawn")
        steps: list[tuple[PostgresStore, list[DocumentWrite], list[str]]] = [
            (store, [make_write("a", ["depot at dawn"]), make_write("b", ["night shift crew"])], []),
            (store, [make_write("b", ["depot crew shift"])], []),  # same count, same length
            (other, [make_write("c", ["dawn dawn depot"])], []),
            (store, [], ["a"]),
        ]
        try:
            for writer, writes, deleted in steps:
                for target in (writer, sqlite):
                    target.write(writes, model=MODEL)
                    target.delete_documents(deleted)
                want = sqlite.keyword_search(terms, 10, SearchFilter())
                got = store.keyword_search(terms, 10, SearchFilter())
                assert [h.id for h in got] == [h.id for h in want]
                assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-5)
        finally:
            other.close()
            sqlite.close()

    def test_filters_match_admits_on_mixed_types(self, store: PostgresStore) -> None:
        """Numbers vs numeric strings, booleans, lists and missing keys filter as ``admits`` says."""
        metas: list[dict[str, object]] = [
            {"v": 2},
            {"v": "2"},
            {"v": 2.5},
            {"v": True},
            {"v": 1},
            {"v": "ops"},
            {"v": ["ops", "2"]},
            {"v": [3, "x"]},
            {"v": None},
            {},
        ]
        writes = [make_write(f"m{i}", ["shared"], metadata=m) for i, m in enumerate(metas)]
        store.write(writes, model=MODEL)
        exprs = ["v=2", "v!=2", "v=ops", "v!=ops", "v=ops,x", "v>=2", "v<2.5", "v>1", "v=true", "v=1",
                 "v!=true", "v>o", "v<3"]  # fmt: skip
        for expr in exprs:
            where = build_filter([expr])
            expected = sorted(
                c.id for w in writes for c in w.chunks if where.admits(dict(c.metadata), c.access_groups)
            )
            assert sorted(h.id for h in store.keyword_search(["share"], 100, where)) == expected, expr
            assert sorted(h.id for h in store.vector_search(unit(1), 100, where)) == expected, expr

    @pytest.mark.parametrize("lookup_max", [0, 10_000], ids=["window", "lookup"])
    def test_filtered_keyword_ranking_is_exact(
        self, store: PostgresStore, monkeypatch: pytest.MonkeyPatch, lookup_max: int
    ) -> None:
        """Filtered BM25 top-k equals the unfiltered ranking filtered afterwards, by (chunk, term)
        lookups or through a window of the best matches, hit or missed (windows of ~3k admitted)."""
        monkeypatch.setattr(postgres, "LOOKUP_MAX", lookup_max)
        monkeypatch.setattr(postgres, "KEYWORD_WINDOW", 1)  # windows of ~3k admitted: misses are common
        rng = random.Random(11)
        writes = [
            make_write(
                f"d{i:02d}",
                [" ".join(rng.choices(["freight", "truck", "depot", "van", "lunch"], k=rng.randint(2, 12)))],
                metadata={"team": rng.choice(["ops", "hr", "legal"]), "page": i},
            )
            for i in range(80)
        ]
        store.write(writes, model=MODEL)
        meta = {w.document.id + "#0": dict(w.chunks[0].metadata) for w in writes}
        terms = query_terms("freight truck")
        ranking = store.keyword_search(terms, 1000, SearchFilter())
        for expr in ("team=legal", "team=hr,ops", "page>=70", "page<5", "team!=ops"):
            where = build_filter([expr])
            for k in (1, 3, 10):
                expected = [h.id for h in ranking if where.admits(meta[h.id], ())][:k]
                assert [h.id for h in store.keyword_search(terms, k, where)] == expected, (expr, k)
