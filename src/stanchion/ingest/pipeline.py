"""The ingestion pipeline: units -> Documents -> Chunks -> vectors -> Store, incrementally.

Incremental and idempotent:
- a unit (file) whose content and spec settings are unchanged is not even read again;
- a changed unit re-chunks; chunks whose text is unchanged reuse their cached vectors, so only
  new text is embedded;
- documents that a unit no longer yields, and units gone from the source, are deleted.
Crash-safe: documents are written in atomic batches of whole documents, and a unit is marked done
only after all its documents are written, so a killed run leaves the index consistent and the
next run finishes the job (documents already written are recognised by hash and skipped).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stanchion.core.embed import Embedder
from stanchion.core.text import index_text
from stanchion.errors import IngestError
from stanchion.index.store import DocumentWrite, Store
from stanchion.ingest.chunk import ChunkingOptions, chunk_document
from stanchion.ingest.clean import dedupe_documents
from stanchion.ingest.loaders import load_unit
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.tokens import Tokenizer
from stanchion.ingest.units import DEFAULT_GLOBS, Unit, enumerate_units, signature
from stanchion.spec import SourceSpec, Spec
from stanchion.types import TENANT_KEY, Chunk, Document, unstorable

log = logging.getLogger(__name__)

# Chunks gathered before one embedding pass + one write transaction. Large enough to keep the
# model's batches full, small enough that a crash loses little work.
FLUSH_CHUNKS = 512

# Bump when a loader, cleaner or chunker changes what an unchanged file turns into: every index
# then re-processes its sources on the next ingest, instead of keeping what the old code made.
# Unchanged chunks come back from the embedding cache, so a bump costs reading, not embedding.
# 2: CSV/TSV attachments as one "column: value" line per row; delimited rows split as sentences.
# 3: code blocks (HTML <pre>, fenced and indented Markdown) keep their indentation and spacing.
INGEST_VERSION = 3


class Progress(Protocol):
    """Callbacks for progress bars; every method may be a no-op."""

    def units(self, total: int) -> None: ...
    def unit_done(self) -> None: ...
    def to_embed(self, count: int) -> None: ...
    def embedded(self, count: int) -> None: ...


class NoProgress:
    def units(self, total: int) -> None: ...
    def unit_done(self) -> None: ...
    def to_embed(self, count: int) -> None: ...
    def embedded(self, count: int) -> None: ...


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
    failed: list[Failure] = field(default_factory=list)
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
            "units": self.units,
            "failed": [{"path": f.path, "reason": f.reason} for f in self.failed],
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class _Pending:
    writes: list[DocumentWrite] = field(default_factory=list)
    chunks: int = 0
    # (source, unit, signature, ids of every document the unit yields now)
    units: list[tuple[str, str, str, set[str]]] = field(default_factory=list)


class Pipeline:
    def __init__(self, spec: Spec, store: Store, embedder: Embedder, tokenizer: Tokenizer) -> None:
        self.spec = spec
        self.store = store
        self.embedder = embedder
        self.tokenizer = tokenizer

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
        plan = [(s, self._units(s, summary)) for s in (self.spec.sources if sources is None else sources)]
        progress.units(sum(len(units) for _, units in plan))
        pending = _Pending()
        for source, units in plan:
            self._ingest_source(source, units, summary, pending, progress, prune_missing)
        self._flush(pending, summary, progress)
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

    def _ingest_source(
        self,
        source: SourceSpec,
        units: list[Unit],
        summary: IngestSummary,
        pending: _Pending,
        progress: Progress,
        prune_missing: bool = True,
    ) -> None:
        root = self.spec.resolve(source.path)
        if not root.exists():
            return  # reported by _units; never delete an index because a mount is missing
        fingerprint = _fingerprint(source, self.embedder.name)
        stored = self.store.units(source.name)
        present = {u.relpath for u in units}
        for gone in sorted(set(stored) - present) if prune_missing else ():
            summary.deleted += self.store.delete_documents(
                [d.id for d in self.store.documents(source.name, unit=gone)]
            )
            self.store.delete_unit(source.name, gone)
        loaded: list[tuple[Unit, str, list[Document]]] = []
        for unit in units:
            summary.units += 1
            sig = signature(unit.path, fingerprint)
            if stored.get(unit.relpath) == sig:
                summary.skipped += 1
                progress.unit_done()
                continue
            try:
                docs = self._load(source, unit)
            except IngestError as exc:
                summary.failed.append(Failure(str(unit.path), exc.reason))
                progress.unit_done()
                continue
            loaded.append((unit, sig, docs))
        if not loaded:
            return  # every unit unchanged: the common re-run reads nothing more
        # One read of what is indexed, for duplicate checks and change detection alike.
        stored_hashes = {d.id: d.hash for d in self.store.documents(source.name)}
        kept_ids = self._dedupe(source, loaded, summary, fingerprint, stored_hashes)
        for unit, sig, docs in loaded:
            for doc in docs:
                if doc.id not in kept_ids:
                    continue
                # The fingerprint is part of the stored hash, so a spec change re-indexes the document.
                stamped = _stamped(doc, fingerprint)
                if stored_hashes.get(doc.id) == stamped.hash:
                    summary.unchanged += 1
                    continue
                chunks = self._chunk(source, doc)
                pending.writes.append(
                    DocumentWrite(stamped, chunks, np.zeros((0, 0), np.float32), unit.relpath)
                )
                pending.chunks += len(chunks)
                progress.to_embed(len(chunks))
                if pending.chunks >= FLUSH_CHUNKS:
                    # Safe mid-unit: the unit is marked done only after its last document is written.
                    self._flush(pending, summary, progress)
            pending.units.append((source.name, unit.relpath, sig, {d.id for d in docs if d.id in kept_ids}))
            progress.unit_done()

    def _load(self, source: SourceSpec, unit: Unit) -> list[Document]:
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
        try:
            docs = list(load_unit(unit.type, unit.path, ctx))
        except IngestError:
            raise
        except Exception as exc:  # a loader bug on one odd file must not sink the whole run
            log.exception("ingest.loader_crashed", extra={"path": str(unit.path), "type": unit.type})
            raise IngestError(unit.path, f"{unit.type} loader failed: {type(exc).__name__}: {exc}") from exc
        docs = [
            replace(
                d,
                source=source.name,
                path=d.path or unit.relpath,
                title=_storable(d.title),
                # The tenant is stamped last: no file can claim another tenant.
                metadata=_storable({**source.metadata, **d.metadata, TENANT_KEY: source.tenant}),
                access_groups=tuple(dict.fromkeys((*source.access_groups, *d.access_groups))),
            )
            for d in docs
            if d.text.strip()
        ]
        if not docs:
            raise IngestError(unit.path, "no text found in the file")
        # A unit writes only ids under its own (``LoadContext.doc_id``): the store replaces a
        # document by id, so an id outside would overwrite another file's (another user's) document.
        own = ctx.doc_id()
        stray = next((d.id for d in docs if d.id != own and not d.id.startswith(own + ":")), None)
        if stray is not None:
            raise IngestError(unit.path, f"{unit.type} loader gave a document id outside its file: {stray!r}")
        return docs

    def _dedupe(
        self,
        source: SourceSpec,
        loaded: list[tuple[Unit, str, list[Document]]],
        summary: IngestSummary,
        fingerprint: str,
        stored_hashes: dict[str, str],
    ) -> set[str]:
        # Shortest path first, so of two identical files the canonical name (not "...-copy") is kept.
        docs = sorted((d for _, _, ds in loaded for d in ds), key=lambda d: (len(d.path), d.path, d.id))
        if not source.cleaning.dedupe or not docs:
            return {d.id for d in docs}
        result = dedupe_documents(docs, source.cleaning.near_duplicate_threshold)
        summary.exact_duplicates += result.exact_merged
        summary.near_duplicates += result.near_merged
        kept = {d.id for d in result.kept}
        # Exact duplicates of documents already indexed from other units are dropped too.
        indexed = {h: doc_id for doc_id, h in stored_hashes.items()}
        loaded_ids = {d.id for d in docs}
        for doc in result.kept:
            twin = indexed.get(_stamped(doc, fingerprint).hash)
            if twin is not None and twin != doc.id and twin not in loaded_ids:
                kept.discard(doc.id)
                summary.exact_duplicates += 1
        return kept

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

    def _flush(self, pending: _Pending, summary: IngestSummary, progress: Progress) -> None:
        if pending.writes:
            all_chunks = [c for w in pending.writes for c in w.chunks]
            cached = self.store.cached_vectors(self.embedder.name, [c.hash for c in all_chunks])
            missing = list({c.hash: c for c in all_chunks if c.hash not in cached}.values())
            summary.cached += len(all_chunks) - len([c for c in all_chunks if c.hash not in cached])
            progress.embedded(len(all_chunks) - sum(1 for c in all_chunks if c.hash not in cached))
            if missing:
                vectors = self.embedder.embed([index_text(c) for c in missing], progress=progress.embedded)
                cached.update(zip((c.hash for c in missing), vectors, strict=True))
                summary.embedded += len(missing)
            writes = [
                replace(
                    w,
                    vectors=np.stack([cached[c.hash] for c in w.chunks])
                    if w.chunks
                    else np.zeros((0, 1), np.float32),
                )
                for w in pending.writes
            ]
            self.store.write(writes, model=self.embedder.name)
            summary.documents += len(writes)
            summary.chunks += len(all_chunks)
        for source, unit, sig, ids in pending.units:
            stale = [d.id for d in self.store.documents(source, unit=unit) if d.id not in ids]
            summary.deleted += self.store.delete_documents(stale)
            self.store.set_unit(source, unit, sig)
        pending.writes.clear()
        pending.units.clear()
        pending.chunks = 0


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


def _fingerprint(source: SourceSpec, model: str) -> str:
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
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


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
