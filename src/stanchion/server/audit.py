"""Writes audit records in small batches off the event loop, so auditing adds no request latency.

A record is queued in memory and flushed within ``interval_s``; a worker killed outright loses at
most that much of the log. Actions that must never be lost (deletions, key changes) call
``write_now``. With a retention, the writer also deletes records older than it, once at start
and then every ``prune_every_s`` (every worker does; a pass finding nothing costs one index seek).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from stanchion.state import AuditRecord, StateStore

log = logging.getLogger(__name__)


class AuditWriter:
    def __init__(
        self,
        state: StateStore,
        *,
        interval_s: float = 0.2,
        max_batch: int = 500,
        retention_s: float | None = None,
        prune_every_s: float = 3600.0,
    ) -> None:
        self.state = state
        self.interval_s = interval_s
        self.max_batch = max_batch
        self.retention_s = retention_s
        self.prune_every_s = prune_every_s
        self._next_prune = 0.0  # monotonic time of the next retention pass
        self._pending: list[AuditRecord] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    def record(self, record: AuditRecord) -> None:
        self._pending.append(record)

    async def write_now(self, record: AuditRecord) -> None:
        await asyncio.to_thread(self.state.audit, [record])

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                await asyncio.to_thread(self.state.audit, batch)
            except Exception:  # the audit log must not take the API down; the loss is logged
                log.exception("audit.write_failed", extra={"records": len(batch)})

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()
            if self.retention_s is not None and time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + self.prune_every_s
                await self.prune(time.time() - self.retention_s)

    async def prune(self, before: float) -> int:
        """Delete records older than ``before``; the pass itself is audited when it deleted any."""
        try:
            deleted = await asyncio.to_thread(self.state.prune_audit, before)
        except Exception:  # retention must not take the API down either; the next pass retries
            log.exception("audit.prune_failed")
            return 0
        if deleted:
            log.info("audit.pruned", extra={"deleted": deleted, "before": before})
            self.record(prune_record(deleted, before, actor="server"))
        return deleted

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


def prune_record(deleted: int, before: float, *, actor: str) -> AuditRecord:
    """The audit entry of a retention pass: the log says when and how much of it was deleted."""
    return AuditRecord("audit.prune", "*", actor, "", "", 200, detail={"deleted": deleted, "before": before})
