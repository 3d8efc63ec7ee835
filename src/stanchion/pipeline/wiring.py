"""The request pipeline a spec declares: the stages every caller runs, server and CLI alike.

The response cache (``pipeline/cache_stage.py``: lookup at ``cache_lookup``, store at
``cache_store``) is placed when any route declares ``cache:``; the guards
(``pipeline/guard_stage.py``: ``check_input``, ``check_output``) when ``guards:`` declares any. The server adds its admission and
accounting around them (``server/accounting.server_pipeline``), the CLI runs them as they are.
"""

from __future__ import annotations

from stanchion.app import App
from stanchion.pipeline.cache_stage import ResponseCache
from stanchion.pipeline.core import Pipeline, Position, Stage
from stanchion.pipeline.guard_stage import InputGuard, OutputGuard, SessionEnd
from stanchion.request_context import DEFAULT_TENANT, RequestContext


def pipeline_for(app: App, *, background: bool = False) -> Pipeline:
    """The stages ``app.spec`` declares, each in its place. ``background``: a long-running
    process (a server worker) writes cache entries after answering, not before."""
    stages: list[tuple[Position, Stage]] = []
    guards = app.spec.guards
    if guards.pii is not None or guards.injection is not None or guards.output is not None:
        stages += [
            ("check_input", InputGuard(app)),
            ("check_output", OutputGuard(app)),
            ("account", SessionEnd(app)),
        ]
    cache = response_cache(app, background=background)
    if cache is not None:
        stages += [("cache_lookup", cache.lookup), ("cache_store", cache.store)]
    return Pipeline(stages)


def response_cache(app: App, *, background: bool = False) -> ResponseCache | None:
    """The cache stages over ``app``'s cache backend, when any route caches."""
    if not any(route.cache is not None for route in app.spec.routes.values()):
        return None
    return ResponseCache(app.cache_backend, app.query_embedder, app.store.chunks, background=background)


def local_context(*, user: str, route: str = "", groups: list[str] | None = None) -> RequestContext:
    """The context of a request made on this machine (the CLI): the spec's default tenant, and
    no restriction to groups unless ``groups`` are given (``--group``)."""
    return RequestContext(DEFAULT_TENANT, user, frozenset(groups) if groups else None, route=route)
