"""``/v1/usage``: a tenant's requests, tokens and cost, from the audit log (admin keys only),
over all time or one period (Unix seconds: ``since=1793491200&until=1796083200`` is November 2026)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel

from stanchion.server.deps import Caller, Ctx, admit
from stanchion.server.params import Since, Until
from stanchion.server.schemas import AUTHENTICATED, error_responses

router = APIRouter(tags=["Usage"])


class UsageReport(BaseModel):
    object: str = "usage"
    tenant: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@router.get(
    "/v1/usage",
    response_model=UsageReport,
    summary="The caller's tenant's usage (admin scope)",
    responses=error_responses(*AUTHENTICATED),
)
async def usage(ctx: Ctx, principal: Caller, since: Since = None, until: Until = None) -> UsageReport:
    await admit(ctx, principal, "admin")
    await ctx.audit.flush()  # this worker's pending records count too
    totals = await asyncio.to_thread(ctx.app.state.usage, principal.tenant, since=since, until=until)
    return UsageReport(
        tenant=principal.tenant,
        requests=int(totals["requests"]),
        input_tokens=int(totals["input_tokens"]),
        output_tokens=int(totals["output_tokens"]),
        cost_usd=totals["cost_usd"],
    )
