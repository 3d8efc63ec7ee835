"""The embedded SQLite store passes the shared Store conformance suite, plus file-level checks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from stanchion.errors import StoreError
from stanchion.index.sqlite import SQLiteStore
from stanchion.retrieve.filters import SearchFilter
from stanchion.testing.store_suite import MODEL, StoreConformance, make_write, unit


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteStore]:
        s = SQLiteStore(tmp_path / "index.db")
        yield s
        s.close()


class TestSQLiteFile:
    def test_second_connection_sees_new_vectors(self, tmp_path: Path) -> None:
        """The in-process vector matrix reloads when another process commits."""
        reader = SQLiteStore(tmp_path / "i.db")
        writer = SQLiteStore(tmp_path / "i.db")
        writer.write([make_write("a", ["x"], [unit(1)])], model=MODEL)
        assert [h.chunk.id for h in reader.vector_search(unit(1), 5, SearchFilter())] == ["a#0"]
        writer.write([make_write("b", ["y"], [unit(1, 0.01)])], model=MODEL)
        assert [h.chunk.id for h in reader.vector_search(unit(1), 5, SearchFilter())] == ["a#0", "b#0"]
        reader.close()
        writer.close()

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
        assert names == ["m001_initial"]
