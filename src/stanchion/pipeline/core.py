"""The one ordered request pipeline every endpoint that reaches a model or the index runs through.

    admit -> check input -> look up cache -> retrieve -> generate -> check output -> store in cache
          -> account and audit

A ``Stage`` is one small async callable with its place in that order (``POSITIONS``); the stages
at a place run in the order they were added. The endpoint brings its own work for the places
only it knows (validating its input, retrieving, generating) as ``steps``, run after the stages
of that place. The server places its rate-limit admission at ``admit`` and its ``Accounting``
(metrics, audit record, token charge) closes every call; the CLI's pipeline has neither. Places
with no stage yet (check input, cache lookup, check output, cache store) are where the guards
and the cache plug in.

A stage before ``retrieve`` (the cache) may answer the call itself: it sets ``result`` (or
``events``) and ``served``, and the retrieve and generate places are skipped.

A call is *accepted* once its input is checked: from then on, however it ends, ``close`` runs
the account place (a 429 at admission or a 422 from the input check is not accounted). A
streaming endpoint ``start``s the pipeline, which runs up to and including ``generate`` (the
generate step sets ``call.events``, the stream), and ``close``s it when the stream ends; a stage
that must see a stream's pieces as they pass wraps ``call.events`` at ``generate``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from stanchion.cache.keys import CacheRequest
from stanchion.cache.result import CacheResult
from stanchion.guards.session import PiiSession
from stanchion.pipeline.outcome import Outcome
from stanchion.request_context import RequestContext
from stanchion.state.records import Scope
from stanchion.types import Message

Position = Literal[
    "admit", "check_input", "cache_lookup", "retrieve", "generate", "check_output", "cache_store", "account"
]
POSITIONS: tuple[Position, ...] = (
    "admit",
    "check_input",
    "cache_lookup",
    "retrieve",
    "generate",
    "check_output",
    "cache_store",
    "account",
)
_OPENING: tuple[Position, ...] = POSITIONS[:5]
# What a call answered before it retrieves (a cache hit) skips; its output is still checked,
# stored and accounted like any other.
_SERVED_SKIPS: frozenset[Position] = frozenset({"retrieve", "generate"})


@dataclass(eq=False)
class Call:
    """One request on its way through the pipeline: who asks (``context``), what, and what came
    of it. ``action`` names the endpoint (``chat.completions``, ``answer``, ``search``,
    ``embeddings``, ``documents.*``; ``ask``, ``chat``, ``search``, ``tools.*`` on the CLI) and is
    the audit record's action; ``scope`` is what the caller's key needs to be admitted. An
    endpoint that writes (an upload, a delete) does its write at ``generate``: it is what the
    call produces."""

    context: RequestContext
    action: str
    query: str = ""  # what was asked, as the audit log records it (PII masked when guarded)
    # What the caller sent that a model will read (chat messages; a question as one user
    # message): the input guards check it and may rewrite it (strip an attack), so an endpoint
    # reads it back in its own check step.
    inputs: tuple[Message, ...] = ()
    scope: Scope = "query"
    stream: bool = False
    tokens: int = 0  # the reserve it is admitted with
    in_flight: bool = False  # an in-progress audit record while it runs (answers may run long)
    audited: bool = True
    accepted: bool = False
    started: float = 0.0  # time.perf_counter() when accepted
    error: Exception | None = None
    outcome: Outcome = field(default_factory=Outcome)
    result: Any = None  # the endpoint's own result: an Answer, a SearchResult, vectors
    retrieved: Any = None  # what a grounded answer's retrieve place found (answer.Retrieved)
    events: AsyncIterator[Any] | None = None  # a stream, set at generate
    served: bool = False  # answered by a stage before retrieve (a cache hit): result or events set
    # The request's identity in the response cache, set by its endpoint's input check (None: the
    # endpoint is not cached), and what the cache did with it.
    cache: CacheRequest | None = None
    cache_result: CacheResult | None = None
    # The answer holds values restored from masked PII: it is never stored (the cache keeps only
    # what may be shown to anyone who asks the same).
    pii_restored: bool = False
    # The call's PII session (``guards.pii``), and what the guards found and did (the response's
    # ``stanchion.guards`` and the audit record).
    pii: PiiSession | None = None
    # The conversation the call belongs to (``X-Stanchion-Conversation``; "" for none): its PII
    # pseudonyms are kept for the conversation's next turns, not only this call.
    conversation: str = ""
    # Texts the caller may read that the answer may quote besides its input and retrieved
    # sources (an agent's tool results): the output checks do not count PII in them as leaked.
    evidence: list[str] = field(default_factory=list)
    guards: list[dict[str, Any]] = field(default_factory=list)


class Stage(Protocol):
    """One step at its place in the pipeline: reads the call and may change it, or raise."""

    async def __call__(self, call: Call) -> None: ...


class Accounting(Protocol):
    """What closes every accepted call: ``begin`` once its input is checked, ``end`` however it
    ended (metrics, the audit record, the token charge)."""

    def begin(self, call: Call) -> None: ...

    async def end(self, call: Call) -> None: ...


Step = Callable[[Call], Awaitable[None]]


def _status_500(exc: Exception) -> int:
    return 500


class Pipeline:
    """The ordered stages, an optional ``Accounting``, and ``status_of``: the status an error
    gives the call's outcome (the server maps its error tree; a bug is a 500)."""

    def __init__(
        self,
        stages: Iterable[tuple[Position, Stage]] = (),
        *,
        accounting: Accounting | None = None,
        status_of: Callable[[Exception], int] = _status_500,
    ) -> None:
        placed = tuple(stages)
        for position, _ in placed:
            if position not in POSITIONS:
                raise ValueError(f"no pipeline position {position!r}; positions: {', '.join(POSITIONS)}")
        self.stages = placed
        self.accounting = accounting
        self.status_of = status_of
        self._at: dict[Position, tuple[Stage, ...]] = {
            p: tuple(s for q, s in placed if q == p) for p in POSITIONS
        }

    def with_stage(self, position: Position, stage: Stage) -> Pipeline:
        """This pipeline with ``stage`` added at ``position``, after the stages already there."""
        return Pipeline(
            (*self.stages, (position, stage)), accounting=self.accounting, status_of=self.status_of
        )

    async def run(
        self,
        call: Call,
        *,
        check: Step | None = None,
        retrieve: Step | None = None,
        generate: Step | None = None,
    ) -> Call:
        """Every place in order, for a request answered in one piece."""
        await self.start(call, check=check, retrieve=retrieve, generate=generate)
        await self.close(call)
        return call

    async def start(
        self,
        call: Call,
        *,
        check: Step | None = None,
        retrieve: Step | None = None,
        generate: Step | None = None,
    ) -> None:
        """Admission up to and including ``generate``. If that fails, the call is closed and the
        error raised; otherwise the caller ``close``s it (a stream: when the stream ends)."""
        steps: dict[Position, Step | None] = {
            "check_input": check,
            "retrieve": retrieve,
            "generate": generate,
        }
        try:
            for position in _OPENING:
                if position in _SERVED_SKIPS and call.served:
                    continue  # answered at cache_lookup: nothing to retrieve or generate
                for stage in self._at[position]:
                    await stage(call)
                step = steps.get(position)
                if step is not None:
                    await step(call)
                if position == "check_input":
                    call.accepted, call.started = True, time.perf_counter()
                    if self.accounting is not None:
                        self.accounting.begin(call)
        except Exception as exc:
            self.fail(call, exc)
            await self.close(call)
            raise
        except BaseException:  # cancelled: accounted as it stands
            await self.close(call)
            raise

    def fail(self, call: Call, exc: Exception) -> None:
        """Record that the call failed with ``exc`` (its status, for the audit record)."""
        call.error = exc
        call.outcome.status = self.status_of(exc)

    async def close(self, call: Call) -> None:
        """Check the output and store it (a call that succeeded), then account for it (any
        accepted call)."""
        if not call.accepted:
            return
        try:
            if call.error is None and call.outcome.status == 200:
                for position in ("check_output", "cache_store"):
                    for stage in self._at[position]:
                        await stage(call)
        finally:
            try:
                for stage in self._at["account"]:
                    await stage(call)
            finally:
                if self.accounting is not None:
                    await self.accounting.end(call)
