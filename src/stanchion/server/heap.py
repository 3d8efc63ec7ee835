"""Garbage collection paced for a server of many long streams.

CPython's collector runs a young pass every few thousand net allocations, and each pass walks
every object allocated since the last one that is still alive. A worker with 500 open streams
keeps tens of thousands of such objects (each request's scope, tasks, buffers) alive for the two
seconds a stream lasts, so under load the passes came every few hundred milliseconds and took
15-30 ms each, with full passes over the whole heap (the models, the libraries) of up to 160 ms:
those pauses, not CPU, were the gateway's p99 at 1,000 users.

A request leaves no reference cycles behind (tests check it), so reference counting frees its
objects as it ends. The worker therefore freezes what startup loaded, turns the automatic
collector off, and keeps one full collection as a safety net for the cycles that error paths can
leave: every ``every_s`` seconds, or sooner once ``max_pending`` more tracked objects are alive
than at the last one (leaked cycles, not traffic, make that count grow). A full collection walks
every live request's objects, tens of milliseconds under load, so it is kept rare.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)

FULL_EVERY_S = 600.0
MAX_PENDING = 200_000  # more live tracked objects than at the last collection (~20-40 MB)
_CHECK_S = 1.0


@contextlib.asynccontextmanager
async def paced_collection(
    *, every_s: float = FULL_EVERY_S, max_pending: int = MAX_PENDING
) -> AsyncIterator[None]:
    """Within the block: startup's objects frozen, automatic collection off, a full collection
    on a timer. The collector is restored as it was when the block ends (tests run many apps
    in one process)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    task = asyncio.get_running_loop().create_task(_collect(every_s, max_pending))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.unfreeze()
        if was_enabled:
            gc.enable()


async def _collect(every_s: float, max_pending: int) -> None:
    last = time.monotonic()
    while True:
        await asyncio.sleep(_CHECK_S)
        now = time.monotonic()
        if now - last < every_s and gc.get_count()[0] < max_pending:
            continue
        started = time.perf_counter()
        found = gc.collect()
        last = time.monotonic()
        log.debug(
            "gc.collect", extra={"unreachable": found, "ms": round((time.perf_counter() - started) * 1000, 1)}
        )
