"""Streaming ingestion: bounded batches, commits while reading, interruption and resumption.

The embedder here is a fast stand-in (a vector from the text's hash): these tests are about what
the pipeline holds, writes and when, not about embedding quality. Orders are checked through a
store and a loader that record events in one log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stanchion.app import App, build
from stanchion.core.embed import ProgressCallback, Vectors
from stanchion.index.store import DocumentWrite
from stanchion.ingest import pipeline
from stanchion.ingest.chunk import chunk_document
from stanchion.ingest.loaders import load_unit
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.pipeline import IngestSummary, Pipeline
from stanchion.ingest.read_ahead import ReadAhead
from stanchion.spec import ChunkingSpec, IndexSpec, SourceSpec, Spec
from stanchion.types import Document


class HashEmbedder:
    """Deterministic unit vectors from each text's hash; counts the texts it embeds."""

    name = "hash-embedder"
    dim = 8

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        self.texts.extend(texts)
        rows = [
            np.frombuffer(hashlib.sha256(t.encode()).digest()[: 4 * self.dim], dtype=np.uint32).astype(
                np.float32
            )
            for t in texts
        ]
        out = np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        if progress is not None:
            progress(len(texts))
        return out


class Recorder:
    """Wraps the app's store: logs every write, deletion and unit mark, in order."""

    def __init__(self, inner: Any, log: list[tuple[str, Any]]) -> None:
        self.inner = inner
        self.log = log
        self.writes: list[list[DocumentWrite]] = []

    def write(self, batch: Sequence[DocumentWrite], *, model: str) -> None:
        self.inner.write(batch, model=model)
        self.writes.append(list(batch))
        self.log.append(("write", [w.document.id for w in batch]))

    def delete_documents(self, ids: Sequence[str]) -> int:
        self.log.append(("delete", list(ids)))
        return int(self.inner.delete_documents(ids))

    def set_unit(self, source: str, unit: str, signature: str) -> None:
        self.inner.set_unit(source, unit, signature)
        self.log.append(("unit", unit))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Streamed:
    """A pipeline over ``corpus`` whose store and loader record into one event log."""

    def __init__(
        self,
        tmp_path: Path,
        corpus: Path,
        monkeypatch: pytest.MonkeyPatch,
        *,
        batch_chunks: int,
        read_ahead: int,
        fail_at: str | None = None,
        store: Any = None,
        **source: Any,
    ) -> None:
        spec = Spec(
            index=IndexSpec(path=str(tmp_path / "index.db")),
            sources=[SourceSpec(name="docs", path=str(corpus), **source)],
            base_dir=tmp_path,
        )
        self.embedder = HashEmbedder()
        self.app: App = build(spec, embedder=self.embedder)
        self.log: list[tuple[str, Any]] = []
        self.store = Recorder(self.app.store if store is None else store, self.log)
        self.fail_at = fail_at
        self.pipeline = Pipeline(
            spec,
            self.store,
            self.embedder,
            self.app.tokenizer,
            batch_chunks=batch_chunks,
            read_ahead=read_ahead,
        )
        monkeypatch.setattr(pipeline, "load_unit", self._load)

    def _load(self, kind: str, path: Path, ctx: LoadContext) -> Iterator[Document]:
        self.log.append(("read", ctx.relpath))
        if ctx.relpath == self.fail_at:
            raise KeyboardInterrupt(f"simulated kill while reading {ctx.relpath}")
        for doc in load_unit(kind, path, ctx):
            self.log.append(("yield", doc.id))
            yield doc

    def run(self, progress: pipeline.Progress | None = None) -> IngestSummary:
        return self.pipeline.run(progress=progress)

    def stored_ids(self) -> list[str]:
        return [d.id for d in self.store.inner.documents("docs")]


