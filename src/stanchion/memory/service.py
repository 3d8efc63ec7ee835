"""``Memory``: extraction, deduplication and writes, and ``recall`` for a run.

A statement for a slot that already holds a memory updates it: the same value restates it (its
text and time change), another value replaces it and the old one is kept as history. A statement
in a new slot whose embedding nearly equals a current memory's (cosine >= ``duplicate_at``)
restates that memory instead of adding a second. Recall ranks the user's current memories by
cosine similarity to the query plus a small bonus for each query word they contain.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from stanchion.core.analyze import query_terms, terms
from stanchion.core.embed import Embedder
from stanchion.errors import Conflict, SearchError
from stanchion.memory.extract import Extractor
from stanchion.memory.records import Candidate, MemoryRecord, slot_label
from stanchion.memory.rules import RuleExtractor
from stanchion.memory.store import MemoryStore, Vector
from stanchion.types import Message

log = logging.getLogger(__name__)

Action = Literal["added", "updated", "superseded"]
# Words of a question to a memory that say nothing of which memory it needs.
_QUESTION_WORDS = frozenset(
    terms(
        "what which who where when how does do did is are user user's their they them tell know remember current now"
    )
)
_SPACE = re.compile(r"\s+")
MAX_QUERY_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Change:
    """What one write did: ``record`` is the memory now current; ``replaced`` the one it superseded."""

    action: Action
    record: MemoryRecord
    replaced: str | None = None


class Memory:
    """Long-term memory of each (tenant, user) over a ``MemoryStore`` and an embedder."""

    def __init__(
        self,
        store: MemoryStore,
        embedder: Embedder,
        *,
        extractor: Extractor | None = None,
        duplicate_at: float = 0.9,
        keyword_weight: float = 0.1,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.extractor: Extractor = extractor or RuleExtractor()
        self.duplicate_at = duplicate_at
        self.keyword_weight = keyword_weight

    async def remember(
        self, tenant: str, user: str, messages: Sequence[Message], *, source: str = ""
    ) -> list[Change]:
        """Extract what ``messages`` state about the user and write it (off the event loop)."""
        candidates = await self.extractor.extract(messages)
        if not candidates:
            return []
        return await asyncio.to_thread(self.write, tenant, user, candidates, source=source)

    def write(
        self, tenant: str, user: str, candidates: Sequence[Candidate], *, source: str = ""
    ) -> list[Change]:
        """Store each candidate: update its slot's memory, or a near-duplicate, or add it."""
        _check_owner(tenant, user)
        if not candidates:
            return []
        vectors = self.embedder.embed([embedding_text(c) for c in candidates])
        changes = []
        for candidate, vector in zip(candidates, vectors, strict=True):
            try:
                changes.append(self._write_one(tenant, user, candidate, vector, source))
            except Conflict:  # another writer changed the slot meanwhile: decide again, once
                changes.append(self._write_one(tenant, user, candidate, vector, source))
        log.info(
            "memory.written",
            extra={"tenant": tenant, "source": source, "actions": [c.action for c in changes]},
        )
        return changes

    def _write_one(self, tenant: str, user: str, candidate: Candidate, vector: Vector, source: str) -> Change:
        existing = self.store.current(tenant, user, candidate.slot)
        if existing is None:
            said = _normal(candidate.text)
            near = [
                (cosine, record)
                for record, cosine in self.store.candidates(tenant, user, vector, ())
                if record.kind == candidate.kind
                and (cosine >= self.duplicate_at or _normal(record.text) == said)
            ]
            existing = max(near, key=lambda pair: pair[0])[1] if near else None
            if existing is not None:  # a near-duplicate: it keeps its slot
                candidate = replace(candidate, slot=existing.slot)
        if existing is None:
            return Change("added", self.store.add(tenant, user, candidate, vector, source=source))
        if _same(existing, candidate):
            refreshed = self.store.refresh(tenant, user, existing.id, candidate, vector, source=source)
            if refreshed is None:
                raise Conflict(f"memory {existing.id} changed while it was being updated")
            return Change("updated", refreshed)
        record = self.store.supersede(tenant, user, existing.id, candidate, vector, source=source)
        return Change("superseded", record, replaced=existing.id)

    def recall(
        self, tenant: str, user: str, query: str, k: int = 5, *, vector: Vector | None = None
    ) -> list[MemoryRecord]:
        """The user's ``k`` current memories most relevant to ``query``, best first (``score``).
        ``vector``: the query's embedding when the run has it already (retrieval embeds the same
        question), so recall adds only a read and a ranking."""
        _check_owner(tenant, user)
        if k < 1:
            raise SearchError(f"k must be at least 1, got {k}")
        query = _SPACE.sub(" ", query).strip()[:MAX_QUERY_CHARS]
        if not query:
            return []
        if vector is None:
            vector = self.embedder.embed([query])[0]
        words = [t for t in query_terms(query) if t not in _QUESTION_WORDS]
        scored = []
        for record, cosine in self.store.candidates(tenant, user, vector, words):
            held = set(terms(f"{record.text} {slot_label(record.slot)}"))
            bonus = sum(w in held for w in words) / len(words) if words else 0.0
            scored.append(replace(record, score=cosine + self.keyword_weight * bonus))
        scored.sort(key=lambda r: (-r.score, -r.updated_at))
        return scored[:k]


def embedding_text(candidate: Candidate) -> str:
    """What is embedded for a memory: its slot's words, then what the user said."""
    return f"{slot_label(candidate.slot)}: {candidate.text}"


def _same(existing: MemoryRecord, candidate: Candidate) -> bool:
    return existing.negated == candidate.negated and existing.value.casefold() == candidate.value.casefold()


def _normal(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def _check_owner(tenant: str, user: str) -> None:
    if not tenant or not user:
        raise SearchError("memory needs a tenant and a user: both must be non-empty")
