"""An iterator run in a thread of its own, a bounded number of items ahead of its consumer.

Ingestion reads and chunks files in one while the embedding model (which releases the GIL while it
computes) works in the other.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ReadAhead(Generic[T]):
    """Runs an iterator in a thread of its own, at most ``size`` items ahead of the consumer.

    An exception in the thread is raised to the consumer at the item where it happened. ``close``
    stops the thread at its next item, so an interrupted run does not read on.
    """

    def __init__(self, items: Iterator[T], size: int) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name="ingest-reader", daemon=True)
        self._thread.start()

    def _run(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put(("item", item)):
                    return
        except BaseException as exc:  # handed over: the consumer raises it, nothing is lost here
            self._put(("error", exc))
            return
        self._put(("end", None))

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def ready(self) -> bool:
        """Whether the next item is already there."""
        return not self._queue.empty()

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        kind, value = self._queue.get()
        if kind == "end":
            self._queue.put_nowait(("end", None))  # stays ended
            raise StopIteration
        if kind == "error":
            raise value
        item: T = value
        return item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a reader waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