def notes(root: Path, count: int, words: int = 12) -> Path:
    """``count`` small text files, each a distinct note (one chunk each at the default size)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        body = " ".join(f"w{i}x{j}" for j in range(words))
        (root / f"note{i:03d}.txt").write_text(f"Note {i} about dock {i * 7}: {body}.", encoding="utf-8")
    return root


class TestBoundedMemory:
    @pytest.mark.parametrize("read_ahead", [0, 3])
    def test_first_batch_is_committed_before_the_last_file_is_read(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_ahead: int
    ) -> None:
        """Documents become searchable while later files are still unread."""
        run = Streamed(
            tmp_path, notes(tmp_path / "c", 40), monkeypatch, batch_chunks=4, read_ahead=read_ahead
        )
        summary = run.run()
        assert summary.documents == 40 and summary.failed == []
        kinds = [kind for kind, _ in run.log]
        last_read = max(i for i, kind in enumerate(kinds) if kind == "read")
        assert kinds.index("write") < last_read
        assert summary.batches == len(run.store.writes) >= 10

    @pytest.mark.parametrize("read_ahead", [0, 3])
    def test_documents_held_never_exceed_batch_and_read_ahead(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_ahead: int
    ) -> None:
        """Each commit holds at most ``batch_chunks`` chunks, and the reader is never more than
        ``read_ahead`` documents (+1 in hand) ahead of what is written: memory does not grow with
        the corpus."""
        run = Streamed(
            tmp_path, notes(tmp_path / "c", 40), monkeypatch, batch_chunks=5, read_ahead=read_ahead
        )
        run.run()
        assert all(sum(len(w.chunks) for w in batch) <= 5 for batch in run.store.writes)
        yielded = written = 0
        for kind, value in run.log:
            if kind == "yield":
                yielded += 1
            elif kind == "write":
                written += len(value)
                assert yielded - written <= read_ahead + 1, (yielded, written)

    def test_a_document_larger_than_the_batch_is_written_whole(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A document is never split across commits, whatever the batch size."""
        corpus = tmp_path / "c"
        corpus.mkdir()
        (corpus / "long.txt").write_text(" ".join(f"Sentence {i} about freight." for i in range(200)))
        notes(corpus, 3)
        run = Streamed(
            tmp_path,
            corpus,
            monkeypatch,
            batch_chunks=2,
            read_ahead=2,
            chunking=ChunkingSpec(size=32, overlap=0),
        )
        run.run()
        (doc,) = [d for d in run.app.store.documents("docs") if d.path == "long.txt"]
        (batch,) = [b for b in run.store.writes if any(w.document.id == doc.id for w in b)]
        assert [w.document.id for w in batch] == [doc.id]
        assert len(batch[0].chunks) == doc.chunk_count > 2


