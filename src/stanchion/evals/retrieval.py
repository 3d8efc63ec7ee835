"""``stanchion eval retrieval``: nDCG@10, Recall@100, MRR@10 and latency on a BEIR-layout folder."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stanchion.app import App, build
from stanchion.core.embed import warm_for_serving
from stanchion.core.filters import SearchFilter
from stanchion.errors import IngestError, SpecError
from stanchion.evals.metrics import Qrels, evaluate
from stanchion.ingest.pipeline import IngestSummary, Progress
from stanchion.spec import CleaningSpec, IndexSpec, RetrievalSpec, SourceSpec, Spec

# Chunks fetched per query: documents split into several chunks must still fill 100 documents.
CHUNK_DEPTH = 300
DOC_DEPTH = 100


@dataclass(frozen=True, slots=True)
class BeirDataset:
    corpus: Path
    queries: dict[str, str]
    qrels: Qrels

    @classmethod
    def load(cls, folder: Path, split: str = "test") -> BeirDataset:
        corpus, queries_file, qrels_file = (
            folder / "corpus.jsonl",
            folder / "queries.jsonl",
            folder / "qrels" / f"{split}.tsv",
        )
        for required in (corpus, queries_file, qrels_file):
            if not required.is_file():
                raise SpecError(
                    f"{required} not found: a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/{split}.tsv"
                )
        qrels: dict[str, dict[str, int]] = {}
        with qrels_file.open(encoding="utf-8") as handle:
            for row in csv.reader(handle, delimiter="\t"):
                if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                    continue  # header or blank line
                qrels.setdefault(row[0].strip(), {})[row[1].strip()] = int(row[2])
        queries: dict[str, str] = {}
        with queries_file.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    item = json.loads(line)
                    if str(item["_id"]) in qrels:
                        queries[str(item["_id"])] = item["text"]
        return cls(corpus, queries, {q: j for q, j in qrels.items() if q in queries})


@dataclass(frozen=True, slots=True)
class RetrievalReport:
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    queries: int
    build_seconds: float
    latency_p50_ms: float
    latency_p95_ms: float
    reused_index: bool

    def as_json(self) -> dict[str, object]:
        return {
            "ndcg@10": round(self.ndcg_at_10, 4),
            "recall@100": round(self.recall_at_100, 4),
            "mrr@10": round(self.mrr_at_10, 4),
            "queries": self.queries,
            "build_seconds": round(self.build_seconds, 2),
            "latency_ms": {"p50": round(self.latency_p50_ms, 2), "p95": round(self.latency_p95_ms, 2)},
        }


def eval_cache_dir() -> Path:
    return Path(os.environ.get("STANCHION_CACHE_DIR", Path.home() / ".cache" / "stanchion")) / "eval"


def eval_spec(dataset: BeirDataset, base: Spec, cache_dir: Path | None = None) -> Spec:
    """An index spec for the corpus, keyed by corpus content and indexing settings (reusable)."""
    source = SourceSpec(
        name="corpus",
        type="beir",
        path=str(dataset.corpus.resolve()),
        # Never merge near-duplicates here: judgments name exact document ids.
        cleaning=CleaningSpec(dedupe=False),
        chunking=base.sources[0].chunking if base.sources else SourceSpec(name="x", path=".").chunking,
    )
    digest = hashlib.sha256()
    with dataset.corpus.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    # Only what changes the index's content keys it, so unrelated spec fields never force a rebuild.
    e = base.embedding
    digest.update(
        json.dumps([source.chunking.model_dump(), e.provider, e.model, e.tokenizer, e.base_url]).encode()
    )
    folder = cache_dir or eval_cache_dir()
    return Spec(
        index=IndexSpec(path=str(folder / f"{dataset.corpus.parent.name}-{digest.hexdigest()[:16]}.db")),
        embedding=base.embedding,
        retrieval=RetrievalSpec(
            **{**base.retrieval.model_dump(), "candidates": max(base.retrieval.candidates, 100)}
        ),
        sources=[source],
        base_dir=dataset.corpus.parent,
    )


def run_retrieval_eval(
    dataset: BeirDataset,
    base: Spec,
    *,
    mode: str,
    progress: Progress | None = None,
    on_query: Callable[[], None] | None = None,
    cache_dir: Path | None = None,
) -> RetrievalReport:
    app: App = build(eval_spec(dataset, base, cache_dir))
    try:
        started = time.perf_counter()
        summary: IngestSummary = app.pipeline.run(progress=progress)
        build_seconds = time.perf_counter() - started
        if summary.failed:
            failure = summary.failed[0]
            raise IngestError(failure.path, f"cannot index the eval corpus: {failure.reason}")
        reused = summary.documents == 0 and summary.failed == []
        if mode in ("dense", "hybrid"):
            warm_for_serving(app.embedder)  # model load is not query latency
        run: dict[str, list[str]] = {}
        latencies: list[float] = []
        for qid, text in dataset.queries.items():
            started = time.perf_counter()
            result = app.retriever.search(text, k=CHUNK_DEPTH, mode=mode, where=SearchFilter())
            latencies.append((time.perf_counter() - started) * 1000)
            ranked: list[str] = []
            for hit in result.hits:
                doc = str(hit.chunk.metadata.get("beir_id") or hit.chunk.document_id.split(":", 1)[-1])
                if doc not in ranked:
                    ranked.append(doc)
            run[qid] = ranked[:DOC_DEPTH]
            if on_query is not None:
                on_query()
    finally:
        app.close()
    scores = evaluate(run, dataset.qrels)
    return RetrievalReport(
        ndcg_at_10=scores["ndcg@10"],
        recall_at_100=scores["recall@100"],
        mrr_at_10=scores["mrr@10"],
        queries=len(run),
        build_seconds=build_seconds,
        latency_p50_ms=float(np.percentile(latencies, 50)) if latencies else 0.0,
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies else 0.0,
        reused_index=reused,
    )
