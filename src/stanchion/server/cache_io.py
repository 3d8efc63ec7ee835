"""The response cache at the HTTP edge: how a client skips it, and how a response says what it did.

A client skips the lookup with the body field ``"cache": false`` (OpenAI clients:
``extra_body={"cache": False}``), the header ``X-Stanchion-Cache: bypass``, or
``Cache-Control: no-cache``; the fresh answer is still stored. ``Cache-Control: no-store`` keeps
nothing of the request (its answer is not stored for anyone; it may still be answered from the cache). Every response of a cached route
carries ``X-Stanchion-Cache`` (``hit-exact``, ``hit-semantic``, ``miss``, ``bypass``,
``unavailable``) and a ``cache`` object in its ``stanchion`` field.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from stanchion.cache.result import HEADER
from stanchion.pipeline import Call
from stanchion.server.context import ServerContext
from stanchion.state import Principal


def identity(
    ctx: ServerContext, principal: Principal, request: Request, route: str, body_cache: bool | None
) -> dict[str, Any]:
    """What every cached endpoint's ``grounded_request`` / ``gateway_request`` takes alike: the
    route and its config digest and cache settings, the caller, and the client's cache headers."""
    return {
        "route": route,
        "config": ctx.cache_config(route),
        "settings": ctx.app.spec.routes[route].cache,
        "tenant": principal.tenant,
        "user": principal.user,
        "bypass": bypass_requested(request, body_cache),
        "store": store_allowed(request),
    }


def bypass_requested(request: Request, body_cache: bool | None) -> bool:
    if body_cache is False:
        return True
    if request.headers.get(HEADER, "").strip().lower() == "bypass":
        return True
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    return "no-cache" in directives


def store_allowed(request: Request) -> bool:
    """False when the client asked that nothing of this request be kept (``no-store``)."""
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    return "no-store" not in directives


def cache_json(call: Call) -> dict[str, object]:
    """``{"cache": {...}}`` for a call of a cached route, else nothing."""
    return {"cache": call.cache_result.as_json()} if call.cache_result is not None else {}
