"""Which fusion should ``hybrid`` use? Every method, on every BEIR folder given, same settings.

The default is chosen on the *train* split (test stays untouched for reporting), and must also
hold up on the other collections passed: no per-data-set tuning.

    python bench/fusion_study.py ../shared/data/beir-scifact [more BEIR folders...] [--split train]

Prints nDCG@10 / Recall@100 per method and data set. The first run builds (and caches) each index.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from stanchion.app import build
from stanchion.core.filters import SearchFilter
from stanchion.evals.metrics import evaluate
from stanchion.evals.retrieval import CHUNK_DEPTH, DOC_DEPTH, BeirDataset, eval_spec
from stanchion.retrieve.fusion import FUSIONS, fuse
from stanchion.spec import Spec


def doc_ranking(chunk_ranking: list[tuple[str, float]], doc_of: dict[str, str]) -> list[str]:
    ranked: list[str] = []
    for cid, _ in chunk_ranking:
        doc = doc_of[cid]
        if doc not in ranked:
            ranked.append(doc)
    return ranked[:DOC_DEPTH]


def study(folder: Path, split: str) -> dict[str, dict[str, float]]:
    data = BeirDataset.load(folder, split)
    app = build(eval_spec(data, Spec()))
    started = time.perf_counter()
    app.pipeline.run()
    print(
        f"# {folder.name}: index ready in {time.perf_counter() - started:.1f}s, {len(data.queries)} queries",
        file=sys.stderr,
    )
    runs: dict[str, dict[str, list[str]]] = {m: {} for m in ("bm25", "dense", *FUSIONS)}
    for qid, text in data.queries.items():
        result = app.retriever.search(text, k=CHUNK_DEPTH, mode="bm25", where=SearchFilter())
        bm25 = [(h.chunk.id, h.score) for h in result.hits]
        result_dense = app.retriever.search(text, k=CHUNK_DEPTH, mode="dense", where=SearchFilter())
        dense = [(h.chunk.id, h.score) for h in result_dense.hits]
        doc_of = {
            h.chunk.id: str(h.chunk.metadata.get("beir_id") or h.chunk.document_id)
            for h in [*result.hits, *result_dense.hits]
        }
        runs["bm25"][qid] = doc_ranking(bm25, doc_of)
        runs["dense"][qid] = doc_ranking(dense, doc_of)
        for method in FUSIONS:
            # Fuse the top-100 of each list, as the retriever does with candidates=100.
            runs[method][qid] = doc_ranking(fuse(method, {"bm25": bm25[:100], "dense": dense[:100]}), doc_of)
    app.close()
    return {method: evaluate(run, data.qrels) for method, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    print(f"{'data set':<22}{'method':<8}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}")
    for folder in args.folders:
        for method, scores in study(folder, args.split).items():
            print(
                f"{folder.name + '/' + args.split:<22}{method:<8}"
                f"{scores['ndcg@10']:>9.4f}{scores['recall@100']:>8.4f}{scores['mrr@10']:>8.4f}"
            )


if __name__ == "__main__":
    main()