class TestInterruption:
    @pytest.mark.parametrize("read_ahead", [0, 3])
    def test_interrupted_run_keeps_earlier_batches_and_resumes(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_ahead: int
    ) -> None:
        """A kill while reading file 25 leaves the documents of earlier batches committed, whole and
        searchable, none of later files; the next run embeds only what is missing."""
        corpus = notes(tmp_path / "c", 40)
        run = Streamed(
            tmp_path, corpus, monkeypatch, batch_chunks=4, read_ahead=read_ahead, fail_at="note025.txt"
        )
        with pytest.raises(KeyboardInterrupt):
            run.run()
        stored = run.stored_ids()
        assert 0 < len(stored) <= 25
        assert stored == [f"docs:note{i:03d}.txt" for i in range(len(stored))]  # the first files, in order
        for doc in run.app.store.documents("docs"):
            chunks = run.app.store.chunks([f"{doc.id}#{i}" for i in range(doc.chunk_count)])
            assert len(chunks) == doc.chunk_count  # whole
        hits = run.app.retriever.search("dock 7", k=3, mode="bm25").hits
        assert hits and hits[0].chunk.document_id == "docs:note001.txt"

        resumed = Streamed(tmp_path, corpus, monkeypatch, batch_chunks=4, read_ahead=read_ahead)
        summary = resumed.run()
        assert summary.failed == [] and len(resumed.stored_ids()) == 40
        assert summary.skipped + summary.unchanged == len(stored)  # read again or not, never re-embedded
        assert len(resumed.embedder.texts) == 40 - len(stored)
        assert resumed.run().skipped == 40

    def test_interrupted_run_on_postgres(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_dsn: str
    ) -> None:
        """The same on PostgreSQL: committed batches stay whole and searchable, and a re-run resumes."""
        from stanchion.core.analyze import terms
        from stanchion.core.filters import SearchFilter
        from stanchion.index.postgres import PostgresStore

        corpus = notes(tmp_path / "c", 20)
        store = PostgresStore(pg_dsn, dim=HashEmbedder.dim, pool_size=2)
        try:
            run = Streamed(
                tmp_path,
                corpus,
                monkeypatch,
                batch_chunks=3,
                read_ahead=3,
                fail_at="note010.txt",
                store=store,
            )
            with pytest.raises(KeyboardInterrupt):
                run.run()
            stored = run.stored_ids()
            assert stored == [f"docs:note{i:03d}.txt" for i in range(9)]  # three batches of three
            assert [s.id for s in store.keyword_search(terms("w4x3"), 5, SearchFilter())] == [
                "docs:note004.txt#0"
            ]
            resumed = Streamed(tmp_path, corpus, monkeypatch, batch_chunks=3, read_ahead=3, store=store)
            summary = resumed.run()
            assert (
                summary.failed == [] and summary.skipped + summary.unchanged == 9 and summary.documents == 11
            )
            assert len(resumed.stored_ids()) == 20 and len(resumed.embedder.texts) == 11
        finally:
            store.close()

    def test_bug_in_the_reader_reaches_the_caller(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An exception raised in the reader thread (a chunker bug) stops the run with that error,
        after the batches before it were committed."""
        run = Streamed(tmp_path, notes(tmp_path / "c", 30), monkeypatch, batch_chunks=3, read_ahead=3)
        real = chunk_document

        def chunker(doc: Document, *args: Any) -> Any:
            if doc.id.endswith("note020.txt"):
                raise RuntimeError("chunker bug")
            return real(doc, *args)

        monkeypatch.setattr(pipeline, "chunk_document", chunker)
        with pytest.raises(RuntimeError, match="chunker bug"):
            run.run()
        assert 0 < len(run.stored_ids()) <= 20


def beir_lines(records: dict[str, str], bad: int = 0) -> str:
    lines = [json.dumps({"_id": k, "title": "", "text": v}) for k, v in records.items()]
    return "\n".join(lines + ["{not json"] * bad) + "\n"


class TestReplace:
    def test_changed_unit_replaces_documents_before_deleting_stale_ones(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A changed document is replaced in one write (never absent, never twice); a document the
        file no longer holds is deleted only after the file's new documents are committed."""
        corpus = tmp_path / "c"
        corpus.mkdir()
        records = {f"r{i}": f"Record {i} about pallets and dock {i}." for i in range(6)}
        (corpus / "corpus.jsonl").write_text(beir_lines(records))
        Streamed(tmp_path, corpus, monkeypatch, batch_chunks=2, read_ahead=2, type="beir").run()
        records["r1"] = "Record 1 now says the dock moved to Dayton."
        del records["r4"]
        (corpus / "corpus.jsonl").write_text(beir_lines(records))
        run = Streamed(tmp_path, corpus, monkeypatch, batch_chunks=2, read_ahead=2, type="beir")
        summary = run.run()
        assert (summary.documents, summary.unchanged, summary.deleted) == (1, 4, 1)
        order = [(kind, value) for kind, value in run.log if kind in ("write", "delete", "unit")]
        assert order == [
            ("write", ["docs:corpus.jsonl:r1"]),
            ("delete", ["docs:corpus.jsonl:r4"]),
            ("unit", "corpus.jsonl"),
        ]
        (hit,) = run.app.retriever.search("dock moved Dayton", k=1, mode="bm25").hits
        assert hit.chunk.document_id == "docs:corpus.jsonl:r1"
        assert len(run.stored_ids()) == 5

    def test_a_file_that_fits_in_a_batch_is_never_split_across_commits(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file whose documents fit in one batch is committed in one write, even when it comes
        after others that part-filled the batch."""
        corpus = tmp_path / "c"
        for name in ("a", "b", "c"):
            (corpus / name).mkdir(parents=True)
            records = {f"{name}{i}": f"Record {name}{i} about pallets." for i in range(3)}
            (corpus / name / "corpus.jsonl").write_text(beir_lines(records))
        run = Streamed(tmp_path, corpus, monkeypatch, batch_chunks=4, read_ahead=0, type="beir")
        assert run.run().documents == 9
        for batch in run.store.writes:
            units = {w.unit for w in batch}
            assert sum(len(w.chunks) for w in batch) <= 4
            assert all(sum(w.unit == u for w in batch) == 3 for u in units), [w.document.id for w in batch]

    def test_file_failing_within_one_batch_keeps_its_old_version(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A malformed new version of a file that fits in one batch writes nothing: the indexed
        version stays whole, and the file stays unmarked so the next run tries again."""
        corpus = tmp_path / "c"
        corpus.mkdir()
        records = {f"r{i}": f"Record {i} about pallets." for i in range(3)}
        (corpus / "corpus.jsonl").write_text(beir_lines(records))
        Streamed(tmp_path, corpus, monkeypatch, batch_chunks=64, read_ahead=2, type="beir").run()
        broken = {k: v.replace("pallets", "crates") for k, v in records.items()}
        (corpus / "corpus.jsonl").write_text(beir_lines(broken, bad=5))  # > 1% malformed: the loader fails
        run = Streamed(tmp_path, corpus, monkeypatch, batch_chunks=64, read_ahead=2, type="beir")
        summary = run.run()
        assert len(summary.failed) == 1 and "malformed" in summary.failed[0].reason
        assert not [e for e in run.log if e[0] in ("write", "delete", "unit")]
        assert run.app.retriever.search("crates", k=3, mode="bm25").hits == []
        assert len(run.app.retriever.search("pallets", k=5, mode="bm25").hits) == 3

    def test_file_failing_across_batches_keeps_what_it_committed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file larger than a batch that fails part way keeps the documents it committed (whole),
        deletes nothing, and is read again by the next run."""
        corpus = tmp_path / "c"
        corpus.mkdir()
        records = {f"r{i}": f"Record {i} about pallets and dock {i}." for i in range(9)}
        (corpus / "corpus.jsonl").write_text(beir_lines(records, bad=5))
        run = Streamed(tmp_path, corpus, monkeypatch, batch_chunks=2, read_ahead=0, type="beir")
        summary = run.run()
        assert len(summary.failed) == 1
        # Four full batches went in; the ninth record, still pending when the file failed, did not.
        assert run.stored_ids() == [f"docs:corpus.jsonl:r{i}" for i in range(8)]
        assert not [e for e in run.log if e[0] in ("delete", "unit")]
        (corpus / "corpus.jsonl").write_text(beir_lines(records))
        again = Streamed(tmp_path, corpus, monkeypatch, batch_chunks=2, read_ahead=0, type="beir").run()
        assert again.failed == [] and again.unchanged == summary.documents and again.documents == 1


class BatchProgress:
    def __init__(self) -> None:
        self.commits: list[tuple[int, int]] = []
        self.units_done = 0
        self.total_units = 0
        self.to_embed_total = 0
        self.embedded_total = 0

    def units(self, total: int) -> None:
        self.total_units = total

    def unit_done(self) -> None:
        self.units_done += 1

    def to_embed(self, count: int) -> None:
        self.to_embed_total += count

    def embedded(self, count: int) -> None:
        self.embedded_total += count

    def committed(self, documents: int, chunks: int) -> None:
        self.commits.append((documents, chunks))


class TestProgressAndDedupe:
    def test_progress_reports_every_batch(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """One ``committed`` event per batch, adding up to the summary; the embedding bar ends full."""
        run = Streamed(tmp_path, notes(tmp_path / "c", 12), monkeypatch, batch_chunks=3, read_ahead=2)
        progress = BatchProgress()
        summary = run.run(progress)
        assert len(progress.commits) == summary.batches >= 4
        assert sum(d for d, _ in progress.commits) == summary.documents == 12
        assert sum(c for _, c in progress.commits) == summary.chunks
        assert all(c <= 3 for _, c in progress.commits)
        assert progress.units_done == progress.total_units == 12
        assert progress.embedded_total == progress.to_embed_total == summary.chunks

    def test_streamed_dedupe_keeps_the_shortest_name(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Of two identical files the canonical name is kept, though "report-copy" sorts first."""
        corpus = tmp_path / "c"
        corpus.mkdir()
        text = "Quarterly freight volumes rose in the Midwest while the coastal hubs stayed flat. " * 5
        for name in ("report-copy.txt", "report.txt", "other.txt"):
            (corpus / name).write_text(text if name != "other.txt" else "Unrelated note on forklifts.")
        run = Streamed(tmp_path, corpus, monkeypatch, batch_chunks=1, read_ahead=2)
        summary = run.run()
        assert summary.exact_duplicates == 1
        assert run.stored_ids() == ["docs:other.txt", "docs:report.txt"]
        assert Streamed(tmp_path, corpus, monkeypatch, batch_chunks=1, read_ahead=2).run().skipped == 3


class TestReadAhead:
    def test_what_waits_is_bounded_by_weight(self) -> None:
        """The thread stops producing while the items ready weigh ``limit`` or more."""
        produced: list[int] = []

        def items() -> Iterator[int]:
            for i in range(50):
                produced.append(i)
                yield i

        ahead = ReadAhead(items(), 5, weight=lambda _: 2)
        taken = 0
        for _ in ahead:
            taken += 1
            # Ready: at most 3 items (weight 6 = limit - 1 + one item), plus one in the thread's hand.
            assert len(produced) - taken <= 4
        assert taken == 50

    def test_error_comes_after_the_items_before_it(self) -> None:
        def items() -> Iterator[int]:
            yield 1
            yield 2
            raise ValueError("bad file")

        ahead = ReadAhead(items(), 10)
        assert next(ahead) == 1 and next(ahead) == 2
        with pytest.raises(ValueError, match="bad file"):
            next(ahead)

    def test_close_stops_the_thread(self) -> None:
        """After close, the producer makes at most the item it had in hand."""
        produced: list[int] = []

        def items() -> Iterator[int]:
            for i in range(1000):
                produced.append(i)
                yield i

        ahead = ReadAhead(items(), 2)
        next(ahead)
        ahead.close()
        ahead._thread.join()
        assert len(produced) <= 5
