"""The request pipeline a spec declares: the stages every caller runs, server and CLI alike.

No stage is declared by the spec yet. The cache (lookup at ``cache_lookup``, store at
``cache_store``) and the guards (``check_input``, ``check_output``) will be built here from
``app.spec``; the server adds its admission and accounting around them
(``server/accounting.server_pipeline``), the CLI runs them as they are.
"""

from __future__ import annotations

from stanchion.app import App
from stanchion.pipeline.core import Pipeline
from stanchion.request_context import DEFAULT_TENANT, RequestContext


def pipeline_for(app: App) -> Pipeline:
    """The stages ``app.spec`` declares, each in its place."""
    return Pipeline()


def local_context(*, user: str, route: str = "", groups: list[str] | None = None) -> RequestContext:
    """The context of a request made on this machine (the CLI): the spec's default tenant, and
    no restriction to groups unless ``groups`` are given (``--group``)."""
    return RequestContext(DEFAULT_TENANT, user, frozenset(groups) if groups else None, route=route)
