"""``MemoryWriter``: memory is written after the answer, never before it.

``submit`` queues a conversation's turns and returns at once; a task on the event loop extracts
and writes them in order. The queue is bounded: when it is full, ``submit`` drops the turns and
counts them (``dropped``) rather than make the caller wait. ``aclose`` writes what is queued
before it returns (the server calls it on shutdown); ``flush`` waits until the queue is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from stanchion.errors import StanchionError
from stanchion.memory.service import Memory
from stanchion.types import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Job:
    tenant: str
    user: str
    messages: tuple[Message, ...]
    source: str


@dataclass
class WriterStats:
    submitted: int = 0
    written: int = 0  # jobs done (each may write zero or more memories)
    memories: int = 0  # memories added, updated or superseded
    dropped: int = 0  # refused because the queue was full (or the writer closed)
    failed: int = 0  # jobs whose extraction or write raised


class MemoryWriter:
    """Writes memories in the background on the running event loop; see the module docstring."""

    def __init__(self, memory: Memory, *, max_queue: int = 1000) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.memory = memory
        self.stats = WriterStats()
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Start the background task (on the running loop); ``submit`` starts it too."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="memory-writer")

    def submit(self, tenant: str, user: str, messages: Sequence[Message], *, source: str = "") -> bool:
        """Queue the turns for extraction; False (and counted) when dropped. Never waits."""
        if self._closed:
            self.stats.dropped += 1
            return False
        self.start()
        try:
            self._queue.put_nowait(_Job(tenant, user, tuple(messages), source))
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.warning("memory.dropped", extra={"tenant": tenant, "dropped": self.stats.dropped})
            return False
        self.stats.submitted += 1
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def flush(self) -> None:
        """Wait until everything submitted so far is written (or has failed)."""
        if self._task is not None:
            await self._queue.join()

    async def aclose(self) -> None:
        """Refuse new turns, write the queued ones, stop the task. Safe to call twice."""
        self._closed = True
        if self._task is None:
            return
        await self._queue.put(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if job is None:
                    return
                changes = await self.memory.remember(job.tenant, job.user, job.messages, source=job.source)
                self.stats.memories += len(changes)
                self.stats.written += 1
            except StanchionError as exc:
                # A model or store that failed loses this conversation's memories, not the loop.
                self.stats.failed += 1
                log.warning(
                    "memory.write_failed", extra={"tenant": job.tenant if job else "", "error": str(exc)}
                )
            except Exception:  # a bug: logged with its traceback and counted; the writer lives on
                self.stats.failed += 1
                log.exception("memory.write_crashed")
            finally:
                self._queue.task_done()
