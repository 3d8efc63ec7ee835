"""Response-cache lookups at 100k entries in one tenant and partition, SQLite and Redis.

For each backend: fill one partition through ``put`` (the put rate), open a second worker and
time its first semantic lookup (it loads the partition into its in-process index), then time
exact lookups (``get_exact``) and semantic lookups (``nearest``, k=5) on that worker: queries are
perturbed copies of stored vectors at cosine 0.80-0.95 (the hits the cache serves), and each
lookup's top entry is checked against the true top-1 by brute force (recall). Also printed: the
worker's index memory, and its catch-up time after the first worker added 10k more entries.
The baseline, in the same process: an exact float32 product over all the vectors, top 5 by
argpartition (what a lookup without the binary-code index costs). With ``--pgvector``, the
alternative the issue names is measured too: the same vectors in PostgreSQL 16 + pgvector (the
``pgserver`` the tests use), an HNSW index (cosine, default m/ef_construction, ef_search 100) and
the same queries as one SQL statement each.

Vectors are random unit vectors (MiniLM's dimension, 384): lookup cost does not depend on what
the vectors mean, and random vectors are the hard case for nothing but recall, checked here.

    python bench/cache_lookup.py [--entries 100000] [--queries 500] [--backends sqlite redis] [--pgvector] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stanchion.cache.entry import CacheBackend, CacheEntry
from stanchion.cache.redis_backend import RedisCacheBackend
from stanchion.cache.sqlite_backend import SQLiteCacheBackend
from stanchion.testing.services import redis_server

DIM = 384
TENANT, PARTITION = "bench", "route:chat|model:m|temp:0"
K = 5


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def perturbed(rng: np.random.Generator, v: np.ndarray, cosine: float) -> np.ndarray:
    noise = rng.standard_normal(DIM).astype(np.float32)
    noise -= (noise @ v) * v
    noise /= np.linalg.norm(noise)
    out = cosine * v + np.sqrt(1 - cosine**2) * noise
    return (out / np.linalg.norm(out)).astype(np.float32)


def entry(i: int, vector: np.ndarray) -> CacheEntry:
    now = time.time()
    return CacheEntry(
        id=f"e{i}",
        tenant=TENANT,
        partition=PARTITION,
        exact_key=f"k{i}",
        question=f"question number {i}?",
        response={"text": f"answer {i} " * 20, "finish_reason": "stop", "usage": {"total_tokens": 180}},
        created=now,
        expires=now + 86400,
        vector=vector,
        tokens=180,
        cost_usd=0.0004,
    )


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return {"p50": round(statistics.median(ms), 3), "p95": round(pick(0.95), 3), "p99": round(pick(0.99), 3)}


async def fill(cache: CacheBackend, vectors: np.ndarray, start: int, max_entries: int) -> float:
    began = time.perf_counter()
    for i in range(len(vectors)):
        await cache.put(entry(start + i, vectors[i]), max_entries=max_entries)
    return len(vectors) / (time.perf_counter() - began)


async def measure(
    open_backend: Callable[[], Any], vectors: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    n = len(vectors)
    max_entries = n + args.catch_up
    writer, reader = open_backend(), open_backend()
    out: dict[str, Any] = {}
    try:
        out["put_per_s"] = round(await fill(writer, vectors, 0, max_entries))
        began = time.perf_counter()
        await reader.nearest(TENANT, PARTITION, vectors[0], K)
        out["first_lookup_load_s"] = round(time.perf_counter() - began, 2)
        out["index_mb"] = round(reader.indexes.nbytes / 2**20, 1)

        keys = rng.integers(0, n, size=args.queries)
        exact = []
        for i in keys:
            began = time.perf_counter()
            found = await reader.get_exact(TENANT, PARTITION, f"k{i}")
            exact.append(time.perf_counter() - began)
            assert found is not None and found.id == f"e{i}"
        out["exact_ms"] = percentiles(exact)

        queries = hit_queries(vectors, args.queries)
        semantic, tops = [], []
        for q in queries:
            began = time.perf_counter()
            found = await reader.nearest(TENANT, PARTITION, q, K)
            semantic.append(time.perf_counter() - began)
            tops.append(found[0].entry.id if found else "")
        out["semantic_ms"] = percentiles(semantic)
        # The true top-1 by brute force, after the timing (a 150 MB product between lookups would
        # push the index out of the CPU caches and slow the next lookup).
        truth = np.argmax(np.stack(queries) @ vectors.T, axis=1)
        out["recall_top1"] = round(
            float(np.mean([top == f"e{t}" for top, t in zip(tops, truth, strict=True)])), 4
        )

        misses = unit_rows(rng, args.queries)
        miss = []
        for q in misses:
            began = time.perf_counter()
            await reader.nearest(TENANT, PARTITION, q, K)
            miss.append(time.perf_counter() - began)
        out["semantic_miss_ms"] = percentiles(miss)

        more = unit_rows(rng, args.catch_up)
        await fill(writer, more, n, max_entries)
        began = time.perf_counter()
        await reader.nearest(TENANT, PARTITION, more[-1], K)
        out["catch_up_s"] = round(time.perf_counter() - began, 3)
        out["catch_up_entries"] = args.catch_up
        await writer.clear(TENANT)
    finally:
        writer.close()
        reader.close()
    return out


def hit_queries(vectors: np.ndarray, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    targets = rng.choice(len(vectors), size=count, replace=False)
    return [perturbed(rng, vectors[t], 0.80 + 0.15 * rng.random()) for t in targets]


def pgvector(vectors: np.ndarray, queries: list[np.ndarray], workdir: Path) -> dict[str, Any]:
    """The alternative: a lookup as one SQL statement over an HNSW index (see the docstring)."""
    import psycopg

    from stanchion.index.postgres import _register_vector
    from stanchion.testing.services import postgres_server

    out: dict[str, Any] = {}
    with postgres_server(workdir / "pg") as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS cache_bench")
        conn.execute(
            f"CREATE TABLE cache_bench (id text PRIMARY KEY, tenant text, partition text, embedding vector({DIM}))"
        )
        oid = conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0]  # type: ignore[index]
        _register_vector(conn, oid)
        began = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY cache_bench (id, tenant, partition, embedding) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["text", "text", "text", oid])
            for i, v in enumerate(vectors):
                copy.write_row((f"e{i}", TENANT, PARTITION, v))
        out["load_s"] = round(time.perf_counter() - began, 1)
        conn.execute(
            "SET maintenance_work_mem = '1GB'"
        )  # the default 64 MB: a 100k graph spills, builds 5x slower
        began = time.perf_counter()
        conn.execute("CREATE INDEX ON cache_bench USING hnsw (embedding vector_cosine_ops)")
        out["hnsw_build_s"] = round(time.perf_counter() - began, 1)
        conn.execute("ANALYZE cache_bench")  # without statistics the planner may scan every row instead
        conn.execute("SET hnsw.ef_search = 100")
        sql = (
            "SELECT id, 1 - (embedding <=> %s) FROM cache_bench WHERE tenant = %s AND partition = %s"
            " ORDER BY embedding <=> %s LIMIT %s"
        )
        plan = conn.execute("EXPLAIN " + sql, (queries[0], TENANT, PARTITION, queries[0], K)).fetchall()
        out["uses_hnsw"] = any("Index Scan" in row[0] for row in plan)
        times, tops = [], []
        for q in queries:
            began = time.perf_counter()
            rows = conn.execute(sql, (q, TENANT, PARTITION, q, K)).fetchall()
            times.append(time.perf_counter() - began)
            tops.append(rows[0][0] if rows else "")
        out["semantic_ms"] = percentiles(times)
        truth = np.argmax(np.stack(queries) @ vectors.T, axis=1)
        out["recall_top1"] = round(
            float(np.mean([t == f"e{i}" for t, i in zip(tops, truth, strict=True)])), 4
        )
    return out


def brute_force(vectors: np.ndarray, queries: int) -> dict[str, float]:
    rng = np.random.default_rng(12)
    times = []
    for q in unit_rows(rng, queries):
        began = time.perf_counter()
        scores = vectors @ q
        top = np.argpartition(-scores, K)[:K]
        top[np.argsort(-scores[top])]
        times.append(time.perf_counter() - began)
    return percentiles(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--catch-up", type=int, default=10_000)
    parser.add_argument("--backends", nargs="*", default=["sqlite", "redis"], choices=["sqlite", "redis"])
    parser.add_argument("--pgvector", action="store_true", help="also measure PostgreSQL + pgvector (HNSW)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    vectors = unit_rows(np.random.default_rng(10), args.entries)
    report: dict[str, Any] = {"entries": args.entries, "dim": DIM, "k": K}
    report["brute_force_ms"] = brute_force(vectors, args.queries)
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        for backend in args.backends:
            if backend == "sqlite":
                path = Path(tmp) / "cache.db"
                report["sqlite"] = asyncio.run(
                    measure(lambda path=path: SQLiteCacheBackend(path), vectors, args)
                )
            else:
                with redis_server(Path(tmp) / "redis") as url:
                    prefix = f"bench:{uuid.uuid4().hex[:6]}:"
                    report["redis"] = asyncio.run(
                        measure(
                            lambda url=url, prefix=prefix: RedisCacheBackend(url, prefix=prefix),
                            vectors,
                            args,
                        )
                    )
        if args.pgvector:
            report["pgvector"] = pgvector(vectors, hit_queries(vectors, args.queries), Path(tmp))
    for backend in args.backends:
        p50 = report[backend]["semantic_ms"]["p50"]
        report[backend]["brute_force_over_ours_p50"] = round(report["brute_force_ms"]["p50"] / p50, 1)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    base = report["brute_force_ms"]
    print(f"{args.entries:,} entries x {DIM} dims, one tenant and partition, k={K}")
    print(f"brute-force float32 (baseline): p50 {base['p50']} ms  p95 {base['p95']}  p99 {base['p99']}")
    for backend in args.backends:
        r = report[backend]
        s, m, e = r["semantic_ms"], r["semantic_miss_ms"], r["exact_ms"]
        print(f"\n[{backend}]  put {r['put_per_s']:,}/s   index {r['index_mb']} MB per worker")
        print(f"  exact lookup     p50 {e['p50']} ms  p95 {e['p95']}  p99 {e['p99']}")
        print(
            f"  semantic (hits)  p50 {s['p50']} ms  p95 {s['p95']}  p99 {s['p99']}   "
            f"{r['brute_force_over_ours_p50']}x faster than brute force at p50; "
            f"recall of true top-1 {r['recall_top1']}"
        )
        print(f"  semantic (miss)  p50 {m['p50']} ms  p95 {m['p95']}  p99 {m['p99']}")
        print(f"  a new worker's first lookup (loads the partition): {r['first_lookup_load_s']} s")
        print(f"  catch-up after another worker added {r['catch_up_entries']:,}: {r['catch_up_s']} s")
    if args.pgvector:
        r = report["pgvector"]
        s = r["semantic_ms"]
        print(
            f"\n[alternative: PostgreSQL + pgvector HNSW]  COPY {r['load_s']} s, HNSW build {r['hnsw_build_s']} s,"
            f" plan uses the index: {r['uses_hnsw']}"
        )
        print(
            f"  semantic (hits)  p50 {s['p50']} ms  p95 {s['p95']}  p99 {s['p99']}   recall of true top-1 {r['recall_top1']}"
        )


if __name__ == "__main__":
    main()
