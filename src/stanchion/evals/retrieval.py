"""``stanchion eval retrieval``: nDCG@10, Recall@100, MRR@10 and latency on a BEIR-layout folder or
a collection of real documents (``evals/collection.py``), where it also scores pages and sections."""

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
from stanchion.core.embed import Embedder, warm_for_serving
from stanchion.core.filters import SearchFilter
from stanchion.errors import IngestError, SpecError
from stanchion.evals.collection import Collection, chunk_document, rank_passages
from stanchion.evals.metrics import Qrels, evaluate, evaluate_passages
from stanchion.ingest.pipeline import IngestSummary, Progress
from stanchion.spec import ChunkingSpec, CleaningSpec, IndexSpec, RetrievalSpec, SourceSpec, Spec
from stanchion.types import Chunk

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
    # Collections only: hit@k and MRR@10 over ranked pages/sections, overall and per query tag.
    passage: dict[str, float] | None = None
    passage_queries: int = 0
    passage_by_tag: dict[str, dict[str, float]] | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "ndcg@10": round(self.ndcg_at_10, 4),
            "recall@100": round(self.recall_at_100, 4),
            "mrr@10": round(self.mrr_at_10, 4),
            "queries": self.queries,
            "build_seconds": round(self.build_seconds, 2),
            "latency_ms": {"p50": round(self.latency_p50_ms, 2), "p95": round(self.latency_p95_ms, 2)},
        }
        if self.passage is not None:
            out["passage"] = {
                **{k: round(v, 4) for k, v in self.passage.items()},
                "queries": self.passage_queries,
            }
        if self.passage_by_tag:
            out["passage_by_tag"] = {
                tag: {k: round(v, 4) if k != "queries" else int(v) for k, v in scores.items()}
                for tag, scores in self.passage_by_tag.items()
            }
        return out


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


def collection_spec(collection: Collection, base: Spec, cache_dir: Path | None = None) -> Spec:
    """An index spec for a collection's sources, keyed by their files and indexing settings.

    A source without its own ``chunking`` takes the base spec's first source's, as a BEIR corpus does.
    """
    default_chunking = base.sources[0].chunking if base.sources else ChunkingSpec()
    sources = [
        s.model_copy(
            update={
                "path": str((collection.data_root / s.path).resolve()),
                **({} if "chunking" in s.model_fields_set else {"chunking": default_chunking}),
            }
        )
        for s in collection.sources
    ]
    digest = hashlib.sha256()
    root = collection.data_root.resolve()
    for source in sources:
        # Relative paths only, so the key survives moving the data root.
        digest.update(source.model_copy(update={"path": ""}).model_dump_json().encode())
        top = Path(source.path)
        for file in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if file.is_file():
                digest.update(file.relative_to(root).as_posix().encode())
                digest.update(hashlib.sha256(file.read_bytes()).digest())
    e = base.embedding
    digest.update(json.dumps([e.provider, e.model, e.tokenizer, e.base_url]).encode())
    folder = cache_dir or eval_cache_dir()
    return Spec(
        index=IndexSpec(path=str(folder / f"{collection.name}-{digest.hexdigest()[:16]}.db")),
        embedding=base.embedding,
        retrieval=RetrievalSpec(
            **{**base.retrieval.model_dump(), "candidates": max(base.retrieval.candidates, 100)}
        ),
        sources=sources,
        base_dir=collection.data_root,
    )


def ingest_code_digest() -> str:
    """A digest of the ingestion code (loaders, cleaning, chunking): a change re-reads every file."""
    import stanchion.ingest

    digest = hashlib.sha256()
    for file in sorted(Path(stanchion.ingest.__file__).parent.rglob("*.py")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _reread_if_code_changed(app: App, spec: Spec) -> None:
    """Forget the unit signatures of an index built by other ingestion code, so the next run reads
    every file again; unchanged documents are recognised by hash, unchanged chunks keep their vectors."""
    marker = Path(spec.resolve(spec.index.path)).with_suffix(".ingest-code")
    current = ingest_code_digest()
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == current:
        return
    for source in spec.sources:
        for unit in app.store.units(source.name):
            app.store.delete_unit(source.name, unit)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(current + "\n", encoding="utf-8")


def _beir_document(chunk: Chunk) -> str:
    return str(chunk.metadata.get("beir_id") or chunk.document_id.split(":", 1)[-1])


def run_retrieval_eval(
    dataset: BeirDataset | Collection,
    base: Spec,
    *,
    mode: str,
    progress: Progress | None = None,
    on_query: Callable[[], None] | None = None,
    cache_dir: Path | None = None,
    embedder: Embedder | None = None,
) -> RetrievalReport:
    """Index the dataset (or reuse its cached index), run every query, score documents and, for a
    collection, the pages and sections its qrels name. ``embedder`` shares an already loaded model."""
    if isinstance(dataset, Collection):
        spec = collection_spec(dataset, base, cache_dir)
        source_paths = dataset.source_paths()
        qrels: Qrels = dataset.document_qrels()
        passage_qrels: Qrels = dataset.passage_qrels()

        def document_of(chunk: Chunk) -> str:
            return chunk_document(chunk, source_paths)
    else:
        spec, qrels, passage_qrels = eval_spec(dataset, base, cache_dir), dataset.qrels, {}
        document_of = _beir_document
    app: App = build(spec, embedder=embedder)
    try:
        if isinstance(dataset, Collection):
            _reread_if_code_changed(app, spec)
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
        passage_run: dict[str, list[str]] = {}
        latencies: list[float] = []
        for qid, text in dataset.queries.items():
            started = time.perf_counter()
            result = app.retriever.search(text, k=CHUNK_DEPTH, mode=mode, where=SearchFilter())
            latencies.append((time.perf_counter() - started) * 1000)
            ranked: list[str] = []
            for hit in result.hits:
                doc = document_of(hit.chunk)
                # A query that is itself a document (ArguAna, Quora) finds itself first: left out,
                # as BEIR's evaluation does (ignore_identical_ids).
                if doc not in ranked and doc != qid:
                    ranked.append(doc)
            run[qid] = ranked[:DOC_DEPTH]
            if qid in passage_qrels:
                chunks = [h.chunk for h in result.hits]
                passage_run[qid] = rank_passages(chunks, source_paths)[:DOC_DEPTH]
            if on_query is not None:
                on_query()
    finally:
        app.close()
    scores = evaluate(run, qrels)
    passage = evaluate_passages(passage_run, passage_qrels) if passage_qrels else None
    by_tag: dict[str, dict[str, float]] = {}
    if isinstance(dataset, Collection) and passage_qrels:
        for tag in sorted({t for q in passage_qrels for t in dataset.tags.get(q, ())}):
            tagged = {q: j for q, j in passage_qrels.items() if tag in dataset.tags.get(q, ())}
            by_tag[tag] = {**evaluate_passages(passage_run, tagged), "queries": float(len(tagged))}
    return RetrievalReport(
        ndcg_at_10=scores["ndcg@10"],
        recall_at_100=scores["recall@100"],
        mrr_at_10=scores["mrr@10"],
        queries=len(run),
        build_seconds=build_seconds,
        latency_p50_ms=float(np.percentile(latencies, 50)) if latencies else 0.0,
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies else 0.0,
        reused_index=reused,
        passage=passage,
        passage_queries=len(passage_qrels),
        passage_by_tag=by_tag or None,
    )
