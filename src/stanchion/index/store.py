"""The Store protocol every index backend implements (SQLite embedded, PostgreSQL + pgvector).

It is deliberately small: writes happen per batch of whole documents (atomic), and searches take
a ``SearchFilter`` that the backend applies *inside* the search, never as a post-filter.
The conformance suite in ``stanchion.testing.store_suite`` pins the behaviour down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from stanchion.core.filters import SearchFilter
from stanchion.types import Chunk, Document

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    """One document with all of its chunks and their vectors (rows aligned with ``chunks``)."""

    document: Document
    chunks: Sequence[Chunk]
    vectors: npt.NDArray[np.float32]
    unit: str = ""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    id: str
    source: str
    path: str
    title: str
    hash: str
    unit: str
    chunk_count: int
    metadata: dict[str, object] = field(default_factory=dict)
    access_groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Scored:
    """A chunk id and its score in one retriever's list. Chunks are fetched once, after fusion."""

    id: str
    score: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    documents: int
    chunks: int
    vectors: int


class Store(Protocol):
    # --- writes ---------------------------------------------------------------------------------
    def write(self, batch: Sequence[DocumentWrite], *, model: str) -> None:
        """Replace each document (and its chunks, terms, vectors) atomically, all or nothing."""

    def delete_documents(self, ids: Sequence[str]) -> int:
        """Remove documents and everything derived from them; returns how many existed."""

    def set_unit(self, source: str, unit: str, signature: str) -> None:
        """Record that ``unit`` of ``source`` was fully ingested at ``signature``."""

    def delete_unit(self, source: str, unit: str) -> None: ...

    # --- reads ----------------------------------------------------------------------------------
    def units(self, source: str) -> dict[str, str]:
        """unit -> signature for every fully ingested unit of ``source``."""

    def documents(
        self,
        source: str | None = None,
        *,
        unit: str | None = None,
        tenant: str | None = None,
        groups: frozenset[str] | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[StoredDocument]:
        """Documents in id order (bytewise). ``tenant``: only those whose metadata names it;
        ``groups``: only those open to all or sharing one of these groups (None: no check);
        ``after``: only ids after this one, for paging; ``limit``: at most this many."""

    def cached_vectors(self, model: str, hashes: Sequence[str]) -> dict[str, Vector]:
        """Vectors already computed by ``model`` for these chunk content hashes."""

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        """The chunks with these ids, in the order asked; unknown ids are left out."""

    def keyword_search(self, terms: Sequence[str], k: int, where: SearchFilter) -> list[Scored]:
        """BM25 over analysed terms (see ``core.analyze``); best first. A term given n times
        weighs n times (query term frequency)."""

    def vector_search(self, vector: Vector, k: int, where: SearchFilter) -> list[Scored]:
        """Cosine similarity against stored vectors; best first."""

    def stats(self) -> StoreStats: ...

    def ping(self) -> None:
        """Raise ``StoreError`` unless the backend answers; cheap enough for every readiness probe."""

    def close(self) -> None: ...
