"""Ordered, named migrations of the memory tables (memories; session turns and summaries), on the control-plane database (SQLite or
PostgreSQL), run by ``stanchion.migrations``; applied names live in ``memory_migrations``.

On PostgreSQL the embedding is a pgvector ``vector`` of any dimension (its ``dim`` beside it):
every search is confined to one (tenant, user), whose few hundred memories are ranked exactly,
so no approximate index is needed, and an embedder of another dimension needs no migration.
On SQLite it is the float32 bytes, ranked in numpy.
"""

from __future__ import annotations

from stanchion.migrations import Ledger, Migration
from stanchion.migrations import migrate as run_migrations
from stanchion.state.db import Database

# Taken by every worker that migrates, so several starting at once apply each migration once.
_PG_LOCK = 0x5354_414E_4D45_4D01  # "STANMEM"

LEDGER = Ledger(
    "memory_migrations",
    "CREATE TABLE IF NOT EXISTS memory_migrations (name TEXT PRIMARY KEY, at DOUBLE PRECISION)",
    "INSERT INTO memory_migrations (name, at) VALUES (?, 0)",
)

_TABLE = """
CREATE TABLE memories (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    slot TEXT NOT NULL,
    text TEXT NOT NULL,
    value TEXT NOT NULL,
    negated INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    model TEXT NOT NULL,
    dim INTEGER NOT NULL,
    embedding {vector} NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    superseded_by TEXT,
    superseded_at DOUBLE PRECISION
);
CREATE INDEX memories_owner ON memories(tenant, user_id, updated_at);
CREATE UNIQUE INDEX memories_current_slot ON memories(tenant, user_id, slot) WHERE superseded_by IS NULL
"""

MIGRATIONS: list[Migration] = [
    Migration(
        "mem001_memories",
        {
            "sqlite": _TABLE.format(vector="BLOB"),
            "postgres": "CREATE EXTENSION IF NOT EXISTS vector;" + _TABLE.format(vector="vector"),
        },
    ),
    Migration(
        # Conversation history per session (``history.py``): the turns, and a running summary of
        # those that no longer fit the context budget (``upto``: the last turn it covers).
        "mem002_sessions",
        {
            dialect: """
            CREATE TABLE session_turns (
                tenant TEXT NOT NULL,
                user_id TEXT NOT NULL,
                session TEXT NOT NULL,
                seq INTEGER NOT NULL,
                role TEXT NOT NULL,
                content TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (tenant, user_id, session, seq)
            );
            CREATE TABLE session_summaries (
                tenant TEXT NOT NULL,
                user_id TEXT NOT NULL,
                session TEXT NOT NULL,
                summary TEXT NOT NULL,
                upto INTEGER NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (tenant, user_id, session)
            )
            """
            for dialect in ("sqlite", "postgres")
        },
    ),
]


def migrate(db: Database) -> list[str]:
    """Apply the memory migrations not yet applied; returns their names."""
    return run_migrations(db, MIGRATIONS, LEDGER, lock_key=_PG_LOCK)
