"""The ingestion pipeline end to end: incremental, idempotent, crash-safe, honest about bad files."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from stanchion.app import App, build
from stanchion.core.embed import ProgressCallback, SentenceTransformerEmbedder, Vectors
from stanchion.core.filters import build_filter
from stanchion.ingest import pipeline
from stanchion.spec import ChunkingSpec, IndexSpec, SourceSpec, Spec

WIKI = {
    "onboarding.md": "# Onboarding\n\n## Laptops\n\nNew engineers receive a laptop on day one from the IT desk.\n\n"
    "## Accounts\n\nRequest VPN access through the service portal; approval takes two days.\n",
    "oncall.md": "# On-call\n\nThe routing service pages the primary on-call first. After five minutes the "
    "secondary is paged, and after fifteen minutes the engineering manager.\n",
    "expenses.txt": "Expenses above five thousand dollars need approval from the chief financial officer.\n",
}


class CountingEmbedder:
    """Wraps the real model and counts what it was asked to embed; can fail after N calls."""

    def __init__(self, inner: SentenceTransformerEmbedder, fail_after_calls: int | None = None) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self.calls = 0
        self.fail_after_calls = fail_after_calls

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated kill during embedding")
        self.calls += 1
        self.texts.extend(texts)
        return self.inner.embed(texts, progress=progress)


def write_corpus(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def make_app(tmp_path: Path, corpus: Path, embedder: CountingEmbedder, **source: object) -> App:
    spec = Spec(
        index=IndexSpec(path=str(tmp_path / "index.db")),
        sources=[SourceSpec(name="wiki", path=str(corpus), **source)],  # type: ignore[arg-type]
        base_dir=tmp_path,
    )
    return build(spec, embedder=embedder)  # type: ignore[arg-type]


class TestIncremental:
    def test_rerun_does_no_embedding_work(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder
    ) -> None:
        """Re-ingesting unchanged sources reads nothing and embeds nothing."""
        corpus = write_corpus(tmp_path / "docs", WIKI)
        counting = CountingEmbedder(embedder)
        app = make_app(tmp_path, corpus, counting)
        first = app.pipeline.run()
        assert first.documents == 3 and first.failed == [] and first.embedded == first.chunks > 0
        embedded_before = len(counting.texts)
        second = app.pipeline.run()
        assert (second.documents, second.chunks, second.embedded, second.skipped) == (0, 0, 0, 3)
        assert len(counting.texts) == embedded_before

    def test_changed_file_reembeds_only_its_new_chunks(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder
    ) -> None:
        """Editing one section re-embeds that section's chunk only; other chunks come from the cache."""
        corpus = write_corpus(tmp_path / "docs", WIKI)
        counting = CountingEmbedder(embedder)
        app = make_app(tmp_path, corpus, counting)
        app.pipeline.run()
        counting.texts.clear()
        (corpus / "onboarding.md").write_text(
            WIKI["onboarding.md"].replace("two days", "three business days"), encoding="utf-8"
        )
        summary = app.pipeline.run()
        assert summary.documents == 1 and summary.skipped == 2
        assert summary.embedded == 1 and summary.cached >= 1
        assert len(counting.texts) == 1 and "three business days" in counting.texts[0]
        hits = app.retriever.search("VPN approval time", k=1, mode="bm25").hits
        assert "three business days" in hits[0].chunk.text

    def test_deleted_file_leaves_the_index(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder
    ) -> None:
        corpus = write_corpus(tmp_path / "docs", WIKI)
        app = make_app(tmp_path, corpus, CountingEmbedder(embedder))
        app.pipeline.run()
        (corpus / "expenses.txt").unlink()
        summary = app.pipeline.run()
        assert summary.deleted == 1
        assert [d.id for d in app.store.documents("wiki")] == ["wiki:onboarding.md", "wiki:oncall.md"]
        assert app.retriever.search("chief financial officer", k=5, mode="bm25").hits == []

    def test_spec_change_rechunks(self, tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
        """Changing the chunking in the spec re-processes the source on the next run."""
        corpus = write_corpus(tmp_path / "docs", WIKI)
        make_app(tmp_path, corpus, CountingEmbedder(embedder)).pipeline.run()
        app = make_app(
            tmp_path, corpus, CountingEmbedder(embedder), chunking=ChunkingSpec(size=24, overlap=4)
        )
        summary = app.pipeline.run()
        assert summary.documents == 3 and summary.skipped == 0
        (doc,) = app.store.documents("wiki", unit="oncall.md")
        chunks = app.store.chunks([f"{doc.id}#{i}" for i in range(doc.chunk_count)])
        assert len(chunks) == doc.chunk_count > 1
        assert all(app.tokenizer.count(c.text) <= 24 for c in chunks)

    def test_new_ingest_code_reprocesses_from_the_embedding_cache(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After an upgrade that changes what files turn into, unchanged files are processed again,
        and chunks whose text did not change are not embedded again."""
        corpus = write_corpus(tmp_path / "docs", WIKI)
        make_app(tmp_path, corpus, CountingEmbedder(embedder)).pipeline.run()
        monkeypatch.setattr(pipeline, "INGEST_VERSION", pipeline.INGEST_VERSION + 1)
        counting = CountingEmbedder(embedder)
        summary = make_app(tmp_path, corpus, counting).pipeline.run()
        assert summary.documents == 3 and summary.skipped == 0
        assert summary.embedded == 0 and summary.cached == summary.chunks > 0 and counting.texts == []

    def test_missing_source_root_keeps_index(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder
    ) -> None:
        """A source folder that vanished (unmounted disk) is reported, and nothing is deleted."""
        corpus = write_corpus(tmp_path / "docs", WIKI)
        app = make_app(tmp_path, corpus, CountingEmbedder(embedder))
        app.pipeline.run()
        shutil.rmtree(corpus)
        summary = app.pipeline.run()
        assert summary.failed and "does not exist" in summary.failed[0].reason
        assert len(app.store.documents("wiki")) == 3


class TestCrashSafety:
    def test_kill_mid_ingest_then_resume(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A run killed between batches leaves whole documents only, and the next run completes the job."""
        monkeypatch.setattr("stanchion.ingest.pipeline.FLUSH_CHUNKS", 1)
        files = {
            f"page{i:02d}.txt": f"Page {i} describes warehouse {i} in Columbus, dock number {i * 7}."
            for i in range(8)
        }
        corpus = write_corpus(tmp_path / "docs", files)
        dying = CountingEmbedder(embedder, fail_after_calls=3)
        app = make_app(tmp_path, corpus, dying)
        with pytest.raises(KeyboardInterrupt):
            app.pipeline.run()
        written = app.store.documents("wiki")
        assert 0 < len(written) < 8
        for doc in written:  # every visible document is complete
            assert len(app.store.chunks([f"{doc.id}#{i}" for i in range(doc.chunk_count)])) == doc.chunk_count
        app.close()
        resumed = make_app(tmp_path, corpus, CountingEmbedder(embedder))
        summary = resumed.pipeline.run()
        # Finished files are skipped (or recognised by hash); only the rest is embedded.
        assert summary.failed == [] and summary.skipped + summary.unchanged == len(written)
        assert summary.embedded == 8 - len(written)
        assert len(resumed.store.documents("wiki")) == 8
        assert resumed.store.stats().chunks == 8


class TestBadInput:
    def test_bad_files_are_reported_and_the_rest_ingested(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder
    ) -> None:
        corpus = write_corpus(tmp_path / "docs", {"good.txt": "The dock opens at six in the morning."})
        (corpus / "empty.txt").write_bytes(b"")
        (corpus / "junk.txt").write_bytes(bytes(range(256)) * 40)
        (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ntruncated")
        (corpus / "latin1.txt").write_bytes("Caf\xe9 opening hours: nine to five.".encode("latin-1"))
        summary = make_app(tmp_path, corpus, CountingEmbedder(embedder)).pipeline.run()
        failed = {Path(f.path).name: f.reason for f in summary.failed}
        assert set(failed) == {"empty.txt", "junk.txt", "broken.pdf"}
        assert "empty" in failed["empty.txt"] and "binary" in failed["junk.txt"]
        assert summary.documents == 2

    def test_oversized_file(self, tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
        corpus = write_corpus(tmp_path / "docs", {"big.txt": "word " * 50_000, "ok.txt": "small file"})
        summary = make_app(tmp_path, corpus, CountingEmbedder(embedder), max_file_mb=0.1).pipeline.run()
        assert [Path(f.path).name for f in summary.failed] == ["big.txt"]
        assert "too large" in summary.failed[0].reason


class TestMetadataAndAccess:
    def test_source_metadata_and_groups_reach_chunks(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder
    ) -> None:
        corpus = write_corpus(tmp_path / "docs", WIKI)
        app = make_app(
            tmp_path, corpus, CountingEmbedder(embedder), metadata={"team": "platform"}, access_groups=["eng"]
        )
        app.pipeline.run()
        hit = app.retriever.search("laptop day one", k=1).hits[0]
        assert hit.chunk.metadata["team"] == "platform" and hit.chunk.access_groups == ("eng",)
        assert hit.chunk.metadata["heading_path"] == ["Onboarding", "Laptops"]
        assert app.retriever.search("laptop", k=5, where=build_filter([], groups=["hr"])).hits == []
        assert app.retriever.search("laptop", k=5, where=build_filter(["team=platform"], groups=["eng"])).hits

    def test_duplicates_are_merged_and_reported(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder
    ) -> None:
        text = "Quarterly freight volumes rose in the Midwest while the coastal hubs stayed flat. " * 5
        corpus = write_corpus(tmp_path / "docs", {"report.txt": text, "report-copy.txt": text})
        summary = make_app(tmp_path, corpus, CountingEmbedder(embedder)).pipeline.run()
        assert summary.exact_duplicates == 1 and summary.documents == 1


def test_vectors_are_normalised(embedder: SentenceTransformerEmbedder) -> None:
    vectors = embedder.embed(["short", "a somewhat longer sentence about trucks", "x" * 3000])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
