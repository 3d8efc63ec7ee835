"""What every request handler needs, built once per worker process from the spec.

Nothing here holds state that correctness depends on: keys, jobs, audit and rate limits live in
the shared state (SQLite file or PostgreSQL) and Redis; the per-process parts are caches and
connections. That is what lets ``stanchion serve --workers N`` run N of these side by side.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from stanchion.app import App
from stanchion.cache.keys import route_config
from stanchion.core.filters import SearchFilter, caller_filter
from stanchion.request_context import RequestContext
from stanchion.server.audit import AuditWriter
from stanchion.server.auth import KeyResolver
from stanchion.server.errors import APIError
from stanchion.server.jobs import JobLauncher
from stanchion.server.metrics import Metrics
from stanchion.server.ratelimit import Limits, RateLimiter, rate_limiter
from stanchion.state import Principal

if TYPE_CHECKING:
    from stanchion.agents import Agent
    from stanchion.answer import Answerer
    from stanchion.pipeline import Pipeline


@dataclass
class ServerContext:
    app: App
    keys: KeyResolver
    limiter: RateLimiter
    metrics: Metrics
    audit: AuditWriter
    jobs: JobLauncher
    limits: Limits
    worker_id: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:6]}")
    _answerers: dict[str, Answerer] = field(default_factory=dict)
    _agents: dict[str, Agent] = field(default_factory=dict)
    _cache_configs: dict[str, str] = field(default_factory=dict)
    _answerer_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Every request that reaches a model or the index runs through it (``server/accounting.py``).
    request_pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        from stanchion.server.accounting import server_pipeline

        self.request_pipeline = server_pipeline(self)

    @classmethod
    def create(cls, app: App) -> ServerContext:
        spec = app.spec
        state = app.state
        limiter = rate_limiter(
            spec.server.redis_url, spec.resolve(spec.server.state_path).with_suffix(".limits.db")
        )
        limits = Limits(
            spec.server.rate_limits.requests_per_minute, spec.server.rate_limits.tokens_per_minute
        )
        return cls(
            app=app,
            keys=KeyResolver(state),
            limiter=limiter,
            metrics=Metrics(),
            audit=AuditWriter(
                state,
                retention_s=None
                if spec.server.audit_retention_days is None
                else spec.server.audit_retention_days * 86400,
            ),
            jobs=JobLauncher(spec, state),
            limits=limits,
        )

    async def answerer(self, route: str) -> Answerer:
        """One Answerer per route, built on first use (loading models happens off the event loop)."""
        if route not in self._answerers:
            async with self._answerer_lock:
                if route not in self._answerers:
                    self._answerers[route] = await asyncio.to_thread(self.app.answerer, route)
        return self._answerers[route]

    async def agent(self, name: str) -> Agent:
        """One Agent per name, built on first use (off the event loop: it builds tools and models)."""
        if name not in self._agents:
            async with self._answerer_lock:
                if name not in self._agents:
                    self._agents[name] = await asyncio.to_thread(self.app.agent, name)
        return self._agents[name]

    def cache_config(self, route: str) -> str:
        """The digest of the spec settings a route's cached answers depend on (``cache.keys``)."""
        if route not in self._cache_configs:
            self._cache_configs[route] = route_config(self.app.spec, route)
        return self._cache_configs[route]

    def where(self, principal: Principal, filters: list[str]) -> SearchFilter:
        """The caller's filters AND their tenant; their groups unless they administer the tenant."""
        return caller_filter(
            RequestContext(principal.tenant, principal.user, principal.groups, principal.scopes), filters
        )

    def check_route(self, route: str) -> None:
        if route not in self.app.spec.routes:
            known = ", ".join(sorted(self.app.spec.routes))
            raise APIError(
                404, "model_not_found", f"no route named {route!r}; routes: {known}", param="model"
            )


async def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx
