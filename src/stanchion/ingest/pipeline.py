"""The ingestion pipeline: units -> Documents -> Chunks -> vectors -> Store, streamed in batches.

Streaming, in bounded memory: a reader (a thread of its own, so files are parsed while the model
embeds) loads each unit lazily, dedupes, chunks, and hands over whole documents, at most
``READ_AHEAD`` chunks ahead; the writer gathers them into a batch of at most ``batch_chunks`` chunks
(or one document, if that alone is larger), embeds what the embedding cache lacks, and commits
the batch, searchable from then on. What is held is one batch, the read-ahead, and per document
a hash and a 1 KiB MinHash signature for deduplication: never the corpus.

Incremental and idempotent:
- a unit (file) whose content and spec settings are unchanged is not even read again;
- a changed unit re-chunks; chunks whose text is unchanged reuse their cached vectors, so only
  new text is embedded;
- documents that a unit no longer yields, and units gone from the source, are deleted.

Crash-safe: a document is written whole, in the same transaction that removes its old version,
so a reader sees the old one or the new one, never both nor part. A unit is marked done only after
its last document is committed and the documents it no longer yields are deleted, so a killed run
leaves every committed batch in place and the next run finishes the job (documents already
written are recognised by hash and skipped). A unit that fits in one batch is committed at once;
a larger one (a corpus file of thousands of records) spans batches, and if it fails part way the
documents it already committed stay, whole, and it stays unmarked, to be read again next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stanchion.core.embed import Embedder
from stanchion.core.text import index_text
from stanchion.errors import GuardError, IngestError
from stanchion.guards.ingest_pii import IngestPii
from stanchion.guards.injection import InjectionDetector
from stanchion.guards.pii import PiiDetector
from stanchion.guards.sources import mark_texts, source_detector
from stanchion.index.store import DocumentWrite, Store
from stanchion.ingest.chunk import ChunkingOptions, chunk_document
from stanchion.ingest.clean import Deduper, Duplicate
from stanchion.ingest.loaders import load_unit
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.read_ahead import ReadAhead
from stanchion.ingest.tokens import Tokenizer
from stanchion.ingest.units import DEFAULT_GLOBS, Unit, enumerate_units, signature
from stanchion.spec import PiiGuardSpec, SourceSpec, Spec
from stanchion.types import TENANT_KEY, Chunk, Document, InjectionMark, unstorable

log = logging.getLogger(__name__)

# Chunks embedded and committed together. Large enough to keep the model's batches full and
# sorted by length, small enough that the first documents are searchable within seconds to a
# minute, and that a crash loses little work.
FLUSH_CHUNKS = 256
# Chunks the reader thread may have ready ahead of the writer (0: no reader thread, files are
# read between batches). One batch: the next is ready when the model finishes this one.
READ_AHEAD = FLUSH_CHUNKS

# Bump when a loader, cleaner or chunker changes what an unchanged file turns into: every index
# then re-processes its sources on the next ingest, instead of keeping what the old code made.
# Unchanged chunks come back from the embedding cache, so a bump costs reading, not embedding.
# 2: CSV/TSV attachments as one "column: value" line per row; delimited rows split as sentences.
# 3: code blocks (HTML <pre>, fenced and indented Markdown) keep their indentation and spacing.
# 4: HTML and PDF tables as one self-contained "column: value" line per row.
INGEST_VERSION = 4

_NO_VECTORS = np.zeros((0, 0), np.float32)


class Progress(Protocol):
    """Callbacks for progress bars; every method may be a no-op."""

    def units(self, total: int) -> None: ...
    def unit_done(self) -> None: ...
    def to_embed(self, count: int) -> None: ...
    def embedded(self, count: int) -> None: ...
    def committed(self, documents: int, chunks: int) -> None:
        """A batch is written: its documents are searchable from now on."""


class NoProgress:
    def units(self, total: int) -> None: ...
    def unit_done(self) -> None: ...
    def to_embed(self, count: int) -> None: ...
    def embedded(self, count: int) -> None: ...
    def committed(self, documents: int, chunks: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    path: str
    reason: str


@dataclass(slots=True)
class IngestSummary:
    documents: int = 0  # documents written (new or changed) in this run
    chunks: int = 0  # chunks written in this run
    unchanged: int = 0  # documents found identical to what is indexed
    skipped: int = 0  # units not read at all: unchanged since the last run
    deleted: int = 0  # documents removed (file gone, or no longer in the file)
    embedded: int = 0  # chunks that needed the embedding model
    cached: int = 0  # chunks whose vectors came from the embedding cache
    exact_duplicates: int = 0
    near_duplicates: int = 0
    units: int = 0
    batches: int = 0  # commits of written documents
    failed: list[Failure] = field(default_factory=list)
    pii_masked: int = 0  # PII values masked (sources with ``pii: mask``, and titles/metadata of ``drop``)
    pii_dropped: int = 0  # chunks left out for holding PII (``pii: drop``)
    injection_flagged: int = 0  # chunks written that the prompt-injection check flagged
    # Sources that held nothing to ingest (an empty folder, a glob matching no file): not a failure,
    # but never silent either.
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "documents": self.documents,
            "chunks": self.chunks,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "deleted": self.deleted,
            "embedded": self.embedded,
            "cached": self.cached,
            "duplicates": {"exact": self.exact_duplicates, "near": self.near_duplicates},
            "pii": {"masked": self.pii_masked, "dropped_chunks": self.pii_dropped},
            "injection_flagged": self.injection_flagged,
            "units": self.units,
            "batches": self.batches,
            "failed": [{"path": f.path, "reason": f.reason} for f in self.failed],
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class _Plan:
    """One source's work in this run: the units to read, and what its index holds now."""

    source: SourceSpec
    fingerprint: str
    todo: list[tuple[Unit, str]]  # (unit, signature), shortest path first
    stored_hashes: dict[str, str]  # document id -> hash as stored
    indexed: dict[str, tuple[str, str]]  # stored hash -> (document id, unit), for cross-run duplicates


@dataclass(frozen=True, slots=True)
class _UnitEnd:
    """The reader is through with a unit: what it found, or why it failed."""

    source: str
    unit: str
    signature: str
    ids: frozenset[str]  # every document the unit yields now (duplicates left out)
    unchanged: int = 0
    exact: int = 0
    near: int = 0
    failure: Failure | None = None
    # Documents that failed alone (PII detection): the rest are written, the failed ones keep
    # their indexed version, and the unit is not marked done, so the next run reads it again.
    failed_documents: tuple[Failure, ...] = ()
    pii_masked: int = 0
    pii_dropped: int = 0


@dataclass(slots=True)
class _Batch:
    writes: list[DocumentWrite] = field(default_factory=list)
    chunks: int = 0
    ends: list[_UnitEnd] = field(default_factory=list)  # units complete once the writes are in


class Pipeline:
    def __init__(
        self,
        spec: Spec,
        store: Store,
        embedder: Embedder,
        tokenizer: Tokenizer,
        *,
        batch_chunks: int | None = None,
        read_ahead: int | None = None,
    ) -> None:
        """``batch_chunks``: chunks per commit (default ``FLUSH_CHUNKS``); ``read_ahead``: chunks the
        reader thread may have ready (default ``READ_AHEAD``; 0 reads in the calling thread)."""
        batch_chunks = FLUSH_CHUNKS if batch_chunks is None else batch_chunks
        read_ahead = READ_AHEAD if read_ahead is None else read_ahead
        if batch_chunks < 1 or read_ahead < 0:
            raise ValueError(
                f"batch_chunks must be >= 1 and read_ahead >= 0, got {batch_chunks}, {read_ahead}"
            )
        self.spec = spec
        self.store = store
        self.embedder = embedder
        self.tokenizer = tokenizer
        self.batch_chunks = batch_chunks
        self.read_ahead = read_ahead
        self._injection: InjectionDetector | None = None
        self._pii: PiiDetector | None = None

    @property
    def injection(self) -> InjectionDetector:
        """The prompt-injection check every chunk gets before it is written (``guards.sources``:
        the rules flag; the classifier scores on the vector ingestion computes anyway)."""
        if self._injection is None:
            self._injection = source_detector(self.embedder)
        return self._injection

    def _source_pii(self, source: SourceSpec) -> IngestPii | None:
        """What masks or drops PII in ``source`` (``pii: mask | drop``); None for ``keep``."""
        if source.pii == "keep":
            return None
        if self._pii is None:
            guard = self.spec.guards.pii
            self._pii = (
                PiiDetector(
                    entities=guard.entities, thresholds={str(k): v for k, v in guard.thresholds.items()}
                )
                if guard is not None
                else PiiDetector()
            )
        return IngestPii(source.pii, self._pii, keep_metadata=source.metadata)

    def run(
        self,
        sources: Sequence[SourceSpec] | None = None,
        *,
        progress: Progress | None = None,
        prune_missing: bool = True,
    ) -> IngestSummary:
        """Ingest ``sources`` (default: the spec's). ``prune_missing=False`` adds files to a source
        without deleting its units that are absent from this run (API uploads, one file at a time)."""
        started = time.perf_counter()
        progress = progress or NoProgress()
        summary = IngestSummary()
        found = [(s, self._units(s, summary)) for s in (self.spec.sources if sources is None else sources)]
        progress.units(sum(len(units) for _, units in found))
        plans = [
            plan
            for source, units in found
            if (plan := self._plan(source, units, summary, progress, prune_missing)) is not None
        ]
        reader = self._read(plans)
        items: Iterator[DocumentWrite | _UnitEnd] = (
            ReadAhead(reader, self.read_ahead, _weight) if self.read_ahead else reader
        )
        batch = _Batch()  # documents of units read to the end: committed together
        unit = _Batch()  # documents of the unit being read: held back until it ends
        try:
            for item in items:
                if isinstance(item, _UnitEnd):
                    self._unit_end(item, batch, unit, summary, progress)
                    # Commit a full batch; a part-full one too while the reader has nothing ready
                    # (a long file parsing): the model would idle, and the batch can be searchable.
                    if batch.chunks >= self.batch_chunks or (
                        isinstance(items, ReadAhead) and not items.ready() and batch.chunks >= _MIN_EARLY
                    ):
                        self._flush(batch, summary, progress)
                    continue
                size = len(item.chunks)
                if batch.chunks + unit.chunks + size > self.batch_chunks:
                    if batch.writes:
                        self._flush(batch, summary, progress)
                    if unit.writes and unit.chunks + size > self.batch_chunks:
                        # A unit larger than a batch: its documents are committed as they come.
                        self._flush(unit, summary, progress)
                unit.writes.append(item)
                unit.chunks += size
                progress.to_embed(size)
            self._flush(batch, summary, progress)
        finally:
            if isinstance(items, ReadAhead):
                items.close()
        prune = getattr(self.store, "prune_embeddings", None)
        if callable(prune):
            prune()
        summary.seconds = time.perf_counter() - started
        log.info("ingest.done", extra={"summary": summary.as_json()})
        return summary

    def _units(self, source: SourceSpec, summary: IngestSummary) -> list[Unit]:
        root = self.spec.resolve(source.path)
        try:
            units = list(enumerate_units(root, source.type, source.glob, source.exclude))
        except IngestError as exc:
            summary.failed.append(Failure(exc.path, exc.reason))
            return []
        if not units:
            summary.warnings.append(_nothing_found(source, root))  # the CLI shows it; the log keeps it
            log.info("ingest.source_empty", extra={"source": source.name, "path": str(root)})
        return units

    def _plan(
        self,
        source: SourceSpec,
        units: list[Unit],
        summary: IngestSummary,
        progress: Progress,
        prune_missing: bool,
    ) -> _Plan | None:
        """Delete units gone from the source; sign the rest and keep those that changed."""
        root = self.spec.resolve(source.path)
        if not root.exists():
            return None  # reported by _units; never delete an index because a mount is missing
        fingerprint = _fingerprint(source, self.embedder.name, self.spec.guards.pii)
        stored = self.store.units(source.name)
        present = {u.relpath for u in units}
        for gone in sorted(set(stored) - present) if prune_missing else ():
            summary.deleted += self.store.delete_documents(
                [d.id for d in self.store.documents(source.name, unit=gone)]
            )
            self.store.delete_unit(source.name, gone)
        todo: list[tuple[Unit, str]] = []
        for unit in units:
            summary.units += 1
            sig = signature(unit.path, fingerprint)
            if stored.get(unit.relpath) == sig:
                summary.skipped += 1
                progress.unit_done()
            else:
                todo.append((unit, sig))
        if not todo:
            return None  # every unit unchanged: the common re-run reads nothing more
        # Shortest path first, so of two identical files the canonical name (not "...-copy") is kept.
        todo.sort(key=lambda t: (len(t[0].relpath), t[0].relpath))
        # One read of what is indexed, for duplicate checks and change detection alike.
        docs = self.store.documents(source.name)
        return _Plan(
            source,
            fingerprint,
            todo,
            {d.id: d.hash for d in docs},
            {d.hash: (d.id, d.unit) for d in docs},
        )

    def _read(self, plans: list[_Plan]) -> Iterator[DocumentWrite | _UnitEnd]:
        """Every changed unit, document by document: loaded, deduplicated, chunked (no store access:
        this runs in the reader thread)."""
        for plan in plans:
            source = plan.source
            deduper = Deduper(source.cleaning.near_duplicate_threshold) if source.cleaning.dedupe else None
            rereads = {unit.relpath for unit, _ in plan.todo}
            pii = self._source_pii(source)
            for unit, sig in plan.todo:
                kept: list[str] = []
                counts = {"unchanged": 0, "exact": 0, "near": 0, "masked": 0, "dropped": 0}
                failed: list[Failure] = []
                try:
                    for doc in self._load(source, unit):
                        chunks: list[Chunk] | None = None
                        masked = dropped = 0
                        if pii is not None:
                            try:
                                doc, masked = pii.document(doc)
                                chunks, dropped = pii.chunks(self._chunk(source, doc))
                            except GuardError as exc:
                                failed.append(Failure(str(unit.path), _pii_failed(doc.id, exc)))
                                kept.append(doc.id)  # its indexed version stays
                                continue
                            if not chunks:  # every chunk held PII: the document is not indexed
                                counts["dropped"] += dropped
                                continue
                        stamped = _stamped(
                            doc, plan.fingerprint
                        )  # the fingerprint re-indexes on spec changes
                        verdict = _duplicate(deduper, doc, stamped, plan, rereads)
                        if verdict is not None:
                            counts[verdict.kind] += 1
                            continue
                        kept.append(doc.id)
                        if plan.stored_hashes.get(doc.id) == stamped.hash:
                            counts["unchanged"] += 1
                            continue
                        counts["masked"] += masked
                        counts["dropped"] += dropped
                        chunks = self._chunk(source, doc) if chunks is None else chunks
                        yield DocumentWrite(stamped, chunks, _NO_VECTORS, unit.relpath)
                except IngestError as exc:
                    if deduper is not None:
                        deduper.forget(set(kept))  # never written: later copies must not be dropped for them
                    yield _UnitEnd(
                        source.name,
                        unit.relpath,
                        sig,
                        frozenset(),
                        failure=Failure(str(unit.path), exc.reason),
                    )
                    continue
                yield _UnitEnd(
                    source.name,
                    unit.relpath,
                    sig,
                    frozenset(kept),
                    unchanged=counts["unchanged"],
                    exact=counts["exact"],
                    near=counts["near"],
                    failed_documents=tuple(failed),
                    pii_masked=counts["masked"],
                    pii_dropped=counts["dropped"],
                )

    def _load(self, source: SourceSpec, unit: Unit) -> Iterator[Document]:
        """The unit's documents, one at a time, stamped with the source's settings."""
        ctx = LoadContext(
            source=source.name,
            relpath=unit.relpath,
            access_groups=tuple(source.access_groups),
            metadata=dict(source.metadata),
            max_file_bytes=int(source.max_file_mb * 1024 * 1024),
            strip_boilerplate=source.cleaning.strip_boilerplate,
        )
        size = unit.path.stat().st_size if unit.path.is_file() else 0
        if size > ctx.max_file_bytes:
            raise IngestError(
                unit.path, f"file too large ({size / 1e6:.1f} MB > max_file_mb {source.max_file_mb})"
            )
        if unit.path.is_file() and size == 0:
            raise IngestError(unit.path, "empty file")
        # A unit writes only ids under its own (``LoadContext.doc_id``): the store replaces a
        # document by id, so an id outside would overwrite another file's (another user's) document.
        own = ctx.doc_id()
        found = 0
        try:
            for d in load_unit(unit.type, unit.path, ctx):
                if not d.text.strip():
                    continue
                if d.id != own and not d.id.startswith(own + ":"):
                    raise IngestError(
                        unit.path, f"{unit.type} loader gave a document id outside its file: {d.id!r}"
                    )
                found += 1
                yield replace(
                    d,
                    source=source.name,
                    path=d.path or unit.relpath,
                    title=_storable(d.title),
                    # The tenant is stamped last: no file can claim another tenant.
                    metadata=_storable({**source.metadata, **d.metadata, TENANT_KEY: source.tenant}),
                    access_groups=tuple(dict.fromkeys((*source.access_groups, *d.access_groups))),
                )
        except IngestError:
            raise
        except Exception as exc:  # a loader bug on one odd file must not sink the whole run
            log.exception("ingest.loader_crashed", extra={"path": str(unit.path), "type": unit.type})
            raise IngestError(unit.path, f"{unit.type} loader failed: {type(exc).__name__}: {exc}") from exc
        if not found:
            raise IngestError(unit.path, "no text found in the file")

    def _chunk(self, source: SourceSpec, doc: Document) -> list[Chunk]:
        spec = source.chunking
        options = ChunkingOptions(
            strategy=spec.strategy,
            size=spec.size,
            overlap=spec.overlap,
            semantic_threshold=spec.semantic_threshold,
            min_size=spec.min_size,
        )
        embed: Callable[[Sequence[str]], np.ndarray] | None = (
            self.embedder.embed if spec.strategy == "semantic" else None
        )
        return chunk_document(doc, options, self.tokenizer, embed)

    def _unit_end(
        self, end: _UnitEnd, batch: _Batch, unit: _Batch, summary: IngestSummary, progress: Progress
    ) -> None:
        """A unit is read: its documents join the batch, or, if it failed, are dropped."""
        summary.unchanged += end.unchanged
        summary.exact_duplicates += end.exact
        summary.near_duplicates += end.near
        summary.pii_masked += end.pii_masked
        summary.pii_dropped += end.pii_dropped
        summary.failed.extend(end.failed_documents)
        progress.unit_done()
        if end.failure is None:
            batch.writes.extend(unit.writes)
            batch.chunks += unit.chunks
            batch.ends.append(end)
        else:
            # What the failed unit has not committed is dropped: a unit that fits in one batch is
            # written whole or not at all (a replaced document keeps its old version).
            summary.failed.append(end.failure)
            progress.to_embed(-unit.chunks)
        unit.writes.clear()
        unit.chunks = 0

    def _flush(self, batch: _Batch, summary: IngestSummary, progress: Progress) -> None:
        started = time.perf_counter()
        all_chunks = [c for w in batch.writes for c in w.chunks]
        embedded = 0
        if batch.writes:
            cached = self.store.cached_vectors(self.embedder.name, [c.hash for c in all_chunks])
            missing = list({c.hash: c for c in all_chunks if c.hash not in cached}.values())
            from_cache = sum(1 for c in all_chunks if c.hash in cached)
            summary.cached += from_cache
            # Cached chunks, and repeats within the batch (embedded once), need no model time.
            progress.embedded(len(all_chunks) - len(missing))
            if missing:
                vectors = self.embedder.embed([index_text(c) for c in missing], progress=progress.embedded)
                cached.update(zip((c.hash for c in missing), vectors, strict=True))
                summary.embedded += len(missing)
                embedded = len(missing)
            marks = self._marks(all_chunks, cached)
            summary.injection_flagged += sum(marks[c.hash].flagged for c in all_chunks)
            writes = [
                replace(
                    w,
                    chunks=[replace(c, injection=marks[c.hash]) for c in w.chunks],
                    vectors=np.stack([cached[c.hash] for c in w.chunks])
                    if w.chunks
                    else np.zeros((0, 1), np.float32),
                )
                for w in batch.writes
            ]
            self.store.write(writes, model=self.embedder.name)
            summary.documents += len(writes)
            summary.chunks += len(all_chunks)
            summary.batches += 1
        for end in batch.ends:
            stale = [d.id for d in self.store.documents(end.source, unit=end.unit) if d.id not in end.ids]
            summary.deleted += self.store.delete_documents(stale)
            if not end.failed_documents:
                self.store.set_unit(end.source, end.unit, end.signature)
        if batch.writes:
            progress.committed(len(batch.writes), len(all_chunks))
            log.info(
                "ingest.batch",
                extra={
                    "documents": len(batch.writes),
                    "chunks": len(all_chunks),
                    "embedded": embedded,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
        batch.writes.clear()
        batch.ends.clear()
        batch.chunks = 0

    def _marks(self, chunks: Sequence[Chunk], vectors: dict[str, np.ndarray]) -> dict[str, InjectionMark]:
        """The prompt-injection mark of each distinct chunk text, on the vectors just computed or
        taken from the cache."""
        unique = list({c.hash: c for c in chunks}.values())
        found = mark_texts(self.injection, [index_text(c) for c in unique], [vectors[c.hash] for c in unique])
        return {c.hash: mark for c, mark in zip(unique, found, strict=True)}


# A part-full batch is committed early, while the reader has nothing ready, once it holds this
# many chunks: one model batch, so early commits do not cost embedding speed.
_MIN_EARLY = 32


def _weight(item: DocumentWrite | _UnitEnd) -> int:
    """What an item costs the read-ahead: its chunks."""
    return len(item.chunks) if isinstance(item, DocumentWrite) else 1


def _duplicate(
    deduper: Deduper | None, doc: Document, stamped: Document, plan: _Plan, rereads: set[str]
) -> Duplicate | None:
    """Whether ``doc`` repeats one read earlier in this run, or one indexed from a unit not read again."""
    if deduper is None:
        return None
    verdict = deduper.check(doc)
    if verdict is not None:
        return verdict
    twin = plan.indexed.get(stamped.hash)
    if twin is not None and twin[0] != doc.id and twin[1] not in rereads:
        return Duplicate("exact", twin[0])
    return None


def _nothing_found(source: SourceSpec, root: Path) -> str:
    """Why a source gave no file, in words a user can act on."""
    glob = source.glob or DEFAULT_GLOBS.get(source.type, "**/*")
    if root.is_dir() and not any(root.iterdir()):
        return f"source {source.name!r}: the folder {root} is empty"
    excluded = f", exclude {source.exclude}" if source.exclude else ""
    return (
        f"source {source.name!r}: no file under {root} matches glob {glob!r}{excluded} "
        f"(type {source.type}); check the source's path, type and glob"
    )


def _fingerprint(source: SourceSpec, model: str, pii: PiiGuardSpec | None = None) -> str:
    """Everything that changes what a unit turns into; a change re-processes the unit."""
    settings = {
        "pipeline": INGEST_VERSION,
        "cleaning": source.cleaning.model_dump(),
        "chunking": source.chunking.model_dump(),
        "metadata": source.metadata,
        "access_groups": source.access_groups,
        "tenant": source.tenant,
        "type": source.type,
        "model": model,
    }
    if source.pii != "keep":  # absent for keep: indexes built before the option are not redone
        settings["pii"] = source.pii
        if pii is not None:
            settings["pii_detector"] = {"entities": pii.entities, "thresholds": pii.thresholds}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _pii_failed(document: str, exc: GuardError) -> str:
    return (
        f"document {document}: {exc}; nothing of it was written (its indexed version, if any, "
        "is kept) and the file is read again on the next run"
    )


def _storable(value: Any) -> Any:
    """``value`` with every string (dict keys too) as every store holds it (``types.unstorable``):
    NUL dropped, a lone surrogate as ``?``. A file's own words (front matter, a corpus record's
    metadata, mail headers) are not refused for it, as its text is not; PostgreSQL failed the
    whole write on a NUL that SQLite kept."""
    if isinstance(value, str):
        text = value.replace("\x00", "")
        return text.encode("utf-8", "replace").decode() if unstorable(text) else text
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, dict):
        return {_storable(str(k)): _storable(v) for k, v in value.items()}
    return value


def _stamped(doc: Document, fingerprint: str) -> Document:
    """The document as stored: its metadata records the spec settings it was built with."""
    return replace(doc, metadata={**doc.metadata, "_fingerprint": fingerprint})
