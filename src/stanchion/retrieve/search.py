"""The retriever: ``bm25``, ``dense`` or ``hybrid`` search over a Store, filters applied inside."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from stanchion.core.analyze import keyword_terms
from stanchion.core.embed import Embedder
from stanchion.core.filters import SearchFilter
from stanchion.errors import SearchError
from stanchion.index.store import Scored, Store
from stanchion.retrieve.fusion import fuse
from stanchion.types import Fusion, Hit

Mode = Literal["bm25", "dense", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)
MAX_K = 1000


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[Hit]
    mode: Mode
    timings_ms: dict[str, float] = field(default_factory=dict)


class Retriever:
    """Runs one query against a Store. ``candidates`` is how deep each list goes before fusion."""

    def __init__(
        self, store: Store, embedder: Embedder, *, fusion: Fusion = "zscore", candidates: int = 100
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.fusion: Fusion = fusion
        self.candidates = candidates

    def search(
        self, query: str, *, k: int = 10, mode: str = "hybrid", where: SearchFilter | None = None
    ) -> SearchResult:
        if mode not in MODES:
            raise SearchError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
        if not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}, got {k}")
        if not query.strip():
            raise SearchError("the query is empty")
        where = where or SearchFilter()
        timings: dict[str, float] = {}
        depth = max(k, self.candidates) if mode == "hybrid" else k
        lists: dict[str, list[Scored]] = {}
        if mode in ("bm25", "hybrid"):
            lists["bm25"] = self._timed(
                timings, "bm25", self.store.keyword_search, keyword_terms(query), depth, where
            )
        if mode in ("dense", "hybrid"):
            started = time.perf_counter()
            vector = self.embedder.embed([query])[0]
            timings["embed"] = _ms(started)
            lists["dense"] = self._timed(timings, "dense", self.store.vector_search, vector, depth, where)
        started = time.perf_counter()
        hits = self._combine(lists, k)
        timings["fuse"] = _ms(started)
        return SearchResult(hits, mode, timings)  # type: ignore[arg-type]

    @staticmethod
    def _timed(
        timings: dict[str, float],
        name: str,
        search: Callable[[Any, int, SearchFilter], list[Scored]],
        *args: Any,
    ) -> list[Scored]:
        started = time.perf_counter()
        result = search(*args)
        timings[name] = _ms(started)
        return result

    def _combine(self, lists: dict[str, list[Scored]], k: int) -> list[Hit]:
        per_list = {name: {s.id: s.score for s in ranked} for name, ranked in lists.items()}
        if len(lists) == 1:
            ranked = [(s.id, s.score) for s in next(iter(lists.values()))]
        else:
            ranked = fuse(self.fusion, {n: [(s.id, s.score) for s in r] for n, r in lists.items()})
        top = ranked[:k]
        # Only the winners are read from the store, once.
        chunks = {c.id: c for c in self.store.chunks([cid for cid, _ in top])}
        return [
            Hit(
                chunk=chunks[cid],
                score=score,
                rank=rank,
                scores={name: scores[cid] for name, scores in per_list.items() if cid in scores},
            )
            for rank, (cid, score) in enumerate(top, start=1)
            if cid in chunks
        ]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
