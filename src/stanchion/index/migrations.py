"""Ordered, named schema migrations for the SQLite index, run by ``stanchion.migrations``
(applied names live in ``_migrations``)."""

from __future__ import annotations

import sqlite3

from stanchion.migrations import Ledger, Migration, SQLiteTarget
from stanchion.migrations import migrate as run_migrations

# A document's tenant as queries must spell it for SQLite to use the index m002 builds on it.
DOCUMENT_TENANT = "json_extract(metadata, '$.tenant')"

LEDGER = Ledger(
    "_migrations",
    "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
    "INSERT INTO _migrations(name, applied_at) VALUES (?, datetime('now'))",
)

MIGRATIONS: list[Migration] = [
    Migration(
        "m001_initial",
        {
            "sqlite": """
        CREATE TABLE documents (
            id TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            path TEXT NOT NULL,
            title TEXT NOT NULL,
            hash TEXT NOT NULL,
            unit TEXT NOT NULL,
            metadata TEXT NOT NULL,
            access_groups TEXT NOT NULL,
            chunk_count INTEGER NOT NULL
        );
        CREATE INDEX documents_source_unit ON documents(source, unit);
        CREATE TABLE chunks (
            rowid INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            text TEXT NOT NULL,
            hash TEXT NOT NULL,
            model TEXT NOT NULL,
            metadata TEXT NOT NULL,
            access_groups TEXT NOT NULL,
            public INTEGER NOT NULL
        );
        CREATE INDEX chunks_document ON chunks(document_id);
        CREATE INDEX chunks_hash ON chunks(hash);
        CREATE TABLE chunk_acl (
            chunk INTEGER NOT NULL REFERENCES chunks(rowid) ON DELETE CASCADE,
            grp TEXT NOT NULL,
            PRIMARY KEY (chunk, grp)
        ) WITHOUT ROWID;
        CREATE INDEX chunk_acl_grp ON chunk_acl(grp);
        CREATE VIRTUAL TABLE chunk_terms USING fts5(terms, tokenize = 'unicode61');
        CREATE TABLE embeddings (
            model TEXT NOT NULL,
            hash TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (model, hash)
        );
        CREATE TABLE units (
            source TEXT NOT NULL,
            unit TEXT NOT NULL,
            signature TEXT NOT NULL,
            PRIMARY KEY (source, unit)
        );
        """,
        },
    ),
    # Listing a tenant's documents a page at a time seeks here instead of reading every tenant's.
    Migration(
        "m002_documents_by_tenant",
        {"sqlite": f"CREATE INDEX documents_tenant ON documents({DOCUMENT_TENANT}, id)"},
    ),
    # The prompt-injection check's finding per chunk (``types.InjectionMark``): NULL for chunks
    # indexed before it existed. Columns, not metadata: no document or filter can write or hide it.
    Migration(
        "m003_chunk_injection",
        {
            "sqlite": "ALTER TABLE chunks ADD COLUMN injection_score REAL;"
            " ALTER TABLE chunks ADD COLUMN injection_reasons TEXT"
        },
    ),
]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; returns the names applied."""
    return run_migrations(SQLiteTarget(db), MIGRATIONS, LEDGER)
