"""Operations: liveness, readiness (every backend reachable) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from stanchion.server.context import ServerContext
from stanchion.server.deps import Ctx
from stanchion.server.errors import APIError
from stanchion.server.schemas import Readiness

router = APIRouter(tags=["Operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Every backend this worker needs is reachable",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A backend is unreachable"}},
)
async def readyz(ctx: Ctx) -> JSONResponse:
    """The backends are probed at once, so a dead one costs its time limit once, not per backend."""
    probes = {
        "state": asyncio.to_thread(ctx.app.state.ping),
        "index": asyncio.to_thread(ctx.app.store.ping),
        "rate_limits": ctx.limiter.ping(),
    }
    outcomes = await asyncio.gather(*(_probe(p) for p in probes.values()))
    checks = dict(zip(probes, outcomes, strict=True))
    ready = all(v == "ok" for v in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": checks,
        "audit_pending": ctx.audit.pending,
    }
    return JSONResponse(body, 200 if ready else 503)


async def _probe(probe: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(probe, 5)
    except Exception as exc:  # readiness reports, it does not raise
        return f"error: {type(exc).__name__}"
    return "ok"


@router.get(
    "/metrics",
    summary="Prometheus metrics of every worker",
    response_class=PlainTextResponse,
    responses={
        200: {"description": "The Prometheus text exposition format"},
        401: {"description": "A bearer token was sent and it is not the metrics token"},
    },
)
async def metrics(request: Request, ctx: Ctx) -> Response:
    """Aggregates for anyone; per-tenant series (tokens, cost) with ``Authorization: Bearer`` and
    the token in the environment variable ``server.metrics_token_env`` names."""
    body, content_type = ctx.metrics.render(tenants=_holds_metrics_token(request, ctx))
    return Response(body, media_type=content_type)


def _holds_metrics_token(request: Request, ctx: ServerContext) -> bool:
    """False without credentials; True with the metrics token; 401 with anything else (a
    scraper with a wrong or unconfigured token should fail loudly, not get less)."""
    header = request.headers.get("authorization")
    if header is None:
        return False
    scheme, _, given = header.partition(" ")
    env = ctx.app.spec.server.metrics_token_env
    token = os.environ.get(env, "") if env else ""
    if scheme.lower() == "bearer" and token and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    raise APIError(
        401,
        "invalid_metrics_token",
        "not the metrics token (server.metrics_token_env names the variable that holds it)",
        headers={"WWW-Authenticate": "Bearer"},
    )
