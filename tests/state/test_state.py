"""The control-plane state behaves the same on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stanchion.errors import Conflict
from stanchion.state import AuditRecord, StateStore, open_state
from stanchion.state.db import SQLiteDatabase
from stanchion.state.schema import migrate


@pytest.fixture(params=["sqlite", "postgres"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        store = open_state(sqlite_path=tmp_path / "state.db")
    else:
        store = open_state(dsn=request.getfixturevalue("pg_dsn"))
    yield store
    store.close()


def test_key_is_stored_hashed_and_found_by_secret(state: StateStore) -> None:
    key, secret = state.create_key(tenant="acme", user="ana", groups=["ops"], scopes=["query", "ingest"])
    assert secret.startswith("sk-stn-") and len(secret) > 40
    found = state.key_for_secret(secret)
    assert found is not None and found.id == key.id
    assert found.principal().groups == frozenset({"ops"}) and found.principal().can("ingest")
    assert not found.principal().can("admin")
    assert state.key_for_secret(secret + "x") is None
    # The secret appears nowhere in what is stored.
    rows = state.db.query("SELECT * FROM api_keys")
    assert all(secret not in str(v) for row in rows for v in row)


def test_revoked_key_stays_listed_but_inactive(state: StateStore) -> None:
    key, secret = state.create_key(tenant="acme", user="ana")
    state.create_key(tenant="other", user="bob")
    assert state.revoke_key(key.id) and not state.revoke_key(key.id)
    found = state.key_for_secret(secret)
    assert found is not None and not found.active
    assert [k.tenant for k in state.api_keys("acme")] == ["acme"]
    assert len(state.api_keys()) == 2


def test_job_lifecycle_and_payload_removed_when_done(state: StateStore) -> None:
    job = state.create_job(tenant="acme", user="ana", filename="a.md", data=b"# hi", options={"x": 1})
    assert state.job_payload(job.id) == b"# hi"
    claimed = state.claim_job("w1")
    assert claimed is not None and claimed.id == job.id and claimed.status == "running"
    assert state.claim_job("w2") is None  # nothing else queued
    assert state.heartbeat(job.id, "w1") and not state.heartbeat(job.id, "w2")
    assert not state.finish_job(job.id, "w2", "done")  # not w2's job
    assert state.finish_job(job.id, "w1", "done", result={"chunks": 3})
    done = state.job(job.id)
    assert done is not None and done.status == "done" and done.result == {"chunks": 3}
    assert state.job_payload(job.id) is None
    assert [j.id for j in state.jobs("acme")] == [job.id] and state.jobs("other") == []


def test_jobs_list_newest_first_a_page_at_a_time(state: StateStore) -> None:
    made = [
        state.create_job(tenant="acme", user="ana", filename=f"{i}.md", data=b"x", options={})
        for i in range(5)
    ]
    state.create_job(tenant="other", user="bob", filename="o.md", data=b"x", options={})
    claimed = state.claim_job("w1")  # the oldest: 0.md
    assert claimed is not None and claimed.filename == "0.md"
    newest_first = [j.filename for j in state.jobs("acme")]
    assert newest_first == ["4.md", "3.md", "2.md", "1.md", "0.md"]
    pages, before = [], None
    while page := state.jobs("acme", before=before, limit=2):
        pages.append([j.filename for j in page])
        before = page[-1].id
    assert pages == [["4.md", "3.md"], ["2.md", "1.md"], ["0.md"]]
    assert [j.filename for j in state.jobs("acme", status="running")] == ["0.md"]
    other = state.jobs("other")[0].id
    assert state.jobs("acme", before=other) == [] and state.jobs("acme", before="job_nope") == []
    assert {j.id for j in made} == {j.id for j in state.jobs("acme")}


def test_job_of_a_dead_worker_is_requeued_then_failed(state: StateStore) -> None:
    job = state.create_job(tenant="acme", user="ana", filename="a.md", data=b"x", options={})
    for attempt in range(1, 4):
        claimed = state.claim_job(f"w{attempt}", stale_after_s=0.0)
        assert claimed is not None and claimed.attempts == attempt
        time.sleep(0.01)  # the worker dies: no heartbeat
    assert state.claim_job("w9", stale_after_s=0.0) is None
    failed = state.job(job.id)
    assert failed is not None and failed.status == "failed" and "stopped 3 times" in (failed.error or "")


def test_concurrent_claims_take_each_job_once(state: StateStore) -> None:
    for i in range(6):
        state.create_job(tenant="t", user="u", filename=f"{i}.md", data=b"x", options={})
    taken: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := state.claim_job(name)) is not None:
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 6 and len(set(taken)) == 6


def test_audit_log_redacts_secrets_and_sums_usage(state: StateStore) -> None:
    state.audit(
        [
            AuditRecord(
                "answer",
                "acme",
                "ana",
                "key_1",
                "req-1",
                200,
                query="my key is sk-abcdefghijklmnopqrstuv ok",
                models=("m",),
                chunks=("d#0",),
                input_tokens=10,
                output_tokens=5,
                cost_usd=0.5,
                detail={"auth": "Bearer abcdefghijklmnopqrstuvwxyz"},
            ),
            AuditRecord("search", "other", "bob", "key_2", "req-2", 200, query="q", input_tokens=99),
        ]
    )
    (record,) = state.audit_log("acme")
    assert "sk-abcdef" not in record.query and "[REDACTED]" in record.query
    assert "abcdefghijklmnop" not in str(record.detail)
    assert record.chunks == ("d#0",) and record.models == ("m",)
    assert state.usage("acme") == {"requests": 1, "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.5}


def test_audit_log_filters_and_pages_newest_first(state: StateStore) -> None:
    records = [
        AuditRecord(action, tenant, user, "k", f"r{i}", 200, at=1000.0 + i, input_tokens=i, cost_usd=0.25)
        for i, (action, tenant, user) in enumerate(
            [
                ("search", "acme", "ana"),
                ("answer", "acme", "bob"),
                ("answer", "other", "ana"),
                ("answer", "acme", "ana"),
                ("documents.delete", "acme", "ana"),
            ]
        )
    ]
    state.audit(records)
    newest_first = [r.request_id for r in state.audit_log("acme")]
    assert newest_first == ["r4", "r3", "r1", "r0"]
    assert [r.request_id for r in state.audit_log("acme", action="answer")] == ["r3", "r1"]
    assert [r.request_id for r in state.audit_log("acme", user="ana")] == ["r4", "r3", "r0"]
    assert [r.request_id for r in state.audit_log("acme", since=1001.0, until=1004.0)] == ["r3", "r1"]
    pages, before = [], None
    while page := state.audit_log("acme", before=before, limit=3):
        pages.append([r.request_id for r in page])
        before = page[-1].id
    assert pages == [["r4", "r3", "r1"], ["r0"]]
    assert state.usage("acme", since=1001.0, until=1004.0) == {
        "requests": 2,
        "input_tokens": 4,
        "output_tokens": 0,
        "cost_usd": 0.5,
    }


def test_prune_audit_deletes_what_is_older_in_batches(state: StateStore) -> None:
    state.audit([AuditRecord("search", "acme", "ana", "k", f"r{i}", 200, at=1000.0 + i) for i in range(7)])
    assert state.prune_audit(1005.0, batch=2) == 5  # three full batches and a short one
    assert [r.request_id for r in state.audit_log()] == ["r6", "r5"]
    assert state.prune_audit(1005.0) == 0


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "s.db")
    assert migrate(db) == [
        "s001_keys_jobs_audit",
        "s002_audit_by_tenant_id",
        "s003_audit_by_time",
        "s004_audit_in_progress",
        "s005_jobs_exclusive",
    ]
    assert migrate(db) == []
    db.close()


class TestExclusiveJobs:
    def test_one_job_per_exclusive_key_while_queued_or_running(self, state: StateStore) -> None:
        """A second job with the same key is a Conflict until the first finishes; other keys and
        jobs without a key are never held up."""
        first = state.create_job(tenant="t", user="u", filename="a.md", data=b"a", options={}, exclusive="k")
        with pytest.raises(Conflict):
            state.create_job(tenant="t", user="u", filename="b.md", data=b"b", options={}, exclusive="k")
        state.create_job(tenant="t", user="u", filename="c.md", data=b"c", options={}, exclusive="other")
        state.create_job(tenant="t", user="u", filename="d.md", data=b"d", options={})
        claimed = state.claim_job("w1")
        assert claimed is not None and claimed.id == first.id
        with pytest.raises(Conflict):  # running holds the key too
            state.create_job(tenant="t", user="u", filename="b.md", data=b"b", options={}, exclusive="k")
        assert state.finish_job(first.id, "w1", "done")
        state.create_job(tenant="t", user="u", filename="b.md", data=b"b", options={}, exclusive="k")
