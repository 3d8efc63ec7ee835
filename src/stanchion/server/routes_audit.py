"""``/v1/audit``: a tenant's audit log, newest first, a page at a time (admin keys only).

Each record says who did what (action, user, key, request id, status), what it used (query,
route, models, chunks), and what it cost (tokens, cost, latency). Secrets were redacted when the
record was written. The caller's tenant bounds every read; no parameter widens it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from stanchion.server.deps import Caller, Ctx, admit
from stanchion.server.params import PageLimit, Since, Storable, Until
from stanchion.server.schemas import AUTHENTICATED, error_responses, page_bounds

router = APIRouter(tags=["Audit"])


class AuditEntry(BaseModel):
    id: int
    object: Literal["audit.record"] = "audit.record"
    at: float
    action: str
    user: str
    key_id: str
    request_id: str
    status: int
    query: str
    route: str
    models: list[str]
    chunks: list[str]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    detail: dict[str, Any]


class AuditPage(BaseModel):
    """Newest first: pass ``last_id`` as ``before`` for the next page while ``has_more``."""

    object: Literal["list"] = "list"
    data: list[AuditEntry]
    first_id: int | None
    last_id: int | None
    has_more: bool


@router.get(
    "/v1/audit",
    response_model=AuditPage,
    summary="The caller's tenant's audit log, newest first (admin scope)",
    responses=error_responses(*AUTHENTICATED),
)
async def audit_log(
    ctx: Ctx,
    principal: Caller,
    action: Annotated[str | None, Query(max_length=64, description="e.g. chat.completions"), Storable] = None,
    user: Annotated[str | None, Query(max_length=256), Storable] = None,
    since: Since = None,
    until: Until = None,
    before: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="the last id of the previous page")
    ] = None,
    limit: PageLimit = 100,
) -> AuditPage:
    await admit(ctx, principal, "admin")
    await ctx.audit.flush()  # this worker's pending records too
    records = await asyncio.to_thread(
        ctx.app.state.audit_log,
        principal.tenant,
        action=action,
        user=user,
        since=since,
        until=until,
        before=before,
        limit=limit + 1,  # one more tells whether another page follows
    )
    page = [AuditEntry(**_without_tenant(r.as_json())) for r in records[:limit]]
    return AuditPage(data=page, **page_bounds([item.id for item in page], fetched=len(records), limit=limit))


def _without_tenant(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "tenant"}  # always the caller's own
