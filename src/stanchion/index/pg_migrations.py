"""Ordered, named migrations for the PostgreSQL index, and how to connect to it.

Everything lives in its own schema, ``stanchion_index``, so the index never clashes with the
control-plane tables (``api_keys``, ``jobs``, ...) or anything else in the database. The
migrations run through ``stanchion.migrations``; applied names are recorded in
``stanchion_index._migrations``. ``migrate`` runs in one transaction under a transaction-scoped
advisory lock: several workers starting at once apply each migration exactly once, the others wait
and then find nothing left to do. DDL is transactional in PostgreSQL, so a failed migration leaves no trace.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from stanchion.errors import StoreError
from stanchion.migrations import Ledger, Migration, PsycopgTarget
from stanchion.migrations import migrate as run_migrations

SCHEMA = "stanchion_index"
MAX_DIM = 2000  # pgvector's limit for an HNSW index on vector(n)
# Any constant works; it only has to be the same for every process migrating this database.
_LOCK_KEY = 0x5354_414E_4944_5801
# A document's tenant as queries must spell it for PostgreSQL to use the index m002 builds on it.
DOCUMENT_TENANT = "(metadata ->> 'tenant')"

LEDGER = Ledger(
    f"{SCHEMA}._migrations",
    f"CREATE TABLE IF NOT EXISTS {SCHEMA}._migrations"
    " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    f"INSERT INTO {SCHEMA}._migrations (name) VALUES (?)",
)


def migrations(dim: int) -> list[Migration]:
    """The index's migrations, in order, for vectors of ``dim`` dimensions."""
    return [
        Migration("m001_initial", {"postgres": ";\n".join(_initial(dim))}),
        # Listing a tenant's documents a page at a time seeks here instead of reading every tenant's.
        Migration(
            "m002_documents_by_tenant",
            {
                "postgres": f'CREATE INDEX documents_tenant ON {SCHEMA}.documents ({DOCUMENT_TENANT}, id COLLATE "C")'
            },
        ),
        # Moves on every write, so a worker may keep each term's document frequency until it does
        # (counting a common term's postings cost more than the rest of a filtered BM25 query).
        Migration(
            "m003_corpus_generation",
            {
                "postgres": f"ALTER TABLE {SCHEMA}.corpus_stats ADD COLUMN generation bigint NOT NULL DEFAULT 0"
            },
        ),
        # The prompt-injection check's finding per chunk (``types.InjectionMark``): NULL for chunks
        # indexed before it existed. Columns, not metadata: no document or filter can write or hide it.
        Migration(
            "m004_chunk_injection",
            {
                "postgres": f"ALTER TABLE {SCHEMA}.chunks ADD COLUMN injection_score double precision,"
                " ADD COLUMN injection_reasons text[]"
            },
        ),
    ]


def _initial(dim: int) -> list[str]:
    return [
        f"""CREATE TABLE {SCHEMA}.documents (
            id text PRIMARY KEY,
            source text NOT NULL,
            path text NOT NULL,
            title text NOT NULL,
            hash text NOT NULL,
            unit text NOT NULL,
            metadata jsonb NOT NULL,
            access_groups text[] NOT NULL,
            chunk_count integer NOT NULL
        )""",
        f"CREATE INDEX documents_source_unit ON {SCHEMA}.documents (source, unit)",
        # ``length`` is the number of analysed terms (BM25's document length); the vector lives on
        # the chunk row so the HNSW index returns chunks, never orphaned cache entries.
        f"""CREATE TABLE {SCHEMA}.chunks (
            rowid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            document_id text NOT NULL REFERENCES {SCHEMA}.documents (id) ON DELETE CASCADE,
            position integer NOT NULL,
            text text NOT NULL,
            hash text NOT NULL,
            model text NOT NULL,
            metadata jsonb NOT NULL,
            access_groups text[] NOT NULL,
            length integer NOT NULL,
            embedding vector({dim}) NOT NULL
        )""",
        f"CREATE INDEX chunks_document ON {SCHEMA}.chunks (document_id)",
        f"CREATE INDEX chunks_hash ON {SCHEMA}.chunks (hash, model)",
        f"CREATE INDEX chunks_embedding ON {SCHEMA}.chunks USING hnsw (embedding vector_cosine_ops)",
        f"CREATE INDEX chunks_access_groups ON {SCHEMA}.chunks USING gin (access_groups)",
        f"CREATE INDEX chunks_metadata ON {SCHEMA}.chunks USING gin (metadata jsonb_path_ops)",
        # One row per (chunk, distinct term). ``len`` repeats the chunk's length so BM25 scores from
        # this table alone. No foreign key: the store deletes postings itself, and checking one per
        # posting would double the cost of a bulk write.
        f"""CREATE TABLE {SCHEMA}.postings (
            chunk bigint NOT NULL,
            term text NOT NULL,
            tf integer NOT NULL,
            len integer NOT NULL,
            PRIMARY KEY (chunk, term)
        )""",
        f"CREATE INDEX postings_term ON {SCHEMA}.postings (term) INCLUDE (chunk, tf, len)",
        # BM25's N and total length, kept transactionally so a query never counts 100k rows.
        f"""CREATE TABLE {SCHEMA}.corpus_stats (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            chunks bigint NOT NULL,
            length bigint NOT NULL
        )""",
        f"INSERT INTO {SCHEMA}.corpus_stats (chunks, length) VALUES (0, 0)",
        # The embedding cache: any dimension, keyed like SQLite's by (model, chunk content hash).
        f"""CREATE TABLE {SCHEMA}.embeddings (
            model text NOT NULL,
            hash text NOT NULL,
            vector vector NOT NULL,
            PRIMARY KEY (model, hash)
        )""",
        f"""CREATE TABLE {SCHEMA}.units (
            source text NOT NULL,
            unit text NOT NULL,
            signature text NOT NULL,
            PRIMARY KEY (source, unit)
        )""",
    ]


