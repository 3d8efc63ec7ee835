"""An iterator run in a thread of its own, a bounded amount of work ahead of its consumer.

Ingestion reads and chunks files in one thread while the embedding model (which releases the GIL
while it computes) works in the other.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class ReadAhead(Generic[T]):
    """Runs ``items`` in a thread of its own while the items ready weigh less than ``limit``.

    ``weight`` says what an item costs to hold (ingestion: its chunks), so what waits is bounded
    by ``limit`` plus one item. An exception in the thread is raised to the consumer where it
    happened. ``close`` stops the thread at its next item, so an interrupted run reads no further.
    """

    def __init__(self, items: Iterator[T], limit: int, weight: Callable[[T], int] = lambda _: 1) -> None:
        self._ready: deque[T] = deque()
        self._held = 0  # weight of the items in _ready
        self._limit = max(1, limit)
        self._weight = weight
        self._ended = False
        self._error: BaseException | None = None
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(items,), name="ingest-reader", daemon=True)
        self._thread.start()

    def _run(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                cost = max(1, self._weight(item))
                with self._cond:
                    self._cond.wait_for(lambda: self._stopped or self._held < self._limit)
                    if self._stopped:
                        return
                    self._ready.append(item)
                    self._held += cost
                    self._cond.notify_all()
        except BaseException as exc:  # handed over: the consumer raises it, nothing is lost here
            with self._cond:
                self._error = exc
                self._cond.notify_all()
            return
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def ready(self) -> bool:
        """Whether the next item is already there."""
        with self._cond:
            return bool(self._ready)

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._ready) or self._ended or self._error is not None)
            if self._ready:
                item = self._ready.popleft()
                self._held -= max(1, self._weight(item))
                self._cond.notify_all()
                return item
            if self._error is not None:
                raise self._error
            raise StopIteration

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._ready.clear()
            self._held = 0
            self._cond.notify_all()
