"""Ingestion throughput: the whole pipeline against bare ``SentenceTransformer.encode``.

Both embed exactly the same chunk texts with the same model in the same process; the pipeline also
loads, cleans, chunks, hashes, and writes SQLite + FTS5 + vectors. Target: overhead <= 20%.

    python bench/ingest_throughput.py [--docs 1000] [--corpus ../shared/data/beir-scifact/corpus.jsonl]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from stanchion.app import build
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.core.text import index_text
from stanchion.ingest.chunk import ChunkingOptions, chunk_document
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.beir import load_beir
from stanchion.spec import CleaningSpec, IndexSpec, SourceSpec, Spec

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared/data/beir-scifact/corpus.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "corpus.jsonl"
        with args.corpus.open(encoding="utf-8") as src, subset.open("w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i >= args.docs:
                    break
                dst.write(line)

        embedder = SentenceTransformerEmbedder()
        model = embedder.warm_up()
        spec = Spec(
            index=IndexSpec(path=str(Path(tmp) / "index.db")),
            sources=[
                SourceSpec(name="corpus", type="beir", path=str(subset), cleaning=CleaningSpec(dedupe=False))
            ],
        )
        app = build(spec, embedder=embedder)

        # The exact texts the pipeline will embed, prepared outside the timed baseline.
        docs = list(load_beir(subset, LoadContext(source="corpus", relpath="corpus.jsonl")))
        options = ChunkingOptions(size=256, overlap=32)
        texts = [index_text(c) for d in docs for c in chunk_document(d, options, app.tokenizer)]
        model.encode(texts[:64], batch_size=32)  # warm both paths identically

        started = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True)
        baseline = time.perf_counter() - started

        started = time.perf_counter()
        summary = app.pipeline.run()
        ours = time.perf_counter() - started
        app.close()

    assert summary.embedded == len(texts), (summary.embedded, len(texts))
    print(f"documents {len(docs)}, chunks {len(texts)}")
    print(f"baseline  SentenceTransformer.encode   {baseline:8.2f} s  {len(texts) / baseline:7.1f} chunks/s")
    print(f"stanchion pipeline (load..write)     {ours:8.2f} s  {len(texts) / ours:7.1f} chunks/s")
    print(f"overhead  {100 * (ours / baseline - 1):+.1f}%  (target <= +20%)")


if __name__ == "__main__":
    main()
