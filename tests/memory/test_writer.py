"""MemoryWriter: submitting never waits; a full queue drops and counts; close writes what is queued."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from stanchion.errors import ModelUnavailable
from stanchion.memory import Candidate, DatabaseMemoryStore, Memory, MemoryWriter, RuleExtractor
from stanchion.memory.fakes import WordEmbedder
from stanchion.state.db import SQLiteDatabase
from stanchion.types import Message


class GatedExtractor:
    """The rule extractor, held at a gate until the test opens it; fails on 'boom'."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def extract(self, messages: Sequence[Message]) -> list[Candidate]:
        self.entered.set()
        await self.gate.wait()
        if any("boom" in m.content for m in messages):
            raise ModelUnavailable("model down", model="fake")
        return RuleExtractor().extract_sync(messages)


def _memory(tmp_path: Path, extractor: GatedExtractor) -> Memory:
    return Memory(
        DatabaseMemoryStore(SQLiteDatabase(tmp_path / "state.db"), owns_db=True),
        WordEmbedder(),
        extractor=extractor,
    )


def test_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    """With the extractor stuck, submit still returns at once: the queue fills, the rest are dropped."""

    async def scenario() -> None:
        extractor = GatedExtractor()
        memory = _memory(tmp_path, extractor)
        writer = MemoryWriter(memory, max_queue=2)
        results = [writer.submit("acme", "ann", [Message("user", "I love Python.")], source="s0")]
        await extractor.entered.wait()  # the first job is in the extractor, stuck at the gate
        results += [
            writer.submit("acme", f"u{i}", [Message("user", f"I live in City{i}.")], source=f"s{i}")
            for i in range(1, 5)
        ]
        assert results == [True, True, True, False, False]
        assert (writer.stats.dropped, writer.pending) == (2, 2)
        extractor.gate.set()
        await writer.flush()
        assert writer.stats.written == 3 and writer.stats.memories == 3
        assert [m.value for m in memory.store.memories("acme", "u1")] == ["City1"]
        assert memory.store.memories("acme", "u3") == []  # dropped
        await writer.aclose()
        memory.store.close()

    asyncio.run(scenario())


def test_close_writes_what_is_queued_then_refuses(tmp_path: Path) -> None:
    """aclose drains the queue (shutdown loses nothing accepted); later submits are dropped."""

    async def scenario() -> None:
        extractor = GatedExtractor()
        extractor.gate.set()
        memory = _memory(tmp_path, extractor)
        writer = MemoryWriter(memory, max_queue=10)
        for i in range(5):
            assert writer.submit("acme", "ann", [Message("user", f"My lucky number is {i}")])
        await writer.aclose()
        [current] = memory.store.memories("acme", "ann")
        assert current.value == "4"
        assert len(memory.store.memories("acme", "ann", include_history=True)) == 5
        assert not writer.submit("acme", "ann", [Message("user", "I love tea")])
        assert writer.stats.dropped == 1
        memory.store.close()

    asyncio.run(scenario())


def test_a_failing_extraction_is_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        extractor = GatedExtractor()
        extractor.gate.set()
        memory = _memory(tmp_path, extractor)
        writer = MemoryWriter(memory)
        writer.submit("acme", "ann", [Message("user", "boom")])
        writer.submit("acme", "ann", [Message("user", "I live in Oslo")])
        await writer.flush()
        assert (writer.stats.failed, writer.stats.written) == (1, 1)
        assert [m.value for m in memory.store.memories("acme", "ann")] == ["Oslo"]
        await writer.aclose()
        memory.store.close()

    asyncio.run(scenario())
