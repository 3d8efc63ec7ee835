"""What the response cache adds to a grounded route's miss: retrieval alone, and the cache's
lookup (exact and semantic tiers) then retrieval, alternating over 400 distinct questions on the
bundled sample corpus, in one process. The lookup embeds the question; retrieval then finds that
vector in ``App.query_embedder`` (``RecentQueries``) instead of embedding it again.

    python bench/cache_grounded_miss.py [WORKDIR]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from stanchion.app import App, build
from stanchion.cache.keys import grounded_request, route_config
from stanchion.cache.sqlite_backend import SQLiteCacheBackend
from stanchion.core.filters import caller_filter
from stanchion.pipeline import Call, RequestContext
from stanchion.pipeline.cache_stage import ResponseCache
from stanchion.spec import Spec

SAMPLE = Path(__file__).resolve().parents[1] / "src/stanchion/sample"
TOPICS = [
    "policy",
    "refund",
    "travel",
    "expense",
    "laptop",
    "security",
    "incident",
    "vacation",
    "scanner",
    "wiki",
]


def sample_app(root: Path) -> App:
    spec = Spec.model_validate(
        {
            "index": {"path": str(root / "index.db")},
            "sources": [{"name": "wiki", "path": str(SAMPLE / "wiki")}],
            "server": {"state_path": str(root / "state.db")},
            "routes": {"default": {"models": ["extractive"], "cache": {}}},
            "base_dir": root,
        }
    )
    app = build(spec)
    app.pipeline.run()
    return app


async def measure(app: App, root: Path) -> tuple[list[float], list[float]]:
    questions = [
        f"What does rule {i} say about {TOPICS[i % 10]} and {TOPICS[i * 7 % 10]} {i * 13}?"
        for i in range(400)
    ]
    cache = ResponseCache(
        SQLiteCacheBackend(root / "cache.db"), app.query_embedder, app.store.chunks, background=False
    )
    settings = app.spec.routes["default"].cache
    assert settings is not None
    config = route_config(app.spec, "default")
    context = RequestContext("default", "bench", None)
    where = caller_filter(context)
    alone: list[float] = []
    with_cache: list[float] = []
    for i, question in enumerate(questions):
        started = time.perf_counter()
        if i % 2 == 0:
            app.retriever.search(question, k=10, where=where)
            alone.append(time.perf_counter() - started)
            continue
        call = Call(context, "answer")
        call.cache = grounded_request(
            route="default", config=config, settings=settings, tenant="default", user="bench",
            question=question, history=[], params={}, where=where,
        )  # fmt: skip
        started = time.perf_counter()
        await cache.lookup(call)
        app.retriever.search(question, k=10, where=where)
        with_cache.append(time.perf_counter() - started)
        assert call.cache_result is not None and call.cache_result.status == "miss"
    return alone[20:], with_cache[20:]


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/stanchion-grounded-miss")
    root.mkdir(parents=True, exist_ok=True)
    app = sample_app(root)
    try:
        alone, with_cache = asyncio.run(measure(app, root))
    finally:
        app.close()
    a, w = statistics.median(alone) * 1000, statistics.median(with_cache) * 1000
    print(
        f"retrieval alone p50 {a:.2f} ms; cache lookup + retrieval p50 {w:.2f} ms; the cache adds {w - a:+.2f} ms"
    )


if __name__ == "__main__":
    main()
