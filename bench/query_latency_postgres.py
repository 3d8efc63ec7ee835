"""Query latency of the PostgreSQL + pgvector store at 5k (and, with --large, 100k) chunks.

The same corpus as ``query_latency.py``: SciFact chunks, grown synthetically (each copy rotates the
sentences of its text and perturbs its vector). The server is a local pgserver (PostgreSQL 16,
pgvector 0.6, default settings) in a temporary directory, reached over its Unix socket. Reported
per query, end to end through ``Retriever.search`` (query embedding with MiniLM included):

- ``bm25`` / ``dense`` modes at k=10, and ``hybrid`` (each list 100 deep, z-score fusion);
- inside the hybrid runs, the store calls alone: ``keyword_search`` and ``vector_search`` at depth 100;
- hybrid again with the tenant condition the HTTP server adds to every search (admits every chunk).

The tables are VACUUM ANALYZEd after loading (the steady state autovacuum reaches).

    python bench/query_latency_postgres.py [--large] [--queries 300]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import psycopg

from query_latency import base_chunks, percentiles, synthetic
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.core.filters import Condition, SearchFilter, build_filter
from stanchion.index.postgres import PostgresStore, vector_sql
from stanchion.retrieve.search import Retriever
from stanchion.testing.services import fresh_database, postgres_server
from stanchion.types import DEFAULT_TENANT, TENANT_KEY

# What the HTTP server adds to every search (``server/context.py``); it admits every bench chunk.
TENANT = build_filter([], extra=[Condition(TENANT_KEY, "eq", DEFAULT_TENANT)])


STAGES = {"embed": "(query model)", "bm25": "(store, depth 100)", "dense": "(store, depth 100)", "fuse": ""}


def measure(
    retriever: Retriever, queries: list[str], mode: str, where: SearchFilter
) -> tuple[list[float], dict[str, list[float]]]:
    """End-to-end milliseconds per query, and the per-stage timings the retriever reports."""
    retriever.search(queries[0], k=10, mode=mode, where=where)  # warm the pool and the plan cache
    total: list[float] = []
    stages: dict[str, list[float]] = {}
    for q in queries:
        started = time.perf_counter()
        result = retriever.search(q, k=10, mode=mode, where=where)
        total.append((time.perf_counter() - started) * 1000)
        for stage, ms in result.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    return total, stages


def vector_plan(store: PostgresStore, vector: np.ndarray, where: SearchFilter) -> str:
    """Which plan the dense query gets: the HNSW index, or a scan."""
    sql, params = vector_sql(vector, 100, where, exact=False)
    with store._pool.connection() as conn:
        plan = [r[0] for r in conn.execute("EXPLAIN " + sql, params)]
    return "HNSW index scan" if any("chunks_embedding" in line for line in plan) else "; ".join(plan)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--large", action="store_true", help="also measure at 100k chunks")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    sizes = [5000, 100_000] if args.large else [5000]

    embedder = SentenceTransformerEmbedder()
    embedder.warm_up()
    chunks, vectors, queries = base_chunks(embedder)
    queries = queries[: args.queries]
    print(f"{len(queries)} SciFact queries; base index {len(chunks)} chunks")
    with tempfile.TemporaryDirectory() as tmp, postgres_server(Path(tmp) / "pg") as admin:
        for size in sizes:
            dsn = fresh_database(admin)
            store = PostgresStore(dsn, dim=vectors.shape[1])
            started = time.perf_counter()
            for batch in synthetic(chunks, vectors, size):
                store.write(batch, model=embedder.name)
            built = time.perf_counter() - started
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
            print(f"\n@ {size:>7} chunks (written in {built:.0f} s, {size / built:.0f} chunks/s)")
            print(f"  dense query plan: {vector_plan(store, vectors[0], SearchFilter())}")
            print(f"  dense query plan, tenant filter: {vector_plan(store, vectors[0], TENANT)}")
            retriever = Retriever(store, embedder)
            runs = [("bm25", SearchFilter()), ("dense", SearchFilter()), ("hybrid", SearchFilter())]
            for mode, where in [*runs, ("hybrid", TENANT)]:
                total, stages = measure(retriever, queries, mode, where)
                label = mode + (" + tenant filter" if where is TENANT else "")
                print(f"  {label:<22} end to end   {percentiles(total)}")
                if mode == "hybrid":
                    for stage, what in STAGES.items():
                        print(f"    {stage:<6} {what:<22} {percentiles(stages[stage])}")
            store.close()


if __name__ == "__main__":
    main()
