"""Ordered, named migrations of the control-plane tables, for SQLite and PostgreSQL alike, run by
``stanchion.migrations`` (applied names live in ``state_migrations``)."""

from __future__ import annotations

from stanchion.migrations import Ledger, Migration
from stanchion.migrations import migrate as run_migrations
from stanchion.state.db import Database, Dialect

# {serial} and {blob} are the two types the dialects spell differently.
_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY", "blob": "BLOB"},
    "postgres": {"serial": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA"},
}
# Taken by every worker that migrates, so several starting at once apply each migration once.
_PG_LOCK = 0x5354414E  # "STAN"

LEDGER = Ledger(
    "state_migrations",
    "CREATE TABLE IF NOT EXISTS state_migrations (name TEXT PRIMARY KEY, at DOUBLE PRECISION)",
    "INSERT INTO state_migrations (name, at) VALUES (?, 0)",
)

# Each script is written once; {serial} and {blob} become each dialect's spelling.
_SCRIPTS: list[tuple[str, str]] = [
    (
        "s001_keys_jobs_audit",
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            name TEXT NOT NULL,
            tenant TEXT NOT NULL,
            user_id TEXT NOT NULL,
            groups TEXT NOT NULL,
            scopes TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        );
        CREATE INDEX api_keys_tenant ON api_keys(tenant);
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            user_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            filename TEXT NOT NULL,
            options TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            heartbeat_at DOUBLE PRECISION,
            worker TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            result TEXT NOT NULL DEFAULT '{{}}'
        );
        CREATE INDEX jobs_status ON jobs(status, created_at);
        CREATE INDEX jobs_tenant ON jobs(tenant, created_at);
        CREATE TABLE job_payloads (
            job_id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
            data {blob} NOT NULL
        );
        CREATE TABLE audit_log (
            id {serial},
            at DOUBLE PRECISION NOT NULL,
            action TEXT NOT NULL,
            tenant TEXT NOT NULL,
            user_id TEXT NOT NULL,
            key_id TEXT NOT NULL,
            request_id TEXT NOT NULL,
            status INTEGER NOT NULL,
            query TEXT NOT NULL,
            route TEXT NOT NULL,
            models TEXT NOT NULL,
            chunks TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cost_usd DOUBLE PRECISION NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            detail TEXT NOT NULL
        );
        CREATE INDEX audit_log_tenant ON audit_log(tenant, at);
        """,
    ),
    (
        # Reading a tenant's log newest first, a page at a time, seeks here.
        "s002_audit_by_tenant_id",
        "CREATE INDEX audit_log_tenant_id ON audit_log(tenant, id)",
    ),
    (
        # Retention deletes by age; without this each hourly pass would read the whole log.
        "s003_audit_by_time",
        "CREATE INDEX audit_log_at ON audit_log(at)",
    ),
    (
        # A request's final record replaces its in-progress one (status 0) found here; only
        # in-progress records are indexed, so the index stays as small as the requests in flight.
        "s004_audit_in_progress",
        "CREATE INDEX audit_log_in_progress ON audit_log(request_id) WHERE status = 0",
    ),
    (
        # Jobs that must not run beside each other (two replacements of one document) name the
        # same ``exclusive`` key; while one is queued or running, the database refuses another,
        # whichever worker accepted it.
        "s005_jobs_exclusive",
        """
        ALTER TABLE jobs ADD COLUMN exclusive TEXT;
        CREATE UNIQUE INDEX jobs_exclusive ON jobs(exclusive)
            WHERE exclusive IS NOT NULL AND status IN ('queued', 'running')
        """,
    ),
]

MIGRATIONS: list[Migration] = [
    Migration(name, {dialect: script.format(**types) for dialect, types in _TYPES.items()})
    for name, script in _SCRIPTS
]


def migrate(db: Database) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; returns their names."""
    return run_migrations(db, MIGRATIONS, LEDGER, lock_key=_PG_LOCK)
