"""Which fusion should ``hybrid`` use? Every method, on every collection given, same settings.

Each dataset is a BEIR folder (``--split`` picks its qrels) or a collection of real documents
(``bench/collections/*``: pages and sections judged). The default was chosen on SciFact *train*
and COVID-QA; SciFact *test* and the collections are the held-out checks (no per-data-set tuning).

    python bench/fusion_study.py ../shared/data/beir-scifact --split train
    python bench/squad_to_beir.py ../shared/data/covid-qa/covidQA_200423.squad.json /tmp/covidqa-beir
    python bench/fusion_study.py /tmp/covidqa-beir ../shared/data/beir-scifact:test \\
        bench/collections/debian-manuals

A folder may carry its own split as ``FOLDER:SPLIT``. Prints nDCG@10 / Recall@100 / MRR@10 on
documents, and hit@10 on passages (pages, sections) where the qrels name them. The first run
builds (and caches) each index; ``--lists FILE`` also keeps the retrieved lists, so trying another
fusion costs no search.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from stanchion.app import build
from stanchion.core.analyze import keyword_terms
from stanchion.core.filters import SearchFilter
from stanchion.evals.metrics import Qrels, evaluate
from stanchion.evals.retrieval import CHUNK_DEPTH, DOC_DEPTH, BeirDataset, eval_spec
from stanchion.retrieve.fusion import FUSIONS, fuse
from stanchion.spec import Spec
from stanchion.types import Chunk

Ranking = list[tuple[str, float]]


@dataclass
class Lists:
    """One dataset's keyword and vector rankings (chunk id, raw score) per query, and judgments."""

    name: str
    bm25: dict[str, Ranking]
    dense: dict[str, Ranking]
    document_of: dict[str, str]
    passage_of: dict[str, str]
    qrels: Qrels
    passage_qrels: Qrels


def collect(target: str, default_split: str) -> Lists:
    folder, _, split = target.partition(":")
    path = Path(folder)
    split = split or default_split
    passage_qrels: Qrels = {}
    if (path / "collection.yaml").is_file():
        from stanchion.evals.collection import Collection, chunk_document, chunk_passage
        from stanchion.evals.retrieval import collection_spec

        collection = Collection.load(path)
        spec, queries = collection_spec(collection, Spec()), collection.queries
        qrels, passage_qrels = collection.document_qrels(), collection.passage_qrels()
        paths = collection.source_paths()

        def names(chunk: Chunk) -> tuple[str, str]:
            document = chunk_document(chunk, paths)
            return document, chunk_passage(chunk, document)

        name = collection.name
    else:
        data = BeirDataset.load(path, split)
        spec, queries, qrels = eval_spec(data, Spec()), data.queries, data.qrels

        def names(chunk: Chunk) -> tuple[str, str]:
            document = str(chunk.metadata.get("beir_id") or chunk.document_id.split(":", 1)[-1])
            return document, document

        name = f"{path.name}/{split}"
    app = build(spec)
    started = time.perf_counter()
    app.pipeline.run()
    print(
        f"# {name}: index ready in {time.perf_counter() - started:.1f}s, {len(queries)} queries",
        file=sys.stderr,
    )
    lists = Lists(name, {}, {}, {}, {}, qrels, passage_qrels)
    # The store's own searches, as the retriever calls them; queries embedded in one batch.
    vectors = app.embedder.embed(list(queries.values()))
    everything = SearchFilter()
    for (qid, text), vector in zip(queries.items(), vectors, strict=True):
        lists.bm25[qid] = [
            (s.id, s.score) for s in app.store.keyword_search(keyword_terms(text), CHUNK_DEPTH, everything)
        ]
        lists.dense[qid] = [(s.id, s.score) for s in app.store.vector_search(vector, CHUNK_DEPTH, everything)]
    found = {c for ranking in (*lists.bm25.values(), *lists.dense.values()) for c, _ in ranking}
    for chunk in app.store.chunks(sorted(found)):
        lists.document_of[chunk.id], lists.passage_of[chunk.id] = names(chunk)
    app.close()
    return lists


