"""The embedded SQLite store passes the shared Store conformance suite, plus file-level checks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from stanchion.core.analyze import query_terms
from stanchion.core.filters import Condition, SearchFilter, build_filter
from stanchion.errors import StoreError
from stanchion.index.migrations import DOCUMENT_TENANT
from stanchion.index.sqlite import SQLiteStore
from stanchion.testing.store_suite import MODEL, StoreConformance, ids, make_write, unit


class TestSQLiteStore(StoreConformance):
    """The default engine: in-memory BM25 over the FTS5 terms."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteStore]:
        s = SQLiteStore(tmp_path / "index.db")
        yield s
        s.close()


class TestSQLiteStoreFTS5Ranking(StoreConformance):
    """The same suite with BM25 ranked inside FTS5."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteStore]:
        s = SQLiteStore(tmp_path / "index.db", keyword_engine="fts5")
        yield s
        s.close()


class TestSQLiteFile:
    def test_second_connection_sees_new_vectors(self, tmp_path: Path) -> None:
        """The in-process vector matrix reloads when another process commits."""
        reader = SQLiteStore(tmp_path / "i.db")
        writer = SQLiteStore(tmp_path / "i.db")
        writer.write([make_write("a", ["x"], [unit(1)])], model=MODEL)
        assert [h.id for h in reader.vector_search(unit(1), 5, SearchFilter())] == ["a#0"]
        writer.write([make_write("b", ["y"], [unit(1, 0.01)])], model=MODEL)
        assert [h.id for h in reader.vector_search(unit(1), 5, SearchFilter())] == ["a#0", "b#0"]
        reader.close()
        writer.close()

    def test_engines_agree_on_ranking(self, tmp_path: Path) -> None:
        """Both keyword engines return the same chunks in the same order on a small corpus."""
        texts = [
            "trucks leave the depot at dawn",
            "the depot closes at night",
            "dawn patrol of trucks and vans and trucks",
            "unrelated note",
        ]
        memory = SQLiteStore(tmp_path / "e.db")
        memory.write([make_write(f"d{i}", [t]) for i, t in enumerate(texts)], model=MODEL)
        fts5 = SQLiteStore(tmp_path / "e.db", keyword_engine="fts5")
        for query in (["truck", "dawn"], ["depot"], ["van", "night"]):
            assert [h.id for h in memory.keyword_search(query, 10, SearchFilter())] == [
                h.id for h in fts5.keyword_search(query, 10, SearchFilter())
            ]
        memory.close()
        fts5.close()

    def test_not_an_index(self, tmp_path: Path) -> None:
        """A file that is not SQLite is reported, not overwritten."""
        bogus = tmp_path / "bogus.db"
        bogus.write_bytes(b"this is not a database" * 100)
        with pytest.raises(StoreError, match="not a Stanchion index"):
            SQLiteStore(bogus)
        assert bogus.read_bytes().startswith(b"this is not a database")

    def test_migrations_recorded(self, tmp_path: Path) -> None:
        SQLiteStore(tmp_path / "m.db").close()
        names = [r[0] for r in sqlite3.connect(tmp_path / "m.db").execute("SELECT name FROM _migrations")]
        assert names == ["m001_initial", "m002_documents_by_tenant", "m003_chunk_injection"]

    def test_chunks_from_before_m003_read_back_unchecked(self, tmp_path: Path) -> None:
        """An index written before the injection columns existed upgrades in place; its chunks come
        back with no mark (None: checked when retrieved), and new writes keep theirs."""
        path = tmp_path / "m.db"
        db = sqlite3.connect(path)
        migrate_to(db, "m002_documents_by_tenant")
        db.execute("INSERT INTO documents VALUES ('d', 'src', 'p', 't', 'h', 'u', '{}', '[]', 1)")
        db.execute(
            "INSERT INTO chunks(id, document_id, position, text, hash, model, metadata, access_groups, public)"
            " VALUES ('d#0', 'd', 0, 'old text', 'h0', 'm', '{}', '[]', 1)"
        )
        db.commit()
        db.close()
        store = SQLiteStore(path)
        try:
            (chunk,) = store.chunks(["d#0"])
            assert chunk.text == "old text" and chunk.injection is None
        finally:
            store.close()

    def test_an_index_from_before_m002_is_upgraded_and_lists_by_tenant_through_it(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "m.db"
        SQLiteStore(path).close()
        with sqlite3.connect(path) as db:  # as the first release left it
            db.execute("DROP INDEX documents_tenant")
            db.execute("DELETE FROM _migrations WHERE name = 'm002_documents_by_tenant'")
        db.close()
        store = SQLiteStore(path)
        store.close()
        db = sqlite3.connect(path)
        try:
            plan = " ".join(
                str(row[-1])
                for row in db.execute(
                    "EXPLAIN QUERY PLAN SELECT id FROM documents"
                    f" WHERE {DOCUMENT_TENANT} = 'acme' AND id > 'a' ORDER BY id LIMIT 10"
                )
            )
        finally:
            db.close()
        assert "documents_tenant" in plan and "TEMP B-TREE" not in plan


def migrate_to(db: sqlite3.Connection, last: str) -> None:
    """Apply the index's migrations up to and including ``last``, as an older release did."""
    from stanchion.index.migrations import LEDGER, MIGRATIONS
    from stanchion.migrations import SQLiteTarget
    from stanchion.migrations import migrate as run

    names = [m.name for m in MIGRATIONS]
    run(SQLiteTarget(db), MIGRATIONS[: names.index(last) + 1], LEDGER)


