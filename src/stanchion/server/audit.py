"""Writes audit records in small batches off the event loop, so auditing adds no request latency.

A record is queued in memory and flushed within ``interval_s``; a worker killed outright loses at
most that much of the log. Actions that must never be lost (deletions, key changes) call
``write_now``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from stanchion.state import AuditRecord, StateStore

log = logging.getLogger(__name__)


class AuditWriter:
    def __init__(self, state: StateStore, *, interval_s: float = 0.2, max_batch: int = 500) -> None:
        self.state = state
        self.interval_s = interval_s
        self.max_batch = max_batch
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

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
