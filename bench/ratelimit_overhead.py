"""Per-call latency of RateLimiter.admit, Redis and SQLite, with one and with several workers.

Each worker is a process doing sequential admits over 100 API keys (limits high enough that all
pass, so every call writes). With several workers they run at once against one store, as uvicorn
workers would. Also reported: the round trip of ``asyncio.to_thread`` on a no-op, the least that
offloading the SQLite transaction to a thread would add to each call.

    python bench/ratelimit_overhead.py [--calls 20000] [--workers 1 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stanchion.server.ratelimit import Limits, RateLimiter, RedisRateLimiter, SQLiteRateLimiter
from stanchion.testing.services import redis_server

LIMITS = Limits(requests_per_minute=10**9, tokens_per_minute=10**12)
KEYS = [f"key-{i}" for i in range(100)]
WARMUP = 200


def make(spec: str) -> RateLimiter:
    kind, where = spec.split(" ", 1)
    if kind == "redis":
        return RedisRateLimiter(where, key_prefix="bench:")
    return SQLiteRateLimiter(Path(where))


async def admit_latencies(spec: str, calls: int) -> list[float]:
    limiter = make(spec)
    for i in range(WARMUP):
        await limiter.admit(KEYS[i % len(KEYS)], LIMITS)
    latencies = []
    for i in range(calls):
        started = time.perf_counter()
        await limiter.admit(KEYS[i % len(KEYS)], LIMITS, estimated_tokens=500)
        latencies.append(time.perf_counter() - started)
    await limiter.close()
    return latencies


async def to_thread_latencies(calls: int) -> list[float]:
    latencies = []
    for _ in range(WARMUP + calls):
        started = time.perf_counter()
        await asyncio.to_thread(lambda: None)
        latencies.append(time.perf_counter() - started)
    return latencies[WARMUP:]


def child(spec: str, calls: int, start_at: float) -> None:
    """One worker: wait for the common start, measure, print the latencies as JSON."""
    time.sleep(max(0.0, start_at - time.time()))
    print(json.dumps(asyncio.run(admit_latencies(spec, calls))))


def run_workers(spec: str, calls: int, workers: int) -> list[float]:
    start_at = time.time() + 2.0  # after every interpreter has started
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", spec, "--calls", str(calls), "--start-at", str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    latencies: list[float] = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"worker failed for {spec}")
        latencies.extend(json.loads(out))
    return latencies


def report(label: str, latencies: list[float]) -> None:
    # p99.9 and max matter too: a call that runs on the event loop stalls every other request.
    cuts = statistics.quantiles(latencies, n=1000)
    print(
        f"{label:<36} p50 {cuts[499] * 1e6:6.0f} µs  p99 {cuts[989] * 1e6:6.0f} µs  "
        f"p99.9 {cuts[998] * 1e6:6.0f} µs  max {max(latencies) * 1e6:6.0f} µs  ({len(latencies)} calls)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20000, help="admits per worker")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls, args.start_at)
        return
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp) / "redis") as url:
        for workers in args.workers:
            report(f"redis   admit, {workers} worker(s)", run_workers(f"redis {url}", args.calls, workers))
            sqlite = f"sqlite {Path(tmp) / f'rl-{workers}.sqlite'}"
            report(f"sqlite  admit, {workers} worker(s)", run_workers(sqlite, args.calls, workers))
    report("asyncio.to_thread(no-op) round trip", asyncio.run(to_thread_latencies(args.calls)))


if __name__ == "__main__":
    main()