def ranked_names(chunks: Sequence[str], name_of: Mapping[str, str]) -> list[str]:
    """Chunks as names (documents or passages), each at the rank of its best chunk."""
    return list(dict.fromkeys(name_of[c] for c in chunks))[:DOC_DEPTH]


def hit_at(run: Mapping[str, Sequence[str]], qrels: Qrels, k: int = 10) -> float:
    judged = [q for q, j in qrels.items() if any(g > 0 for g in j.values())]
    found = sum(any(qrels[q].get(p, 0) > 0 for p in run.get(q, [])[:k]) for q in judged)
    return found / len(judged) if judged else 0.0


Method = Callable[[Ranking, Ranking], Sequence[str]]


def methods(depth: int) -> dict[str, Method]:
    def single(which: str) -> Method:
        return lambda bm25, dense: [c for c, _ in (bm25 if which == "bm25" else dense)]

    def fused(method: str) -> Method:
        # Fuse the top ``depth`` of each list: the retriever fetches max(k, candidates) of each.
        def run(bm25: Ranking, dense: Ranking) -> list[str]:
            top = fuse(method, {"bm25": bm25[:depth], "dense": dense[:depth]})  # type: ignore[arg-type]
            return [c for c, _ in top]

        return run

    return {"bm25": single("bm25"), "dense": single("dense"), **{m: fused(m) for m in FUSIONS}}


def score(lists: Lists, method: Method) -> dict[str, float]:
    chunk_runs: dict[str, Sequence[str]] = {}
    took: list[float] = []
    for q in lists.bm25:
        started = time.perf_counter()
        chunk_runs[q] = method(lists.bm25[q], lists.dense[q])
        took.append((time.perf_counter() - started) * 1000)
    documents = {q: ranked_names(r, lists.document_of) for q, r in chunk_runs.items()}
    scores = evaluate(documents, lists.qrels)
    if lists.passage_qrels:
        passages = {q: ranked_names(r, lists.passage_of) for q, r in chunk_runs.items()}
        scores["passage_hit@10"] = hit_at(passages, lists.passage_qrels)
        scores["passage_mrr@10"] = evaluate(passages, lists.passage_qrels)["mrr@10"]
    scores["fuse_p50_ms"], scores["fuse_p95_ms"] = (float(p) for p in np.percentile(took, [50, 95]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("datasets", nargs="+", help="BEIR folders (FOLDER or FOLDER:SPLIT) or collections")
    parser.add_argument("--split", default="train", help="qrels split of a BEIR folder without one")
    parser.add_argument(
        "--depth", type=int, default=CHUNK_DEPTH, help="each list's depth before fusion (eval: 300)"
    )
    parser.add_argument(
        "--lists", type=Path, help="pickle of the retrieved lists: read if present, else written"
    )
    args = parser.parse_args()
    cached: dict[str, Lists] = {}
    if args.lists and args.lists.is_file():
        cached = {k: Lists(**v) for k, v in pickle.loads(args.lists.read_bytes()).items()}
    all_lists = []
    for target in args.datasets:
        if target not in cached:
            cached[target] = collect(target, args.split)
            if args.lists:
                args.lists.write_bytes(pickle.dumps({k: asdict(v) for k, v in cached.items()}))
        all_lists.append(cached[target])
    print(
        f"{'data set':<28}{'method':<10}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}"
        f"{'ms p50/p95':>12}{'passage hit@10':>16}{'MRR@10':>8}"
    )
    for lists in all_lists:
        for name, method in methods(args.depth).items():
            s = score(lists, method)
            passage = (
                f"{s['passage_hit@10']:>16.4f}{s['passage_mrr@10']:>8.4f}" if "passage_hit@10" in s else ""
            )
            print(
                f"{lists.name:<28}{name:<10}{s['ndcg@10']:>9.4f}{s['recall@100']:>8.4f}{s['mrr@10']:>8.4f}"
                f"{s['fuse_p50_ms']:>6.2f}/{s['fuse_p95_ms']:<5.2f}{passage}"
            )


if __name__ == "__main__":
    main()
