"""Frozen value types shared by every stage: Document -> Chunk -> Hit."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Metadata values must survive a JSON round trip through every store backend.
MetaValue = str | int | float | bool | None | list[str]
Metadata = Mapping[str, Any]


def content_hash(text: str) -> str:
    """Stable hash of a piece of text, used for change detection and the embedding cache."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Section:
    """A structural unit of a document: a wiki section, a PDF page, a chat message, an email body.

    Chunkers keep sections apart where they can, so a heading path or page number in a chunk's
    metadata is exact rather than guessed.
    """

    text: str
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Document:
    """A clean document produced by a loader.

    ``id`` is stable across runs (derived from the source name and the document's place in it),
    which is what makes ingestion incremental. ``sections`` carries structure; when a loader has
    none, the whole ``text`` is one section.
    """

    id: str
    text: str
    title: str = ""
    source: str = ""
    path: str = ""
    metadata: Metadata = field(default_factory=dict)
    access_groups: tuple[str, ...] = ()
    sections: tuple[Section, ...] = ()

    @property
    def parts(self) -> tuple[Section, ...]:
        """The sections, or the whole text as one section."""
        return self.sections or (Section(self.text),)

    @property
    def hash(self) -> str:
        """Changes when anything indexed about the document changes (text, title, metadata, ACL)."""
        meta = json.dumps(dict(self.metadata), sort_keys=True, default=str)
        return content_hash("\x00".join((self.title, self.text, meta, "\x1f".join(self.access_groups))))


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable piece of a document, with the metadata filters and citations need."""

    id: str
    document_id: str
    text: str
    position: int
    metadata: Metadata = field(default_factory=dict)
    access_groups: tuple[str, ...] = ()

    @property
    def hash(self) -> str:
        return content_hash(self.text)


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk returned by a search, with its fused score and the per-retriever evidence."""

    chunk: Chunk
    score: float
    rank: int
    scores: Mapping[str, float] = field(default_factory=dict)
