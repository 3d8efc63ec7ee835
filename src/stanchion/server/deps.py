"""FastAPI dependencies: the server context, the authenticated caller, rate-limit admission, and
the ``RequestContext`` a request carries through the pipeline."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from stanchion.logs import request_id
from stanchion.request_context import RequestContext
from stanchion.server.auth import require
from stanchion.server.context import ServerContext, context
from stanchion.server.errors import APIError
from stanchion.state import Principal
from stanchion.state.records import Scope

Ctx = Annotated[ServerContext, Depends(context)]
# Declared so the OpenAPI schema says how to authenticate; ``KeyResolver`` reads the headers itself.
_BEARER = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer sk-stn-...`")
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key, in a header of its own")


async def authenticated(
    request: Request,
    ctx: Ctx,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    _api_key: Annotated[str | None, Security(_API_KEY)],
) -> Principal:
    principal = await ctx.keys.principal(request.headers)
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(authenticated)]


async def admit(ctx: ServerContext, principal: Principal, scope: Scope, *, tokens: int = 0) -> None:
    """Check the scope, then count the request against the key's limits (429 with Retry-After)."""
    require(principal, scope)
    # A store that is down raises RateLimitBackendDown: a 503 from the error handlers.
    decision = await ctx.limiter.admit(principal.key_id, ctx.limits, estimated_tokens=tokens)
    if not decision.allowed:
        ctx.metrics.rate_limited(decision.limit or "requests")
        retry = max(1, math.ceil(decision.retry_after_s))
        raise APIError(
            429,
            "rate_limited",
            f"rate limit of {decision.limit} per minute reached for this API key; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )


def request_context(principal: Principal, *, route: str = "", budget: int | None = None) -> RequestContext:
    """The context of the request being served, made once from its caller: what the pipeline,
    the answerer and every model call are told of whose request they serve."""
    return RequestContext(
        tenant=principal.tenant,
        user=principal.user,
        groups=principal.groups,
        scopes=principal.scopes,
        request_id=request_id.get(),
        route=route,
        budget=budget,
        key_id=principal.key_id,
    )
