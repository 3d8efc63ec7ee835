"""``create_app(spec)``: the FastAPI application of one worker process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from stanchion.app import App, build
from stanchion.core.embed import Embedder, warm_for_serving
from stanchion.errors import GuardError
from stanchion.server import (
    fast_stream,
    routes_agents,
    routes_audit,
    routes_chat,
    routes_documents,
    routes_memory,
    routes_ops,
    routes_search,
    routes_usage,
)
from stanchion.server.context import ServerContext
from stanchion.server.errors import install_handlers
from stanchion.server.heap import paced_collection
from stanchion.server.middleware import RequestMiddleware
from stanchion.server.openapi import describe_models
from stanchion.server.schemas import ChatCompletionChunk
from stanchion.server.sse import SERVER_SEND
from stanchion.spec import Spec
from stanchion.tracing import configure_tracing

log = logging.getLogger(__name__)

DESCRIPTION = """\
Stanchion's HTTP API. OpenAI-compatible chat completions and embeddings (`model` names a route of
the spec), grounded answers with citations, hybrid search, and document ingestion. Every endpoint
but the operational ones takes `Authorization: Bearer <API key>`; errors are JSON
`{"error": {"message", "type", "code", "param"}}` with a stable `code`.
"""


class StanchionAPI(FastAPI):
    """FastAPI, leaving the server's own ``send`` in the scope for ``EventStreamResponse``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND] = send
        try:
            await super().__call__(scope, receive, send)
        finally:
            del scope[SERVER_SEND]  # the send holds uvicorn's request cycle, which holds the scope


def create_app(spec: Spec, *, embedder: Embedder | None = None, run_jobs: bool = True) -> FastAPI:
    """The API for ``spec``. ``embedder`` shares an already loaded model (tests); ``run_jobs=False``
    leaves queued ingest jobs to other workers."""
    configure_tracing(spec.server.otel_exporter)
    system: App = build(spec, embedder=embedder)

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        ctx: ServerContext = api.state.ctx
        # Open the backends (and apply migrations) before the first request, off the event loop.
        await asyncio.to_thread(lambda: (system.state, system.store))
        if system.pii_guard is not None:  # the NER model loads now, outside any request's time limit
            try:
                await system.pii_guard.ready()
            except GuardError:  # the worker starts; every guarded request is refused (503) and says why
                log.exception("guard.pii_warm_up_failed")
        # A worker lives long: the embedding model loads now, not inside the request that would
        # otherwise meet it (the numpy encoder hands over to torch after its budget).
        try:
            await asyncio.to_thread(warm_for_serving, system.embedder)
        except Exception:  # the worker still starts: each request that embeds reports the failure
            log.exception("embedder.warm_up_failed")
        ctx.audit.start()
        if run_jobs:
            ctx.jobs.start()
        log.info("server.ready", extra={"worker": ctx.worker_id, "backend": spec.index.backend})
        lag = asyncio.create_task(ctx.metrics.watch_event_loop(), name="event-loop-lag")
        try:
            async with paced_collection():  # server/heap.py: GC pauses were the p99 under load
                yield
        finally:
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            await ctx.jobs.close()
            if "memory_writer" in system.__dict__:  # built by a run: what it holds is written first
                await system.memory_writer.aclose()
            await ctx.audit.close()
            await ctx.limiter.close()
            await system.models.aclose()
            system.close()

    api = StanchionAPI(
        title="Stanchion",
        version=version("stanchion"),
        description=DESCRIPTION,
        lifespan=lifespan,
        # Stanchion emits its own spans (stanchion.tracing); FastAPI's built-in telemetry would
        # look up OpenTelemetry providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    ctx = ServerContext.create(system)
    api.state.ctx = ctx
    install_handlers(api)
    describe_models(api, ChatCompletionChunk)
    for module in (
        routes_chat,
        routes_agents,
        routes_search,
        routes_documents,
        routes_memory,
        routes_usage,
        routes_audit,
        routes_ops,
    ):
        api.include_router(module.router)
    chat_route = next(r for r in routes_chat.router.routes if getattr(r, "path", None) == fast_stream.PATH)
    # Added first, so it runs inside RequestMiddleware (request id, limits, metrics, access log).
    api.add_middleware(
        fast_stream.GatewayStreams, ctx=ctx, endpoint=routes_chat.chat_completions, route=chat_route
    )
    api.add_middleware(
        RequestMiddleware,
        metrics=ctx.metrics,
        max_body=int(spec.server.max_body_mb * 1024 * 1024),
        max_upload=int(spec.server.max_upload_mb * 1024 * 1024),
    )
    return api
