"""Hybrid query latency at 5k and 100k chunks, beside Haystack 2.31's in-memory hybrid pipeline.

Latency is per query, end to end through ``Retriever.search`` (query embedding with MiniLM, BM25
in FTS5, exact vector search, z-score fusion, chunk fetch). The 100k index is grown synthetically
from the SciFact chunks: each copy rotates the sentences of its text (so BM25 statistics change)
and perturbs its vector (noise, renormalised). Haystack gets the same 5k chunks with the same
vectors and the same query model (RRF join, its default hybrid recipe), so the ratio compares
query pipelines only.

    python bench/query_latency.py [--sizes 5000 100000] [--queries 300] [--no-haystack]

Needs the SciFact eval index (built by `stanchion eval retrieval --dataset ../shared/data/beir-scifact`,
or by this script on first use).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from stanchion.app import build
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.core.filters import SearchFilter
from stanchion.core.text import index_text
from stanchion.evals.retrieval import BeirDataset, eval_spec
from stanchion.index.sqlite import SQLiteStore
from stanchion.index.store import DocumentWrite
from stanchion.retrieve.search import Retriever
from stanchion.spec import Spec
from stanchion.types import Chunk, Document

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared/data/beir-scifact"


def base_chunks(embedder: SentenceTransformerEmbedder) -> tuple[list[Chunk], np.ndarray, list[str]]:
    data = BeirDataset.load(SCIFACT, "test")
    app = build(eval_spec(data, Spec()), embedder=embedder)
    app.pipeline.run()
    db = sqlite3.connect(app.store.path)
    rows = db.execute(
        "SELECT c.id, c.document_id, c.text, c.position, c.metadata, e.vector FROM chunks c"
        " JOIN embeddings e ON e.hash = c.hash AND e.model = c.model ORDER BY c.rowid"
    ).fetchall()
    app.close()
    import json

    chunks = [Chunk(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]
    vectors = np.stack([np.frombuffer(r[5], dtype=np.float32) for r in rows])
    return chunks, vectors, list(data.queries.values())


def synthetic(chunks: list[Chunk], vectors: np.ndarray, size: int) -> Iterator[list[DocumentWrite]]:
    """Batches of 2000 one-chunk documents: copies rotate sentences and perturb vectors (seeded)."""
    rng = np.random.default_rng(0)
    batch: list[DocumentWrite] = []
    for i in range(size):
        base, copy = i % len(chunks), i // len(chunks)
        chunk = chunks[base]
        text = chunk.text
        if copy:
            sentences = text.split(". ")
            shift = copy % max(1, len(sentences))
            text = ". ".join(sentences[shift:] + sentences[:shift])
        vector = vectors[base].copy()
        if copy:
            vector += rng.normal(0.0, 0.05, size=(vectors.shape[1],)).astype(np.float32)
        vector = (vector / np.linalg.norm(vector)).astype(np.float32)
        doc_id = f"{chunk.document_id}~{copy}"
        c = Chunk(f"{doc_id}#{chunk.position}", doc_id, text, chunk.position, dict(chunk.metadata))
        batch.append(
            DocumentWrite(
                Document(id=f"{doc_id}#{chunk.position}", text=text, source="bench"), [c], vector[None, :]
            )
        )
        if len(batch) == 2000:
            yield batch
            batch = []
    if batch:
        yield batch


def grow(chunks: list[Chunk], vectors: np.ndarray, size: int, path: Path, model: str) -> SQLiteStore:
    store = SQLiteStore(path)
    for batch in synthetic(chunks, vectors, size):
        store.write(batch, model=model)
    return store


def percentiles(samples: list[float]) -> str:
    return f"p50 {np.percentile(samples, 50):7.2f} ms   p95 {np.percentile(samples, 95):7.2f} ms"


def time_ours(retriever: Retriever, queries: list[str]) -> list[float]:
    retriever.search(queries[0], k=10)  # load the vector matrix once, outside the timings
    out = []
    for q in queries:
        started = time.perf_counter()
        retriever.search(q, k=10, mode="hybrid", where=SearchFilter())
        out.append((time.perf_counter() - started) * 1000)
    return out


def time_haystack(chunks: list[Chunk], vectors: np.ndarray, queries: list[str]) -> list[float]:
    from haystack import Document as HDocument
    from haystack import Pipeline
    from haystack.components.embedders import SentenceTransformersTextEmbedder
    from haystack.components.joiners import DocumentJoiner
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever, InMemoryEmbeddingRetriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from stanchion.core.packaged import minilm_dir

    store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    store.write_documents(
        [
            HDocument(id=c.id, content=index_text(c), embedding=v.tolist())
            for c, v in zip(chunks, vectors, strict=True)
        ]
    )
    pipe = Pipeline()
    pipe.add_component(
        "embedder", SentenceTransformersTextEmbedder(model=str(minilm_dir()), progress_bar=False)
    )
    pipe.add_component("dense", InMemoryEmbeddingRetriever(store, top_k=10))
    pipe.add_component("bm25", InMemoryBM25Retriever(store, top_k=10))
    pipe.add_component("join", DocumentJoiner(join_mode="reciprocal_rank_fusion"))
    pipe.connect("embedder.embedding", "dense.query_embedding")
    pipe.connect("dense", "join")
    pipe.connect("bm25", "join")
    pipe.warm_up()
    out = []
    for q in queries:
        started = time.perf_counter()
        pipe.run({"embedder": {"text": q}, "bm25": {"query": q}})
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--no-haystack", action="store_true")
    args = parser.parse_args()

    embedder = SentenceTransformerEmbedder()
    embedder.warm_up()
    chunks, vectors, queries = base_chunks(embedder)
    queries = queries[: args.queries]
    print(f"{len(queries)} SciFact queries; base index {len(chunks)} chunks")
    results: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            started = time.perf_counter()
            store = grow(chunks, vectors, size, Path(tmp) / f"{size}.db", embedder.name)
            built = time.perf_counter() - started
            results[size] = time_ours(Retriever(store, embedder), queries)
            print(
                f"stanchion hybrid @ {size:>7} chunks: {percentiles(results[size])}   (index built in {built:.0f} s)"
            )
            store.close()
    if not args.no_haystack:
        size = min(args.sizes)
        hay = time_haystack(chunks[:size], vectors[:size], queries)
        ours = results[size]
        print(f"haystack 2.31 in-memory hybrid @ {size:>7} chunks: {percentiles(hay)}")
        print(
            f"ratio haystack/stanchion p50 at {size}: {np.percentile(hay, 50) / np.percentile(ours, 50):.1f}x"
        )


if __name__ == "__main__":
    main()
