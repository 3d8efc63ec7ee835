"""server/heap.py: the worker's paced garbage collection."""

from __future__ import annotations

import asyncio
import gc
import weakref

from stanchion.server.heap import paced_collection


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_paced_collection_freezes_disables_and_restores() -> None:
    async def run() -> tuple[bool, int]:
        async with paced_collection(every_s=3600):
            return gc.isenabled(), gc.get_freeze_count()

    assert gc.isenabled()
    enabled_inside, frozen_inside = asyncio.run(run())
    assert not enabled_inside and frozen_inside > 0
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_cycles_are_still_collected_on_the_timer() -> None:
    async def run() -> tuple[bool, bool]:
        async with paced_collection(every_s=0.5):
            node = _Node()
            ref = weakref.ref(node)
            del node
            await asyncio.sleep(0.1)
            before = ref() is not None  # the automatic collector is off: the cycle is still there
            await asyncio.sleep(2.0)  # the timer (checked each second) runs a full collection
            return before, ref() is None

    alive_at_first, freed_later = asyncio.run(run())
    assert alive_at_first and freed_later


def test_many_pending_allocations_bring_the_collection_forward() -> None:
    async def run() -> bool:
        async with paced_collection(every_s=3600, max_pending=1_000):
            node = _Node()
            ref = weakref.ref(node)
            del node
            keep = [[] for _ in range(5_000)]  # tracked allocations past max_pending
            await asyncio.sleep(1.5)
            del keep
            return ref() is None

    assert asyncio.run(run())
