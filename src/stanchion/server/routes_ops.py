"""Operations: liveness, readiness (every backend reachable) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from stanchion.server.deps import Ctx
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
    checks: dict[str, str] = {}
    for name, probe in (("state", ctx.app.state.ping), ("index", ctx.app.store.ping)):
        try:
            await asyncio.wait_for(asyncio.to_thread(probe), 5)
            checks[name] = "ok"
        except Exception as exc:  # readiness reports, it does not raise
            checks[name] = f"error: {type(exc).__name__}"
    try:
        await asyncio.wait_for(ctx.limiter.ping(), 5)
        checks["rate_limits"] = "ok"
    except Exception as exc:
        checks["rate_limits"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics of every worker",
    response_class=PlainTextResponse,
    responses={200: {"description": "The Prometheus text exposition format"}},
)
async def metrics(ctx: Ctx) -> Response:
    body, content_type = ctx.metrics.render()
    return Response(body, media_type=content_type)
