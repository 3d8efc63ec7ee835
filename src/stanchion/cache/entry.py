"""What the response cache stores and the protocol every cache backend implements.

An entry belongs to one tenant and one *partition*: the hash of everything that must be equal for
two requests to share an answer (route, model parameters, earlier turns, filters, the user when
the route's cache is per user). Backends treat the partition as opaque; ``cache/keys.py`` makes it.
Inside a partition an entry is found by its exact key (the normalised request) or, in the
semantic tier, by the cosine of its question's vector.

A grounded entry lists the chunks its answer was built from (ids and content hashes): the stage
serves it only while every one of them is unchanged and readable by the caller, which is checked
against the index at lookup (``cache/stage.py``), so an edit, a re-ingest or a delete invalidates
it at once on every worker without the backend knowing about chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Dependency:
    """A chunk a grounded answer was built from, as it was when the answer was made."""

    chunk_id: str
    hash: str


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored response. ``vector`` is the unit-length embedding of ``question`` (None: the
    entry is in the exact tier only); ``response`` is what a hit replays (text, citations, tool
    calls, finish reason, the model and usage of the original call); ``expires`` and ``created``
    are epoch seconds."""

    id: str
    tenant: str
    partition: str
    exact_key: str
    question: str
    response: Mapping[str, Any]
    created: float
    expires: float
    vector: Vector | None = None
    dependencies: tuple[Dependency, ...] = ()
    tokens: int = 0  # upstream tokens (prompt + completion) one hit saves
    cost_usd: float = 0.0  # what one hit saves


@dataclass(frozen=True, slots=True)
class Candidate:
    """A semantic-tier entry and its cosine similarity to the asked question."""

    entry: CacheEntry
    similarity: float


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Entries held per tenant, and the counters (``hit_exact``, ``hit_semantic``, ``miss``,
    ``near_miss``, ``stale``, ``tokens_saved``, ``cost_saved_usd``, ...) summed over every worker."""

    entries: Mapping[str, int]
    counters: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # tenant -> name -> value


class CacheBackend(Protocol):
    """Where entries live: SQLite (embedded) or Redis (shared by every worker). Every method is
    scoped by tenant; an expired entry is never returned. The conformance suite in
    ``stanchion.testing.cache_suite`` pins the behaviour down."""

    name: str  # "sqlite" or "redis"

    async def get_exact(self, tenant: str, partition: str, exact_key: str) -> CacheEntry | None:
        """The live entry stored under ``exact_key`` in this partition, if any."""

    async def nearest(self, tenant: str, partition: str, vector: Vector, k: int) -> list[Candidate]:
        """Up to ``k`` live entries of this partition with a vector, most similar first."""

    async def put(self, entry: CacheEntry, *, max_entries: int) -> None:
        """Store ``entry`` (replacing any under its exact key); then, while the partition holds
        more than ``max_entries``, drop its oldest entries."""

    async def delete(self, tenant: str, ids: Sequence[str]) -> int:
        """Remove these entries of ``tenant`` (a stale entry found at lookup); how many existed."""

    async def clear(self, tenant: str | None = None) -> int:
        """Remove every entry of ``tenant`` (all tenants: None) and its counters; how many."""

    async def count(self, tenant: str, counters: Mapping[str, float]) -> None:
        """Add to ``tenant``'s counters (shared by every worker, read by ``stats``)."""

    async def stats(self, tenant: str | None = None) -> CacheStats: ...

    async def ping(self) -> None:
        """Raise ``StoreError`` (``RedisUnavailable`` for Redis) unless the backend answers."""

    def close(self) -> None:
        """Release connections (sync, so ``App.close`` can close it like the index)."""
