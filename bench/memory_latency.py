"""What long-term memory adds to a run: the write path (inline vs ``MemoryWriter.submit``) and
``recall`` by the number of memories a user holds, on SQLite and PostgreSQL + pgvector.

Part 1 runs the same conversations two ways in one process: awaiting ``Memory.remember`` before
answering (what Mem0 users report as 4-20 s with an LLM extractor; here the rule extractor and
the packaged MiniLM) and handing them to the background writer. Part 2 times ``recall`` given
the question's vector (a run's retrieval embeds the question anyway) for users holding 10, 100
and 1,000 memories, on a SQLite file and, with pgserver installed, PostgreSQL.

    nice -n 10 python bench/memory_latency.py [--conversations 60] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from stanchion.core.embed import SentenceTransformerEmbedder, warm_for_serving
from stanchion.evals.memory import load_conversations, percentile
from stanchion.memory import Candidate, DatabaseMemoryStore, Memory, MemoryWriter
from stanchion.memory.fakes import WordEmbedder
from stanchion.state.db import Database, PostgresDatabase, SQLiteDatabase
from stanchion.types import Message

SIZES = (10, 100, 1000)
QUERIES = 200


def _ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):8.3f} ms  p95 {percentile(values, 95):8.3f} ms"


async def write_path(folder: Path, conversations: int) -> None:
    embedder = SentenceTransformerEmbedder()
    warm_for_serving(embedder)
    users = load_conversations()
    sessions = [(u, s) for u in users for s in u["sessions"]][:conversations]
    for mode in ("inline", "background"):
        store = DatabaseMemoryStore(SQLiteDatabase(folder / f"{mode}.db"), owns_db=True)
        memory = Memory(store, embedder)
        writer = MemoryWriter(memory)
        added: list[float] = []
        for user, session in sessions:
            turns = [Message("user", t) for t in session["turns"]]
            t0 = time.perf_counter()
            if mode == "inline":
                await memory.remember(user["tenant"], user["user"], turns, source=session["id"])
            else:
                writer.submit(user["tenant"], user["user"], turns, source=session["id"])
            added.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0)  # the rest of the run: the writer gets the loop meanwhile
        t0 = time.perf_counter()
        await writer.aclose()
        drained = (time.perf_counter() - t0) * 1000
        print(
            f"  {mode:10s} added to the run: {_ms(added)}   (queue drained at shutdown in {drained:.0f} ms)"
        )
        store.close()


def recall_path(name: str, db: Database) -> None:
    rng = np.random.default_rng(14)
    dim = 384
    store = DatabaseMemoryStore(db, model="random-384")
    memory = Memory(store, WordEmbedder(dim))
    for size in SIZES:
        user = f"user-{size}"
        for i in range(size):
            vector = rng.standard_normal(dim).astype(np.float32)
            vector /= np.linalg.norm(vector)
            store.add(
                "bench", user, Candidate("fact", f"fact:thing_{i}", f"I own thing number {i}", str(i)), vector
            )
        store.add(
            "bench", "neighbour", Candidate("fact", f"fact:x{size}", "noise", "x"), vector
        )  # another owner
        timings: list[float] = []
        for _ in range(QUERIES):
            query = rng.standard_normal(dim).astype(np.float32)
            query /= np.linalg.norm(query)
            t0 = time.perf_counter()
            memory.recall("bench", user, "which thing does the user own", k=5, vector=query)
            timings.append((time.perf_counter() - t0) * 1000)
        print(f"  {name:10s} {size:5d} memories: {_ms(timings)}  (mean {statistics.fmean(timings):.3f} ms)")
    store.close()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=60)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stanchion-bench-memory-") as name:
        folder = Path(name)
        print(f"write path, {args.conversations} sessions (rule extractor, MiniLM, SQLite):")
        asyncio.run(write_path(folder, args.conversations))
        print("recall given the question's vector (k=5):")
        recall_path("sqlite", SQLiteDatabase(folder / "recall.db"))
        if not args.no_postgres:
            from stanchion.testing.services import postgres_server

            with postgres_server(folder / "pg") as dsn:
                recall_path("postgres", PostgresDatabase(dsn))


if __name__ == "__main__":
    main()
