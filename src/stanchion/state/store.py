"""StateStore: API keys, ingest jobs and the audit log on one ``Database``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from stanchion.errors import Conflict
from stanchion.state.db import Database, PostgresDatabase, Row, SQLiteDatabase
from stanchion.state.records import ApiKey, AuditRecord, Job, JobStatus
from stanchion.state.schema import migrate
from stanchion.state.secrets import display_prefix, key_hash, new_key, redact

# The status of the audit record a long request leaves when it starts; its final record replaces
# it. One still there means the request never finished (its worker died).
IN_PROGRESS = 0
# A running job whose worker has not reported for this long is presumed dead and re-queued.
STALE_JOB_S = 30.0
MAX_JOB_ATTEMPTS = 3

_KEY_COLUMNS = "id, prefix, name, tenant, user_id, groups, scopes, created_at, revoked_at"
_JOB_COLUMNS = (
    "id, tenant, user_id, kind, status, filename, created_at, updated_at, attempts, error, result, options"
)
_AUDIT_COLUMNS = (
    "at, action, tenant, user_id, key_id, request_id, status, query, route, models, chunks, "
    "input_tokens, output_tokens, cost_usd, latency_ms, detail"
)


class StateStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.applied = migrate(db)  # migrations this open applied (for `stanchion migrate`)

    # --- API keys ----------------------------------------------------------------------------------

    def create_key(
        self,
        *,
        tenant: str,
        user: str,
        groups: Sequence[str] = (),
        scopes: Sequence[str] = ("query",),
        name: str = "",
    ) -> tuple[ApiKey, str]:
        """Store a new key; returns it with its secret, which is not kept and cannot be shown again."""
        key_id, secret = new_key()
        key = ApiKey(
            key_id, display_prefix(secret), name, tenant, user, tuple(groups), tuple(scopes), time.time()
        )
        self.db.execute(
            "INSERT INTO api_keys (id, hash, prefix, name, tenant, user_id, groups, scopes, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.id,
                key_hash(secret),
                key.prefix,
                name,
                tenant,
                user,
                json.dumps(list(groups)),
                json.dumps(list(scopes)),
                key.created_at,
            ),
        )
        return key, secret

    def key_for_secret(self, secret: str) -> ApiKey | None:
        rows = self.db.query(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE hash = ?", (key_hash(secret),))
        return _key(rows[0]) if rows else None

    def api_keys(self, tenant: str | None = None) -> list[ApiKey]:
        if tenant is None:
            rows = self.db.query(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at")
        else:
            rows = self.db.query(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant = ? ORDER BY created_at", (tenant,)
            )
        return [_key(r) for r in rows]

    def revoke_key(self, key_id: str) -> ApiKey | None:
        """The key, now revoked; None when there was no active key with this id."""
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            rows = tx.query(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)) if changed else []
        return _key(rows[0]) if rows else None

    # --- ingest jobs -------------------------------------------------------------------------------

    def create_job(
        self,
        *,
        tenant: str,
        user: str,
        filename: str,
        data: bytes,
        options: dict[str, object],
        kind: str = "ingest",
        exclusive: str | None = None,
    ) -> Job:
        """Queue a job with its payload in one transaction: a job never exists without its data.

        While a job with the same ``exclusive`` key is queued or running, this raises ``Conflict``
        (a unique index decides, so two workers queueing at once cannot both succeed).
        """
        now = time.time()
        job = Job(
            "job_" + uuid.uuid4().hex, tenant, user, kind, "queued", filename, now, now, options=options
        )
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO jobs (id, tenant, user_id, kind, status, filename, options, created_at, "
                    "updated_at, exclusive) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                    (job.id, tenant, user, kind, filename, json.dumps(options), now, now, exclusive),
                )
                tx.execute("INSERT INTO job_payloads (job_id, data) VALUES (?, ?)", (job.id, data))
        except Conflict as exc:
            raise Conflict(
                "another job that excludes this one is queued or running; try again when it has finished",
                backend=exc.backend,
                detail=exc.detail,
            ) from exc
        return job

    def job(self, job_id: str) -> Job | None:
        rows = self.db.query(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(
        self,
        tenant: str,
        *,
        user: str | None = None,
        status: str | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """A tenant's jobs (one user's, with ``user``), newest first; ``before`` is a job id, to read
        on after a previous page (an id of another tenant, or none at all, gives an empty page)."""
        clause, params = _where(("tenant = ?", tenant), ("user_id = ?", user), ("status = ?", status))
        if before is not None:
            # (created_at, id) orders jobs created in the same instant too, so pages never overlap.
            clause += " AND (created_at, id) < (SELECT created_at, id FROM jobs WHERE id = ? AND tenant = ?)"
            params += [before, tenant]
        rows = self.db.query(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {clause} ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [_job(r) for r in rows]

    def job_payload(self, job_id: str) -> bytes | None:
        rows = self.db.query("SELECT data FROM job_payloads WHERE job_id = ?", (job_id,))
        return bytes(rows[0][0]) if rows else None

    def claim_job(self, worker: str, *, stale_after_s: float = STALE_JOB_S) -> Job | None:
        """Take the oldest queued job for ``worker``, first re-queueing jobs whose worker went silent."""
        now = time.time()
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET status = 'failed', updated_at = ?, worker = NULL, error = ? "
                "WHERE status = 'running' AND heartbeat_at < ? AND attempts >= ?",
                (
                    now,
                    f"the worker stopped {MAX_JOB_ATTEMPTS} times while running this job",
                    now - stale_after_s,
                    MAX_JOB_ATTEMPTS,
                ),
            )
            tx.execute(
                "UPDATE jobs SET status = 'queued', updated_at = ?, worker = NULL "
                "WHERE status = 'running' AND heartbeat_at < ?",
                (now, now - stale_after_s),
            )
            rows = tx.query("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at LIMIT 1")
            if not rows:
                return None
            job_id = rows[0][0]
            claimed = tx.execute(
                "UPDATE jobs SET status = 'running', worker = ?, heartbeat_at = ?, updated_at = ?, "
                "attempts = attempts + 1 WHERE id = ? AND status = 'queued'",
                (worker, now, now, job_id),
            )
            if not claimed:
                return None
            return _job(tx.query(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))[0])

    def claimable_jobs(self, *, stale_after_s: float = STALE_JOB_S) -> int:
        """Jobs waiting for a worker: queued, or running under a worker gone silent."""
        row = self.db.query(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' OR (status = 'running' AND heartbeat_at < ?)",
            (time.time() - stale_after_s,),
        )[0]
        return int(row[0])

    def heartbeat(self, job_id: str, worker: str) -> bool:
        """Keep a running job ours; False when another worker has taken it over."""
        now = time.time()
        return (
            self.db.execute(
                "UPDATE jobs SET heartbeat_at = ?, updated_at = ? WHERE id = ? AND worker = ? AND status = 'running'",
                (now, now, job_id, worker),
            )
            > 0
        )

    def finish_job(
        self,
        job_id: str,
        worker: str,
        status: JobStatus,
        *,
        result: dict[str, object] | None = None,
        error: str | None = None,
    ) -> bool:
        with self.db.transaction() as tx:
            done = tx.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, updated_at = ?, worker = NULL "
                "WHERE id = ? AND worker = ? AND status = 'running'",
                (status, json.dumps(result or {}), error, time.time(), job_id, worker),
            )
            if done:
                tx.execute("DELETE FROM job_payloads WHERE job_id = ?", (job_id,))
        return done > 0

    # --- audit log ---------------------------------------------------------------------------------

    def audit(self, records: Sequence[AuditRecord], *, completing: Sequence[AuditRecord] = ()) -> None:
        """Append ``records``; ``completing`` (some of them) replace the in-progress records
        (status ``IN_PROGRESS``) their requests left when they started, in the same transaction."""
        if not records:
            return
        rows = [
            (
                r.at or time.time(),
                r.action,
                r.tenant,
                r.user,
                r.key_id,
                r.request_id,
                r.status,
                redact(r.query),
                r.route,
                json.dumps(list(r.models)),
                json.dumps(list(r.chunks)),
                r.input_tokens,
                r.output_tokens,
                r.cost_usd,
                r.latency_ms,
                redact(json.dumps(r.detail, default=str)),
            )
            for r in records
        ]
        with self.db.transaction() as tx:  # one batch: one round trip on PostgreSQL
            tx.execute_many(f"INSERT INTO audit_log ({_AUDIT_COLUMNS}) VALUES ({', '.join('?' * 16)})", rows)
            if completing:
                tx.execute_many(
                    "DELETE FROM audit_log WHERE status = ? AND request_id = ? AND action = ? AND key_id = ?",
                    [(IN_PROGRESS, r.request_id, r.action, r.key_id) for r in completing],
                )

    def audit_log(
        self,
        tenant: str | None = None,
        *,
        action: str | None = None,
        user: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records, newest first. ``since`` (inclusive) and ``until`` (exclusive) are epoch
        seconds; ``before`` is a record id, to read on from the last one of a previous page."""
        clause, params = _audit_where(tenant, since, until, ("action = ?", action), ("user_id = ?", user))
        if before is not None:
            clause += " AND id < ?"
            params.append(before)
        rows = self.db.query(
            f"SELECT {_AUDIT_COLUMNS}, id FROM audit_log WHERE {clause} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [_audit(r) for r in rows]

    def prune_audit(self, before: float, *, batch: int = 5000) -> int:
        """Delete records older than ``before`` (epoch seconds), ``batch`` rows per transaction so
        that writers are never locked out for long; returns how many went."""
        deleted = 0
        while True:
            with self.db.transaction() as tx:
                count = tx.execute(
                    "DELETE FROM audit_log WHERE id IN"
                    " (SELECT id FROM audit_log WHERE at < ? ORDER BY at LIMIT ?)",
                    (before, batch),
                )
            deleted += count
            if count < batch:
                return deleted

    def usage(
        self, tenant: str, *, since: float | None = None, until: float | None = None
    ) -> dict[str, float]:
        clause, params = _audit_where(tenant, since, until)
        row = self.db.query(
            "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
            f"COALESCE(SUM(cost_usd), 0) FROM audit_log WHERE {clause}",
            tuple(params),
        )[0]
        return {
            "requests": int(row[0]),
            "input_tokens": int(row[1]),
            "output_tokens": int(row[2]),
            "cost_usd": float(row[3]),
        }

    def ping(self) -> None:
        self.db.query("SELECT 1")

    def close(self) -> None:
        self.db.close()


def open_state(
    *, sqlite_path: Path | None = None, dsn: str | None = None, pool_timeout_s: float = 5.0
) -> StateStore:
    """The control-plane state in PostgreSQL when ``dsn`` is given, else in a SQLite file.
    ``pool_timeout_s``: how long a call waits for a PostgreSQL connection before it fails."""
    if dsn:
        return StateStore(PostgresDatabase(dsn, pool_timeout_s=pool_timeout_s))
    if sqlite_path is None:
        raise ValueError("open_state needs a SQLite path or a PostgreSQL DSN")
    return StateStore(SQLiteDatabase(sqlite_path))


def _key(row: Row) -> ApiKey:
    return ApiKey(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        tuple(json.loads(row[5])),
        tuple(json.loads(row[6])),
        float(row[7]),
        None if row[8] is None else float(row[8]),
    )


def _job(row: Row) -> Job:
    return Job(
        row[0],
        row[1],
        row[2],
        row[3],
        cast(JobStatus, row[4]),
        row[5],
        float(row[6]),
        float(row[7]),
        int(row[8]),
        row[9],
        json.loads(row[10]),
        json.loads(row[11]),
    )


def _where(*conditions: tuple[str, object]) -> tuple[str, list[object]]:
    """A WHERE condition (never empty) from the ``(sql, value)`` pairs whose value is set."""
    chosen = [(sql, value) for sql, value in conditions if value is not None]
    return " AND ".join(["1 = 1", *(sql for sql, _ in chosen)]), [value for _, value in chosen]


def _audit_where(
    tenant: str | None, since: float | None, until: float | None, *more: tuple[str, object]
) -> tuple[str, list[object]]:
    return _where(("tenant = ?", tenant), ("at >= ?", since), ("at < ?", until), *more)


def _audit(row: Row) -> AuditRecord:
    detail: dict[str, Any] = json.loads(row[15])
    return AuditRecord(
        action=row[1],
        tenant=row[2],
        user=row[3],
        key_id=row[4],
        request_id=row[5],
        status=int(row[6]),
        at=float(row[0]),
        query=row[7],
        route=row[8],
        models=tuple(json.loads(row[9])),
        chunks=tuple(json.loads(row[10])),
        input_tokens=int(row[11]),
        output_tokens=int(row[12]),
        cost_usd=float(row[13]),
        latency_ms=float(row[14]),
        detail=detail,
        id=int(row[16]),
    )
