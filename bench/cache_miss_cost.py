"""Where a response-cache miss's time goes on a gateway route, SQLite and Redis, in one process.

The gateway benchmark (``stanchion bench gateway --cache exact|semantic``) gives what a miss adds
end to end; this splits it. A partition is filled with the questions of half the families of
``bench/data/cache_replay_questions.txt`` (question, paraphrase, near-miss: ~190 entries, their
MiniLM vectors), then each question and paraphrase of the other half, which no entry answers, is
looked up as a miss. Timed per miss, p50 / p95:

- ``lookup exact``: ``ResponseCache.lookup`` on a route with the exact tier only (one ``get_exact``);
- ``lookup semantic``: ``ResponseCache.lookup`` with both tiers, everything a semantic miss does
  before the upstream is asked: ``get_exact``, embedding the question, ``nearest`` (k=5), judging
  each candidate;
- its parts, each alone: ``embed`` (MiniLM, one question, in a worker thread as the stage does it),
  ``get_exact``, ``nearest``, ``judge`` (the near-miss matcher over the candidates);
- ``put``: storing the fresh answer with its vector, which the server does after the answer is
  sent (off the request's path, but on its worker's CPU).

    python bench/cache_miss_cost.py [--backends sqlite redis] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stanchion.app import build
from stanchion.bench.loadgen import Percentiles
from stanchion.cache.entry import CacheBackend, CacheEntry
from stanchion.cache.keys import gateway_request
from stanchion.cache.match import PairMatcher
from stanchion.core.embed import Embedder
from stanchion.pipeline.cache_stage import CANDIDATES, ResponseCache
from stanchion.pipeline.core import Call
from stanchion.request_context import RequestContext
from stanchion.spec import CacheSpec, parse_spec
from stanchion.types import Message

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_replay import load_families  # the question file's reader (bench/cache_replay.py)

TENANT = "missbench"
PARAMS: dict[str, Any] = {
    "temperature": None,
    "max_tokens": None,
    "stop": [],
    "tools": [],
    "tool_choice": None,
}


def _request(question: str, settings: CacheSpec) -> Any:
    return gateway_request(
        config="",
        route="support", settings=settings, tenant=TENANT, user="u",
        messages=[Message(role="user", content=question)], params=PARAMS,
    )  # fmt: skip


def _call(question: str, settings: CacheSpec) -> Call:
    call = Call(RequestContext(TENANT, "u"), "chat.completions", query=question)
    call.cache = _request(question, settings)
    return call


async def _timed(samples: list[float], work: Awaitable[Any]) -> Any:
    start = time.perf_counter()
    result = await work
    samples.append(time.perf_counter() - start)
    return result


@contextlib.contextmanager
def _backend(name: str, workdir: Path) -> Iterator[CacheBackend]:
    if name == "sqlite":
        from stanchion.cache.sqlite_backend import SQLiteCacheBackend

        sqlite = SQLiteCacheBackend(workdir / "cache.db")
        try:
            yield sqlite
        finally:
            sqlite.close()
        return
    from stanchion.cache.redis_backend import RedisCacheBackend
    from stanchion.testing.services import redis_server

    with redis_server(workdir / "redis") as url:
        redis = RedisCacheBackend(url)
        try:
            yield redis
        finally:
            redis.close()


async def measure(
    backend: CacheBackend, embedder: Embedder, stored: Sequence[str], asked: Sequence[str]
) -> dict[str, Any]:
    both, exact_only = CacheSpec(semantic=True), CacheSpec(semantic=False)
    cache = ResponseCache(backend, embedder, read_chunks=lambda ids: [], background=False)
    vectors = np.asarray(embedder.embed(list(stored)), dtype=np.float32)
    now = time.time()
    for question, vector in zip(stored, vectors, strict=True):
        request = _request(question, both)
        entry = CacheEntry(
            uuid.uuid4().hex, TENANT, request.partition, request.exact_key, question,
            {"text": "an answer"}, now, now + 3600, vector, tokens=100,
        )  # fmt: skip
        await backend.put(entry, max_entries=100_000)
    matcher = PairMatcher()
    times: dict[str, list[float]] = {
        k: [] for k in ("lookup exact", "lookup semantic", "embed", "get_exact", "nearest", "judge", "put")
    }
    statuses: list[str] = []
    hits: list[tuple[str, str]] = []  # (asked, the stored question that answered it)
    await cache.lookup(_call("warm-up question", both))
    for question in asked:
        call = _call(question, exact_only)
        await _timed(times["lookup exact"], cache.lookup(call))
        call = _call(question, both)
        await _timed(times["lookup semantic"], cache.lookup(call))
        statuses.append(call.cache_result.status if call.cache_result else "?")
        request = call.cache
        assert request is not None
        vector = await _timed(times["embed"], asyncio.to_thread(embedder.embed, [question]))
        vector = np.asarray(vector[0], dtype=np.float32)
        await _timed(times["get_exact"], backend.get_exact(TENANT, request.partition, request.exact_key))
        found = await _timed(times["nearest"], backend.nearest(TENANT, request.partition, vector, CANDIDATES))
        start = time.perf_counter()
        verdicts = [matcher.judge(question, c.entry.question, c.similarity) for c in found]
        times["judge"].append(time.perf_counter() - start)
        hits += [(question, c.entry.question) for c, v in zip(found, verdicts, strict=True) if v.hit][:1]
        entry = CacheEntry(
            uuid.uuid4().hex, "missbench-put", request.partition, request.exact_key, question,
            {"text": "an answer"}, now, now + 3600, vector, tokens=100,
        )  # fmt: skip
        await _timed(times["put"], backend.put(entry, max_entries=100_000))
    return {
        "stored": len(stored),
        "misses": len(asked),
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        "hits": [{"asked": a, "stored": b} for a, b in dict(hits).items()],
        "ms": {k: _ms(v) for k, v in times.items()},
    }


def _ms(seconds: Sequence[float]) -> dict[str, float]:
    p = Percentiles.of(seconds)
    return {"p50": round(p.p50, 3), "p95": round(p.p95, 3), "p99": round(p.p99, 3)}


def run(backends: Sequence[str], rounds: int) -> dict[str, Any]:
    families = load_families()
    half = len(families) // 2
    stored = [t for f in families[:half] for t in (f.question, f.paraphrase, f.near_miss) if t]
    # The model alone embeds (no memory of recent questions), so a round repeated is still a miss.
    asked = [t for f in families[half:] for t in (f.question, f.paraphrase) if t] * rounds
    with tempfile.TemporaryDirectory(prefix="stanchion-misscost-") as tmp:
        spec = parse_spec({"version": 1, "index": {"backend": "sqlite", "path": f"{tmp}/index.db"}})
        embedder = build(spec).embedder
        report: dict[str, Any] = {}
        for name in backends:
            with _backend(name, Path(tmp) / name) as backend:
                report[name] = asyncio.run(measure(backend, embedder, stored, asked))
    return report


def render(report: dict[str, Any]) -> None:
    steps = next(iter(report.values()))["ms"].keys()
    print(f"{'ms, p50 / p95':18}" + "".join(f"{name:>18}" for name in report))
    for step in steps:
        cells = [f"{r['ms'][step]['p50']:.2f} / {r['ms'][step]['p95']:.2f}" for r in report.values()]
        print(f"{step:18}" + "".join(f"{c:>18}" for c in cells))
    for name, r in report.items():
        print(f"{name}: {r['stored']} entries, {r['misses']} lookups: {r['statuses']}")
        for hit in r["hits"]:
            print(f"  a hit, not a miss: {hit['asked']!r} answered by {hit['stored']!r}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "redis"), default=["sqlite", "redis"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args.backends, args.rounds)
    if args.json:
        print(json.dumps(report))
    else:
        render(report)


if __name__ == "__main__":
    main()