def migrate(dsn: str, *, dim: int, connect_timeout: int = 10) -> list[str]:
    """Apply pending migrations in order, in one transaction; returns the names newly applied.

    Raises ``StoreError`` when the server is unreachable, pgvector is missing, or the index exists
    with another vector dimension.
    """
    if not 0 < dim <= MAX_DIM:
        raise StoreError(f"vector dimension must be between 1 and {MAX_DIM}, got {dim}")
    with connect(dsn, connect_timeout=connect_timeout) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
                _ensure_vector_extension(conn, dsn)
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
                # Nested: a savepoint inside this transaction, which holds the lock throughout.
                applied = run_migrations(
                    PsycopgTarget(conn), migrations(dim), LEDGER, lock_key=_LOCK_KEY, one_transaction=True
                )
                built = index_dim(conn)
        except psycopg.Error as exc:
            raise StoreError(f"migrating the index at {describe_dsn(dsn)} failed: {exc}") from exc
    if built != dim:
        raise StoreError(
            f"index was built with dim {built}, the embedder gives {dim}: use a new database or re-ingest"
        )
    return applied


def index_dim(conn: psycopg.Connection[Any]) -> int:
    """The dimension the chunks' ``vector(n)`` column was created with (its type modifier)."""
    row = conn.execute(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
        [f"{SCHEMA}.chunks"],
    ).fetchone()
    assert row is not None, "m001_initial creates chunks.embedding"
    return int(row[0])


def _ensure_vector_extension(conn: psycopg.Connection[Any], dsn: str) -> None:
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    try:
        with conn.transaction():  # a savepoint: a refusal must not abort the migration's transaction
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege:
        raise StoreError(
            f"pgvector is not installed in {describe_dsn(dsn)} and this role may not install it: "
            "ask an administrator to run CREATE EXTENSION vector"
        ) from None
    except psycopg.errors.FeatureNotSupported:
        raise StoreError(f"the server at {describe_dsn(dsn)} has no pgvector extension available") from None


def connect(dsn: str, *, connect_timeout: int = 10) -> psycopg.Connection[Any]:
    """A connection that gives up after ``connect_timeout`` seconds; errors never show the password."""
    try:
        return psycopg.connect(dsn, connect_timeout=connect_timeout)
    except psycopg.Error as exc:
        # ``from None``: libpq may echo pieces of a malformed DSN, password included.
        raise StoreError(
            f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {redact_dsn(str(exc), dsn)}"
        ) from None


def describe_dsn(dsn: str) -> str:
    """``host=... port=... dbname=... user=...`` for messages: never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable DSN>"
    return " ".join(f"{key}={params[key]}" for key in ("host", "port", "dbname", "user") if params.get(key))


def redact_dsn(text: str, dsn: str) -> str:
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        return "(details withheld: the DSN cannot be parsed)"
    return text.replace(str(password), "***") if password else text
