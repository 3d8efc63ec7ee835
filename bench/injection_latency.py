"""What the prompt-injection detector costs beyond the embedding, on prompts and on chunks.

Prompts: the held-out part of the shipped set. Chunks: 1,000-character windows of README.md
(prose, code and tables, as retrieved chunks are). For each, the p50/p95 of ``check`` given the
text's embedding (rules + classifier: what a pipeline pays when it shares retrieval's vector), of
the MiniLM embedding alone, and of securevector-guardian-model when installed, in one process.

    python bench/injection_latency.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stanchion.core.embed import SentenceTransformerEmbedder, warm_for_serving
from stanchion.evals.injection import securevector, shipped_dev_rows
from stanchion.guards.injection import InjectionDetector

ROOT = Path(__file__).resolve().parents[1]


def _percentiles(run: Callable[[int], object], n: int) -> str:
    times = []
    for i in range(n):
        start = time.perf_counter()
        run(i)
        times.append((time.perf_counter() - start) * 1000)
    cuts = statistics.quantiles(times, n=20)
    return f"p50 {statistics.median(times):7.3f} ms  p95 {cuts[18]:7.3f} ms"


def report(
    name: str, texts: Sequence[str], detector: InjectionDetector, embedder: SentenceTransformerEmbedder
) -> None:
    vectors = embedder.embed(texts)
    print(f"{name} ({len(texts)} texts)")
    print(
        f"  rules + classifier, vector given  {_percentiles(lambda i: detector.check(texts[i], vector=vectors[i]), len(texts))}"
    )
    print(
        f"  MiniLM embedding of one text      {_percentiles(lambda i: embedder.embed([texts[i]]), len(texts))}"
    )
    baseline = securevector()
    if baseline is not None:
        print(f"  securevector-guardian-model       {_percentiles(lambda i: baseline(texts[i]), len(texts))}")


def main() -> None:
    embedder = SentenceTransformerEmbedder()
    detector = InjectionDetector(embedder)
    warm_for_serving(embedder)  # torch loaded first, as in a server worker
    detector.check("warm up")
    readme = (ROOT / "README.md").read_text("utf-8")
    report("prompts", [r.text for r in shipped_dev_rows()], detector, embedder)
    report(
        "1,000-character chunks", [readme[i : i + 1000] for i in range(0, 100_000, 1000)], detector, embedder
    )


if __name__ == "__main__":
    main()
