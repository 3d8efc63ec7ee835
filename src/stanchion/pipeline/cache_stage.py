"""The response cache as two pipeline stages: ``lookup`` at ``cache_lookup``, ``store`` at
``cache_store``.

Lookup, for a call whose endpoint gave it a ``CacheRequest``: the exact tier (the same normalised
request in the same partition), then the semantic tier (the nearest cached questions by cosine,
each judged by the near-miss matcher, ``cache/match.py``). Before a grounded entry is served,
every chunk behind it is read from the index: it must still exist with the content hash it had,
and pass the caller's access filter. A changed or deleted chunk makes the entry stale (it is
dropped for everyone); a chunk the caller may not read only hides it from this caller. A hit
answers the call (``served``): its text, citations and tool calls, or a replayed stream.

Store, after a call that succeeded and was not served: the response with its question's vector
and the chunks it was built from, in the background so it never delays the answer. Not stored:
abstentions (nothing to invalidate them when documents arrive), answers holding values restored
from masked PII, calls whose lookup found the backend down, requests sent with
``Cache-Control: no-store``.

The cache never fails a request: a backend or embedding error is logged (once per
``_QUIET_S``), the call goes on without the cache, and the cache is not tried again for
``_RETRY_S`` so a dead Redis costs one timeout, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from stanchion.cache.entry import CacheBackend, CacheEntry, Dependency, Vector
from stanchion.cache.keys import CacheRequest
from stanchion.cache.match import PairMatcher
from stanchion.cache.result import CacheResult
from stanchion.core.embed import Embedder
from stanchion.errors import StanchionError
from stanchion.pipeline.core import Call
from stanchion.types import Chunk, StreamEvent, ToolCall, Usage

log = logging.getLogger("stanchion.cache")

CANDIDATES = 5  # nearest entries judged per semantic lookup
_TIMEOUT_S = 0.5  # one backend call; past it the cache is skipped
_RETRY_S = 5.0  # after a failure, the cache is left alone this long
_QUIET_S = 30.0  # at most one warning per this long
_FLUSH_S = 1.0  # counters are summed here and written to the backend at most this often
_REPLAY_WORDS = 4  # a replayed stream sends the text a few words at a time, as a model would
# A longer ttl_s (YAML's .inf included) keeps entries this long: an expiry every backend can store.
_MAX_TTL_S = 10 * 365.25 * 86_400.0

Check = Literal["ok", "stale", "forbidden"]


class ResponseCache:
    """The cache stages of one process. ``read_chunks`` reads chunks by id from the index (the
    store's ``chunks``); ``background``: store entries and counters without waiting (a server),
    or before the call returns (a CLI command, which ends with its event loop)."""

    def __init__(
        self,
        backend: CacheBackend,
        embedder: Embedder,
        read_chunks: Callable[[Sequence[str]], list[Chunk]],
        *,
        background: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.read_chunks = read_chunks
        self.background = background
        self.clock = clock
        self._matchers: dict[float | None, PairMatcher] = {}
        self._down_until = 0.0
        self._warned = 0.0
        self._pending: set[asyncio.Task[None]] = set()
        self._counts: dict[str, dict[str, float]] = {}
        self._flushed = time.monotonic()

    # --- lookup ----------------------------------------------------------------------------------

    async def lookup(self, call: Call) -> None:
        request = call.cache
        if request is None:
            return
        if request.bypass:
            call.cache_result = CacheResult("bypass")
            self._count(request.tenant, {"bypass": 1.0})
            return
        if time.monotonic() < self._down_until:
            call.cache_result = CacheResult("unavailable")
            return
        try:
            result = await self._lookup(call, request)
        except Exception as exc:  # a backend down, or a bug of ours: never the request's failure
            self._failed(exc)
            call.cache_result = CacheResult("unavailable")
            return
        call.cache_result = result
        counts = {"hit_" + result.tier if result.status == "hit" else "miss": 1.0}
        if result.near_misses:
            counts["near_miss"] = float(len(result.near_misses))
        if result.stale:
            counts["stale"] = float(result.stale)
        if result.status == "hit":
            counts["tokens_saved"] = float(result.tokens_saved)
            counts["cost_saved_usd"] = result.cost_saved_usd
        self._count(request.tenant, counts)

    async def _lookup(self, call: Call, request: CacheRequest) -> CacheResult:
        settings = request.settings
        stale = 0
        if settings.exact:
            entry = await self._call(
                self.backend.get_exact(request.tenant, request.partition, request.exact_key)
            )
            if entry is not None:
                check = await self._check(entry, request)
                if check == "ok":
                    return self._serve(call, entry, "exact", None)
                stale += await self._drop_if_stale(entry, check)
        if not request.question:  # the keys decided: the tier is off, or the text is not a question
            return CacheResult("miss", stale=stale)
        vector = await self._embed(request.question)
        near: list[str] = []
        best: float | None = None
        matcher = self._matcher(settings.threshold)
        found = await self._call(self.backend.nearest(request.tenant, request.partition, vector, CANDIDATES))
        for candidate in found:
            best = candidate.similarity if best is None else max(best, candidate.similarity)
            verdict = matcher.judge(request.question, candidate.entry.question, candidate.similarity)
            if not verdict.hit:
                if verdict.reason != "below_threshold":
                    near.append(verdict.reason)
                continue
            check = await self._check(candidate.entry, request)
            if check == "ok":
                result = self._serve(call, candidate.entry, "semantic", candidate.similarity)
                return CacheResult(
                    "hit",
                    "semantic",
                    candidate.similarity,
                    tuple(near),
                    stale,
                    result.tokens_saved,
                    result.cost_saved_usd,
                )
            stale += await self._drop_if_stale(candidate.entry, check)
        return CacheResult("miss", similarity=best, near_misses=tuple(near), stale=stale, vector=vector)

    async def _check(self, entry: CacheEntry, request: CacheRequest) -> Check:
        """Whether ``entry`` may answer this caller now: a gateway entry always (its partition
        holds the tenant, and the user when scoped so); a grounded one when every chunk behind it
        is unchanged and readable by the caller."""
        if not request.grounded:
            return "ok"
        if not entry.dependencies:
            return "stale"  # never stored so; refuse rather than serve what nothing can invalidate
        ids = [d.chunk_id for d in entry.dependencies]
        chunks = {c.id: c for c in await asyncio.to_thread(self.read_chunks, ids)}
        for dependency in entry.dependencies:
            chunk = chunks.get(dependency.chunk_id)
            if chunk is None or chunk.hash != dependency.hash:
                return "stale"
        where = request.where
        if where is not None and not all(
            where.admits(dict(c.metadata), c.access_groups) for c in chunks.values()
        ):
            return "forbidden"
        return "ok"

    async def _drop_if_stale(self, entry: CacheEntry, check: Check) -> int:
        if check != "stale":
            return 0
        await self._call(self.backend.delete(entry.tenant, [entry.id]))
        return 1

    def _serve(
        self, call: Call, entry: CacheEntry, tier: Literal["exact", "semantic"], similarity: float | None
    ) -> CacheResult:
        response = entry.response
        outcome = call.outcome
        outcome.text = str(response.get("text", ""))
        outcome.model = str(response.get("model", ""))
        outcome.finish = str(response.get("finish", "stop"))
        outcome.usage = Usage()
        outcome.costs = ()
        outcome.tool_calls = tuple(_tool_call(c) for c in response.get("tool_calls", ()))
        outcome.chunks = tuple(d.chunk_id for d in entry.dependencies)
        if "citations" in response:
            outcome.detail = {"citations": list(response["citations"]), "abstained": False}
        call.served = True
        if call.stream:
            call.events = _replay(response)
        result = CacheResult(
            "hit", tier, similarity, tokens_saved=entry.tokens, cost_saved_usd=entry.cost_usd
        )
        call.cache_result = result
        return result

    # --- store -----------------------------------------------------------------------------------

    async def store(self, call: Call) -> None:
        request, looked = call.cache, call.cache_result
        if request is None or looked is None or call.served or call.pii_restored or not request.store:
            return
        if looked.status == "unavailable" or call.outcome.status != 200:
            return
        entry_parts = self._response_of(call, request)
        if entry_parts is None:
            return
        response, dependencies = entry_parts
        work = self._put(call, request, response, dependencies, looked.vector)
        if self.background:
            self._spawn(work)
        else:
            await work

    def _response_of(
        self, call: Call, request: CacheRequest
    ) -> tuple[dict[str, Any], tuple[Dependency, ...]] | None:
        outcome = call.outcome
        if not outcome.text and not outcome.tool_calls:
            return None
        response: dict[str, Any] = {
            "text": outcome.text,
            "model": outcome.model,
            "finish": outcome.finish,
            "tool_calls": [[c.id, c.name, dict(c.arguments)] for c in outcome.tool_calls],
        }
        if not request.grounded:
            return response, ()
        retrieved = call.retrieved
        if outcome.detail.get("abstained") or retrieved is None or not retrieved.packed.sources:
            return None  # nothing to invalidate it when the documents that answer it arrive
        shown = [s.hit.chunk for s in retrieved.packed.sources.values()]
        citations = outcome.detail.get("citations", [])
        response["citations"] = list(citations) if isinstance(citations, list) else []
        return response, tuple(Dependency(c.id, c.hash) for c in shown)

    async def _put(
        self,
        call: Call,
        request: CacheRequest,
        response: Mapping[str, Any],
        dependencies: tuple[Dependency, ...],
        vector: Vector | None,
    ) -> None:
        settings = request.settings
        try:
            if vector is None and request.question:
                vector = await self._embed(request.question)
            now = self.clock()
            entry = CacheEntry(
                id=uuid.uuid4().hex,
                tenant=request.tenant,
                partition=request.partition,
                exact_key=request.exact_key,
                question=request.question,
                response=response,
                created=now,
                expires=now + min(settings.ttl_s, _MAX_TTL_S),
                vector=vector if request.question else None,
                dependencies=dependencies,
                tokens=call.outcome.usage.total_tokens,
                cost_usd=call.outcome.cost,
            )
            await self._call(self.backend.put(entry, max_entries=settings.max_entries))
            self._count(request.tenant, {"stored": 1.0})
        except Exception as exc:
            self._failed(exc)

    # --- plumbing --------------------------------------------------------------------------------

    def _matcher(self, threshold: float | None) -> PairMatcher:
        if threshold not in self._matchers:
            self._matchers[threshold] = PairMatcher() if threshold is None else PairMatcher(threshold)
        return self._matchers[threshold]

    async def _embed(self, text: str) -> Vector:
        vectors = await asyncio.to_thread(self.embedder.embed, [text])
        return np.asarray(vectors[0], dtype=np.float32)

    async def _call(self, work: Any) -> Any:
        return await asyncio.wait_for(work, _TIMEOUT_S)

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + _RETRY_S
        if now - self._warned >= _QUIET_S:
            self._warned = now
            log.warning(
                "cache.unavailable: requests go on without the response cache for %.0f s",
                _RETRY_S,
                extra={
                    "backend": getattr(self.backend, "name", "?"),
                    # A store error's driver message says why (a file that is not a database).
                    "error": f"{type(exc).__name__}: {exc}"
                    + (f" ({detail})" if (detail := getattr(exc, "detail", "")) else ""),
                },
                # Not an outage we expect: the traceback, so a bug is not mistaken for one.
                exc_info=None if isinstance(exc, StanchionError | TimeoutError | OSError) else exc,
            )

    def _count(self, tenant: str, values: Mapping[str, float]) -> None:
        counts = self._counts.setdefault(tenant, {})
        for key, add in values.items():
            counts[key] = counts.get(key, 0.0) + add
        if time.monotonic() - self._flushed >= _FLUSH_S:
            self._spawn(self.flush())

    async def flush(self) -> None:
        """Write the counters summed since the last flush to the backend (shared by workers)."""
        counts, self._counts, self._flushed = self._counts, {}, time.monotonic()
        for tenant, values in counts.items():
            try:
                await self._call(self.backend.count(tenant, values))
            except Exception as exc:
                self._failed(exc)
                return

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Finish the background writes and flush the counters (a worker or command ending)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        await self.flush()


def _tool_call(raw: Sequence[Any]) -> ToolCall:
    call_id, name, arguments = raw
    return ToolCall(str(call_id), str(name), dict(arguments))


async def _replay(response: Mapping[str, Any]) -> AsyncIterator[StreamEvent | str]:
    """A cached response as a stream: its text a few words at a time, its tool calls, then the
    end (finish reason, the model that wrote it, no tokens used)."""
    words = str(response.get("text", "")).split(" ")
    for start in range(0, len(words), _REPLAY_WORDS):
        piece = " ".join(words[start : start + _REPLAY_WORDS])
        yield piece if start == 0 else " " + piece
        await asyncio.sleep(0)
    calls = tuple(_tool_call(c) for c in response.get("tool_calls", ()))
    yield StreamEvent(
        tool_calls=calls,
        usage=Usage(),
        finish_reason=str(response.get("finish", "stop")),
        model=str(response.get("model", "")),
    )
