"""The embedded SQLite store passes the shared Store conformance suite, plus file-level checks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from stanchion.core.filters import SearchFilter
from stanchion.errors import StoreError
from stanchion.index.migrations import DOCUMENT_TENANT
from stanchion.index.sqlite import SQLiteStore
from stanchion.testing.store_suite import MODEL, StoreConformance, make_write, unit


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
        assert names == ["m001_initial", "m002_documents_by_tenant"]

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
