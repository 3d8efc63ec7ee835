"""Writes audit records in small batches off the event loop, so auditing adds no request latency.

A record is queued in memory and flushed within ``interval_s``. Actions that must never be lost
(deletions, key changes) call ``write_now``. With a retention, the writer also deletes records
older than it, once at start and then every ``prune_every_s`` (every worker does; a pass finding
nothing costs one index seek).

While the database is unreachable, records wait in memory (their time is taken when queued) and
are written once it is back; ``pending`` says how many wait (``/readyz`` shows it). At most
``max_pending`` wait: beyond that the oldest are dropped, counted and logged (``audit.dropped``).

A long request (a chat completion, an answer) calls ``started`` when admitted: its in-progress
record (status ``IN_PROGRESS``) is written with the next batch, and its final record replaces
it. A worker killed mid-request thus still leaves a record of the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque

from stanchion.errors import BackendUnavailable
from stanchion.logs import request_id
from stanchion.state import AuditRecord, Principal, StateStore
from stanchion.state.store import IN_PROGRESS

log = logging.getLogger(__name__)

_Request = tuple[str, str, str]  # (request id, action, key id): what a final record completes


class AuditWriter:
    def __init__(
        self,
        state: StateStore,
        *,
        interval_s: float = 0.2,
        max_batch: int = 500,
        max_pending: int = 10_000,
        retention_s: float | None = None,
        prune_every_s: float = 3600.0,
    ) -> None:
        self.state = state
        self.interval_s = interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.retention_s = retention_s
        self.prune_every_s = prune_every_s
        self.dropped = 0  # records dropped because too many waited
        self._next_prune = 0.0  # monotonic time of the next retention pass
        # Records to write, each with whether it completes an in-progress record already written.
        self._pending: deque[tuple[AuditRecord, bool]] = deque()
        self._unwritten: dict[_Request, AuditRecord] = {}  # in-progress records not yet written
        self._written: set[_Request] = set()  # in-progress records written (or being written)
        self._in_flight = 0
        self._unlogged_drops = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Records not yet in the database (queued, or in a write under way)."""
        return len(self._pending) + len(self._unwritten) + self._in_flight

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    def started(self, action: str, principal: Principal, *, query: str = "", route: str = "") -> None:
        """Queue the in-progress record of the request being served, which may run long: its
        final record (same request id, action and key, through ``record``) replaces it."""
        record = AuditRecord(
            action,
            principal.tenant,
            principal.user,
            principal.key_id,
            request_id.get(),
            IN_PROGRESS,
            at=time.time(),
            query=query,
            route=route,
        )
        self._make_room()
        self._unwritten[_request(record)] = record

    def record(self, record: AuditRecord) -> None:
        request = _request(record)
        completes = False
        if self._unwritten.pop(request, None) is None and request in self._written:
            self._written.discard(request)
            completes = True  # its in-progress record is in the database: replace it there
        self._make_room()
        self._pending.append((_stamped(record), completes))

    async def write_now(self, record: AuditRecord) -> None:
        await asyncio.to_thread(self.state.audit, [_stamped(record)])

    async def flush(self) -> None:
        """Write what is queued; on an unreachable database, keep it for the next flush."""
        if self._unlogged_drops:
            log.error("audit.dropped", extra={"records": self._unlogged_drops, "dropped_total": self.dropped})
            self._unlogged_drops = 0
        written = 0
        while self._pending or self._unwritten:
            starts = list(self._unwritten.values())[: self.max_batch]
            for start in starts:
                request = _request(start)
                del self._unwritten[request]
                self._written.add(request)
            finals = [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch))]
            batch = [*starts, *(record for record, _ in finals)]
            self._in_flight = len(batch)
            try:
                await asyncio.to_thread(
                    self.state.audit, batch, completing=[record for record, completes in finals if completes]
                )
            except BackendUnavailable as exc:
                self._requeue(starts, finals)
                self._failing = True
                log.warning("audit.waiting", extra={"records": self.pending, "detail": exc.detail})
                return
            except Exception:  # a record the database refuses: write the others one by one
                log.exception("audit.batch_failed", extra={"records": len(batch)})
                if not await self._write_each(starts, finals):
                    return
            finally:
                self._in_flight = 0
            written += len(batch)
        if self._failing and written:
            self._failing = False
            log.warning("audit.recovered", extra={"written": written})

    async def _write_each(self, starts: list[AuditRecord], finals: list[tuple[AuditRecord, bool]]) -> bool:
        """Write records singly, dropping (and logging) those refused; False if the database went
        away meanwhile (the rest is queued again)."""
        items = [(start, False, True) for start in starts] + [(r, c, False) for r, c in finals]
        for n, (record, completes, _) in enumerate(items):
            try:
                await asyncio.to_thread(self.state.audit, [record], completing=[record] if completes else [])
            except BackendUnavailable:
                rest = items[n:]
                self._requeue([r for r, _, s in rest if s], [(r, c) for r, c, s in rest if not s])
                self._failing = True
                return False
            except Exception:
                self.dropped += 1
                log.exception(
                    "audit.record_rejected", extra={"action": record.action, "request": record.request_id}
                )
        return True

    def _requeue(self, starts: list[AuditRecord], finals: list[tuple[AuditRecord, bool]]) -> None:
        """Put an unwritten batch back in front, as it was."""
        self._pending.extendleft(reversed(finals))
        for start in starts:
            request = _request(start)
            if request in self._written:  # its final has not come yet: still to be written
                self._written.discard(request)
                self._unwritten[request] = start

    def _make_room(self) -> None:
        while self.pending >= self.max_pending and (self._pending or self._unwritten):
            if self._pending:
                self._pending.popleft()
            else:
                del self._unwritten[next(iter(self._unwritten))]
            self.dropped += 1
            self._unlogged_drops += 1

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
        if self.pending:
            log.error("audit.lost_at_exit", extra={"records": self.pending})


def prune_record(deleted: int, before: float, *, actor: str) -> AuditRecord:
    """The audit entry of a retention pass: the log says when and how much of it was deleted."""
    return AuditRecord("audit.prune", "*", actor, "", "", 200, detail={"deleted": deleted, "before": before})


def _request(record: AuditRecord) -> _Request:
    return record.request_id, record.action, record.key_id


def _stamped(record: AuditRecord) -> AuditRecord:
    """The record with its time set now, if unset: a record written late keeps when it happened."""
    return record if record.at else dataclasses.replace(record, at=time.time())
