"""Does reranking the hybrid top-30 help? nDCG@10 before and after, on a BEIR folder.

    STANCHION_CACHE_DIR=/tmp/stcache python bench/rerank_study.py ../shared/data/beir-scifact \
        [--split test] [--candidates 30] [--cross-encoder /path/to/local/cross-encoder]

Candidates are the top ``--candidates`` chunks of hybrid search from the cached eval index (the
one ``stanchion eval retrieval`` builds). Each reranker re-orders exactly those chunks; chunks
map to documents by their best chunk, as in the eval. The bi-encoder reranker always runs;
the cross-encoder only with a local model folder (Stanchion never downloads one); the LLM
reranker needs a chat model and is not measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from stanchion.app import build
from stanchion.core.filters import SearchFilter
from stanchion.evals.metrics import evaluate
from stanchion.evals.retrieval import BeirDataset, eval_spec
from stanchion.retrieve.rerank import BiEncoderReranker, CrossEncoderReranker, Reranker
from stanchion.spec import Spec
from stanchion.types import Hit


def doc_ranking(hits: list[Hit]) -> list[str]:
    ranked: list[str] = []
    for hit in hits:
        doc = str(hit.chunk.metadata.get("beir_id") or hit.chunk.document_id.split(":", 1)[-1])
        if doc not in ranked:
            ranked.append(doc)
    return ranked


async def study(folder: Path, split: str, candidates: int, cross_encoder: Path | None) -> None:
    data = BeirDataset.load(folder, split)
    app = build(eval_spec(data, Spec()))
    try:
        app.pipeline.run()
        rerankers: dict[str, Reranker] = {"bi-encoder": BiEncoderReranker(app.embedder)}
        if cross_encoder is not None:
            rerankers["cross-encoder"] = CrossEncoderReranker(cross_encoder)
        runs: dict[str, dict[str, list[str]]] = {"hybrid (no rerank)": {}, **{n: {} for n in rerankers}}
        seconds = dict.fromkeys(runs, 0.0)
        for qid, text in data.queries.items():
            started = time.perf_counter()
            hits = app.retriever.search(text, k=candidates, mode="hybrid", where=SearchFilter()).hits
            seconds["hybrid (no rerank)"] += time.perf_counter() - started
            runs["hybrid (no rerank)"][qid] = doc_ranking(hits)
            for name, reranker in rerankers.items():
                started = time.perf_counter()
                reranked = await reranker.rerank(text, hits, len(hits))
                seconds[name] += time.perf_counter() - started
                runs[name][qid] = doc_ranking(reranked)
    finally:
        app.close()
    print(f"# {folder.name} {split}: {len(data.queries)} queries, top-{candidates} hybrid candidates")
    print(f"{'ranking':<22} {'nDCG@10':>8} {'MRR@10':>8} {'ms/query':>9}")
    for name, run in runs.items():
        scores = evaluate(run, data.qrels)
        ms = seconds[name] / max(len(run), 1) * 1000
        print(f"{name:<22} {scores['ndcg@10']:8.4f} {scores['mrr@10']:8.4f} {ms:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--cross-encoder", type=Path, default=None, help="a local cross-encoder folder")
    args = parser.parse_args()
    started = time.perf_counter()
    asyncio.run(study(args.folder, args.split, args.candidates, args.cross_encoder))
    print(f"# {time.perf_counter() - started:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
