"""Memory fixtures: one store per backend (SQLite file, PostgreSQL + pgvector), a tiny embedder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stanchion.memory import DatabaseMemoryStore, Memory
from stanchion.memory.fakes import WordEmbedder
from stanchion.state.db import PostgresDatabase, SQLiteDatabase


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseMemoryStore]:
    """A memory store on each backend."""
    if request.param == "sqlite":
        db: SQLiteDatabase | PostgresDatabase = SQLiteDatabase(tmp_path / "state.db")
    else:
        db = PostgresDatabase(request.getfixturevalue("pg_dsn"))
    memory_store = DatabaseMemoryStore(db, model="words-64", owns_db=True)
    try:
        yield memory_store
    finally:
        memory_store.close()


@pytest.fixture
def memory(store: DatabaseMemoryStore) -> Memory:
    return Memory(store, WordEmbedder())
