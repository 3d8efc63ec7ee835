"""What the guards add to ingestion: the prompt-injection check every chunk gets, and ``pii: mask``.

1. The sample corpus, ingested into fresh indexes in one process: a cold run (the model embeds
   every chunk) timing the injection check inside it; then, with the embeddings memoised so the
   model is out of the picture, ``pii: keep`` against ``pii: mask`` on every source.
2. Larger sets: every chunk of eval indexes already built (SciFact, COVID-QA and the Debian
   handbook under ``~/.cache/stanchion/eval``, opened read-only), marked in batches of 256 on their
   stored vectors, as ``Pipeline._marks`` does; beside it, the MiniLM embedding of one such batch,
   which ingestion pays for every new chunk anyway. Also counted: the chunks the rules flag, and
   those the classifier alone would (score >= its threshold), which is why it flags no source.

    python bench/ingest_guards.py [--index INDEX.db ...]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stanchion.app import build
from stanchion.core.embed import ProgressCallback, SentenceTransformerEmbedder, Vectors
from stanchion.core.text import index_text
from stanchion.guards.sources import mark_texts, source_detector
from stanchion.ingest.pipeline import Pipeline
from stanchion.spec import load_spec
from stanchion.types import Chunk

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "stanchion" / "sample" / "stanchion.yaml"
BATCH = 256


class Memo:
    """The real model, each distinct text embedded once (so repeated runs cost no model time)."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.known: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        missing = [t for t in dict.fromkeys(texts) if t not in self.known]
        if missing:
            self.known.update(zip(missing, self.inner.embed(missing), strict=True))
        if progress is not None:
            progress(len(texts))
        return np.stack([self.known[t] for t in texts]).astype(np.float32)


def ingest(embedder: Any, pii: str, timed: dict[str, float]) -> tuple[float, int, int]:
    """One ingest of the sample corpus into a fresh index: (seconds, chunks, flagged)."""
    spec = load_spec(SAMPLE)
    with tempfile.TemporaryDirectory() as tmp:
        sources = [s.model_copy(update={"pii": pii}) for s in spec.sources]
        spec = spec.model_copy(
            update={"sources": sources, "index": spec.index.model_copy(update={"path": f"{tmp}/index.db"})}
        )
        app = build(spec, embedder=embedder)
        marks = Pipeline._marks

        def timed_marks(self: Pipeline, chunks: Sequence[Chunk], vectors: dict[str, np.ndarray]) -> Any:
            started = time.perf_counter()
            try:
                return marks(self, chunks, vectors)
            finally:
                timed["check"] = timed.get("check", 0.0) + time.perf_counter() - started

        Pipeline._marks = timed_marks  # type: ignore[method-assign]
        try:
            summary = app.pipeline.run()
        finally:
            Pipeline._marks = marks  # type: ignore[method-assign]
            app.close()
    assert not summary.failed, summary.failed
    return summary.seconds, summary.chunks, summary.injection_flagged


def sample_corpus(model: SentenceTransformerEmbedder) -> None:
    memo = Memo(model)
    cold: dict[str, float] = {}
    seconds, chunks, flagged = ingest(memo, "keep", cold)
    print(f"sample corpus: {chunks} chunks, {flagged} flagged")
    print(
        f"  cold ingest (model embeds every chunk)   {seconds:7.2f} s, injection check {cold['check']:.3f} s "
        f"({100 * cold['check'] / seconds:.1f}%, {1000 * cold['check'] / chunks:.2f} ms a chunk)"
    )
    keep = [ingest(memo, "keep", {})[0] for _ in range(3)]
    mask = [ingest(memo, "mask", {})[0] for _ in range(3)]
    print(f"  warm ingest, pii: keep  (median of 3)   {np.median(keep):7.2f} s")
    print(
        f"  warm ingest, pii: mask  (median of 3)   {np.median(mask):7.2f} s "
        f"(+{np.median(mask) - np.median(keep):.2f} s, {1000 * (np.median(mask) - np.median(keep)) / chunks:.1f} ms a chunk)"
    )


def larger_set(model: SentenceTransformerEmbedder, index: Path) -> None:
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT c.id, c.document_id, c.text, c.position, c.metadata, e.vector FROM chunks c"
        " JOIN embeddings e ON e.model = c.model AND e.hash = c.hash ORDER BY c.rowid"
    ).fetchall()
    db.close()
    chunks = [Chunk(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]
    vectors = np.stack([np.frombuffer(r[5], dtype=np.float32) for r in rows])
    detector = source_detector(model)
    per_batch, flagged, classifier = [], 0, 0
    started = time.perf_counter()
    for start in range(0, len(chunks), BATCH):
        part = chunks[start : start + BATCH]
        t = time.perf_counter()
        marks = mark_texts(detector, [index_text(c) for c in part], list(vectors[start : start + BATCH]))
        per_batch.append((time.perf_counter() - t) / len(part))
        flagged += sum(m.flagged for m in marks)
        classifier += sum(m.score >= detector.threshold for m in marks)
    total = time.perf_counter() - started
    t = time.perf_counter()
    model.embed([index_text(c) for c in chunks[:BATCH]])
    embed_ms = 1000 * (time.perf_counter() - t) / BATCH
    check_ms = 1000 * total / len(chunks)
    print(
        f"{index.name}: {len(chunks)} chunks, {flagged} flagged by the rules; the classifier alone "
        f"would flag {classifier} ({100 * classifier / len(chunks):.0f}%)"
    )
    print(
        f"  injection check on stored vectors       {total:7.2f} s ({check_ms:.2f} ms a chunk, "
        f"batch p50 {1000 * float(np.median(per_batch)):.2f} ms a chunk)"
    )
    print(
        f"  MiniLM embedding, one batch of {BATCH}      {embed_ms:.1f} ms a chunk: the check adds "
        f"{100 * check_ms / embed_ms:.1f}% to a new chunk's cost"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache = Path.home() / ".cache/stanchion/eval"
    defaults = [
        next(iter(sorted(cache.glob(f"{name}-*.db"))), None)
        for name in ("beir-scifact", "covidqa-beir", "debian-handbook")
    ]
    parser.add_argument(
        "--index", type=Path, nargs="*", default=None, help="index files built by stanchion eval"
    )
    args = parser.parse_args()
    model = SentenceTransformerEmbedder()
    model.warm_up()
    sample_corpus(model)
    indexes = args.index if args.index is not None else [p for p in defaults if p is not None]
    if not indexes:
        print("no eval index found: run `stanchion eval retrieval` first, or pass --index")
    for index in indexes:
        larger_set(model, index)


if __name__ == "__main__":
    main()
