"""The server's audit writer: batches off the event loop, and retention on a running server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stanchion.server.audit import AuditWriter
from stanchion.state import AuditRecord, StateStore, open_state


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    store = open_state(sqlite_path=tmp_path / "state.db")
    yield store
    store.close()


def _record(request_id: str, at: float = 0.0) -> AuditRecord:
    return AuditRecord("search", "acme", "ana", "k", request_id, 200, at=at)


async def _run_for(writer: AuditWriter, seconds: float) -> None:
    writer.start()
    await asyncio.sleep(seconds)
    await writer.close()


def test_queued_records_are_written_within_the_interval_and_at_close(state: StateStore) -> None:
    async def scenario() -> list[str]:
        writer = AuditWriter(state, interval_s=0.02)
        writer.start()
        writer.record(_record("early"))
        await asyncio.sleep(0.2)
        written = [r.request_id for r in state.audit_log()]
        writer.record(_record("late"))
        await writer.close()  # flushes what is pending
        return written

    assert asyncio.run(scenario()) == ["early"]
    assert [r.request_id for r in state.audit_log()] == ["late", "early"]


def test_retention_deletes_old_records_on_a_running_server_and_says_so(state: StateStore) -> None:
    now = time.time()
    state.audit([_record("old", at=now - 7200), _record("recent", at=now - 60)])
    writer = AuditWriter(state, interval_s=0.01, retention_s=3600, prune_every_s=0.05)
    asyncio.run(_run_for(writer, 0.3))
    left = state.audit_log()
    assert [r.request_id for r in left if r.action == "search"] == ["recent"]
    (pass_record,) = [r for r in left if r.action == "audit.prune"]  # later passes found nothing
    assert pass_record.detail["deleted"] == 1 and pass_record.user == "server"


def test_without_retention_nothing_is_deleted(state: StateStore) -> None:
    state.audit([_record("ancient", at=1.0)])
    asyncio.run(_run_for(AuditWriter(state, interval_s=0.01, prune_every_s=0.01), 0.1))
    assert [r.request_id for r in state.audit_log()] == ["ancient"]