class TestFiltersInMemory:
    """Filters resolve from metadata columns cached beside the matrix; they must follow the file."""

    def test_rewrite_by_another_connection_is_filtered_by_its_new_groups(self, tmp_path: Path) -> None:
        """A chunk rewritten elsewhere (its rowid reused, its groups changed) never shows under the old
        groups, once the reader's filter columns were already loaded."""
        reader = SQLiteStore(tmp_path / "i.db")
        writer = SQLiteStore(tmp_path / "i.db")
        hr, eng = build_filter([], groups=["hr"]), build_filter([], groups=["eng"])
        writer.write(
            [
                make_write("a", ["salary bands"], [unit(1)], metadata={"path": "a.md"}),
                make_write("z", ["salary bands"], [unit(1)], metadata={"path": "z.md"}, groups=("hr",)),
            ],
            model=MODEL,
        )
        before = _rowid(tmp_path / "i.db", "z#0")
        assert _both(reader, hr) == (["a#0", "z#0"], ["a#0", "z#0"])
        assert _both(reader, build_filter(["path=z.md"])) == (["z#0"], ["z#0"])
        writer.write(
            [make_write("z", ["salary bands"], [unit(1)], metadata={"path": "y.md"}, groups=("eng",))],
            model=MODEL,
        )
        assert _rowid(tmp_path / "i.db", "z#0") == before  # the case a stale cache would get wrong
        assert _both(reader, hr) == (["a#0"], ["a#0"])
        assert _both(reader, eng) == (["a#0", "z#0"], ["a#0", "z#0"])
        assert _both(reader, build_filter(["path=z.md"])) == ([], [])
        assert _both(reader, build_filter(["path=y.md"])) == (["z#0"], ["z#0"])
        reader.close()
        writer.close()

    def test_same_values_of_other_types_are_kept_apart(self, tmp_path: Path) -> None:
        """1, 1.0, True and "1" are equal in Python but select different chunks; a remembered
        filter on one is never served for another."""
        store = SQLiteStore(tmp_path / "t.db")
        values: list[object] = [1, 1.0, True, "1", "1.0", [1, "x"]]
        store.write(
            [make_write(f"d{i}", ["freight"], metadata={"v": v}) for i, v in enumerate(values)], model=MODEL
        )
        for raw in (1, 1.0, True, "1", "1.0"):
            where = SearchFilter((Condition("v", "eq", raw),))
            expected = sorted(f"d{i}#0" for i, v in enumerate(values) if where.admits({"v": v}, ()))
            assert sorted(ids(store.keyword_search(["freight"], 10, where))) == expected, raw
            assert sorted(ids(store.vector_search(unit(1), 10, where))) == expected, raw
        store.close()


def _both(store: SQLiteStore, where: SearchFilter) -> tuple[list[str], list[str]]:
    """Sorted ids that vector search and keyword search (the store's fixed test query) return."""
    vector = sorted(ids(store.vector_search(unit(1), 10, where)))
    return vector, sorted(ids(store.keyword_search(query_terms("salary"), 10, where)))


def _rowid(path: Path, chunk_id: str) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT rowid FROM chunks WHERE id = ?", (chunk_id,)).fetchone()[0])
    finally:
        db.close()
