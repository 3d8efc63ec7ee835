"""The server's places in the request pipeline (``stanchion.pipeline``): at ``admit``, the
rate-limit admission with the token reserve; closing every accepted call, token and cost
metrics, per-stage latency, the rate-limit charge and the audit record.

Every endpoint that reaches a model or the index (chat completions plain and streamed, grounded
or not, ``/v1/answer``, ``/v1/search``, ``/v1/embeddings``, and the documents: upload, list, get,
delete) runs through ``server_pipeline``, so each is admitted and counted the same way. Every token is priced by the model that produced it
(``Usage.by_model``): an answer finished by a backup model, or retried on another tier, names
each model with its own tokens and cost in the response, the metrics and the audit record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stanchion.errors import StanchionError
from stanchion.logs import request_id
from stanchion.models.pricing import estimate_message_tokens
from stanchion.pipeline import Call, Outcome, Pipeline, RequestContext, wiring
from stanchion.server.errors import APIError, from_stanchion
from stanchion.spec import Spec
from stanchion.state import AuditRecord, Principal
from stanchion.types import Message

if TYPE_CHECKING:
    from stanchion.server.context import ServerContext

__all__ = [
    "CHARGE_FAILED",
    "Outcome",
    "account",
    "charge_tokens",
    "principal_of",
    "server_pipeline",
    "token_reserve",
]

log = logging.getLogger(__name__)

# The audit record keeps this much of a question: cut here, after the input guard masked the
# whole of it (a cut first could split a value the detector then no longer recognises).
AUDIT_QUERY_CHARS = 4000

# The audit action of a token charge the rate limiter could not take (the request itself is
# audited under its own action, with the tokens that were not charged).
CHARGE_FAILED = "tokens.charge_failed"


def token_reserve(spec: Spec, route: str, messages: Sequence[Message], max_tokens: int | None = None) -> int:
    """The tokens a request on ``route`` is admitted with: its prompt (chars/4 plus each message's
    framing) and the most it may write, which is the caller's ``max_tokens`` on a gateway route,
    else the largest ``max_output_tokens`` of the route's models. ``/v1/answer`` and chat
    completions (grounded or not, streamed or not) all admit with this one figure."""
    chosen = spec.routes[route]
    names = [*chosen.models, *(n for chain in chosen.tiers.values() for n in chain)]
    most = max(spec.models[n].max_output_tokens for n in names)
    if max_tokens is not None and not chosen.grounded:
        most = max_tokens  # a grounded answer's length is the answerer's, not the caller's
    return estimate_message_tokens(messages) + most


async def account(
    ctx: ServerContext,
    principal: Principal,
    outcome: Outcome,
    *,
    action: str,
    query: str,
    route: str,
    started: float,
    audited: bool = True,
    cache: str | None = None,
    guards: Sequence[dict[str, object]] = (),
) -> None:
    """Count metrics, queue the audit record (unless not ``audited``) and charge the tokens. A charge the rate limiter
    cannot take is logged, counted and audited (``CHARGE_FAILED``); it never fails the response,
    which has been answered already."""
    usage = outcome.usage
    for c in outcome.costs:
        ctx.metrics.tokens(c.model, principal.tenant, c.usage.input_tokens, c.usage.output_tokens, c.cost_usd)
    stages = outcome.detail.get("latency_ms")
    if isinstance(stages, dict):
        for stage, ms in stages.items():
            if stage != "total":
                ctx.metrics.stage(stage, float(ms) / 1000)
    models = tuple(c.model for c in outcome.costs) or ((outcome.model,) if outcome.model else ())
    # Queued before the charge is awaited: a client that leaves cancels this task at its first await.
    if audited:
        ctx.audit.record(
            AuditRecord(
                action,
                principal.tenant,
                principal.user,
                principal.key_id,
                request_id.get(),
                outcome.status,
                query=query[:AUDIT_QUERY_CHARS],
                route=route,
                models=models,
                chunks=outcome.chunks,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=outcome.cost,
                latency_ms=(time.perf_counter() - started) * 1000,
                detail={
                    **({"models": outcome.models_json()} if outcome.costs else {}),
                    **({"cache": cache} if cache else {}),
                    **({"guards": list(guards)} if guards else {}),
                    **({"agent": outcome.detail["agent"]} if "agent" in outcome.detail else {}),
                },
            )
        )
    if usage.total_tokens:
        # Shielded: the charge completes, and reports its own failure, even if the client left.
        await asyncio.shield(charge_tokens(ctx, principal, usage.total_tokens, route=route))


async def charge_tokens(ctx: ServerContext, principal: Principal, tokens: int, *, route: str = "") -> None:
    """Charge ``tokens`` to the caller's key; when the rate limiter fails, log the tokens that went
    uncharged, count them (``stanchion_token_charge_failures``) and audit them."""
    try:
        await ctx.limiter.charge(principal.key_id, tokens, ctx.limits)
    except StanchionError as exc:
        log.error(
            "ratelimit.charge_failed",
            extra={"key_id": principal.key_id, "tokens": tokens, "error": type(exc).__name__},
        )
        ctx.metrics.token_charge_failed(tokens)
        ctx.audit.record(
            AuditRecord(
                CHARGE_FAILED,
                principal.tenant,
                principal.user,
                principal.key_id,
                request_id.get(),
                503,
                route=route,
                detail={"tokens": tokens, "error": type(exc).__name__},
            )
        )


def principal_of(context: RequestContext) -> Principal:
    """The caller a server request's context was made for (scopes, limits and audit use it)."""
    return Principal(
        context.tenant, context.user, context.groups or frozenset(), context.scopes, context.key_id
    )


class Admission:
    """``admit``: the scope the call needs (``Call.scope``: ``query``, or ``ingest`` for a
    document upload or delete), then the caller's request and token limits (the call's reserve,
    ``Call.tokens``); a 429 with Retry-After when one is reached."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    async def __call__(self, call: Call) -> None:
        from stanchion.server.deps import admit

        await admit(self.ctx, principal_of(call.context), call.scope, tokens=call.tokens)


class Accounts:
    """The server's ``Accounting``: an in-progress audit record while a long call runs
    (``Call.in_flight``), then metrics, the final record and the token charge."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def begin(self, call: Call) -> None:
        if call.in_flight:  # replaced by the final record; left alone if this worker dies mid-answer
            self.ctx.audit.started(
                call.action,
                principal_of(call.context),
                query=call.query[:AUDIT_QUERY_CHARS],
                route=call.context.route,
            )

    async def end(self, call: Call) -> None:
        if call.cache_result is not None:
            self.ctx.metrics.cache(call.context.route, call.context.tenant, call.cache_result)
        await account(
            self.ctx,
            principal_of(call.context),
            call.outcome,
            action=call.action,
            query=call.query,
            route=call.context.route,
            started=call.started,
            audited=call.audited,
            cache=call.cache_result.header if call.cache_result is not None else None,
            guards=call.guards,
        )


def _status(exc: Exception) -> int:
    """The status an error gives the audit record: the error handlers' for ours, 500 for a bug."""
    if isinstance(exc, APIError):  # a route's own refusal (a 404 or 403 while it works)
        return exc.status
    return from_stanchion(exc).status if isinstance(exc, StanchionError) else 500


def server_pipeline(ctx: ServerContext) -> Pipeline:
    """The request pipeline of a server worker: admission first, then the stages the spec
    declares (``pipeline.wiring``), accounting last."""
    declared = wiring.pipeline_for(ctx.app, background=True)
    return Pipeline(
        [("admit", Admission(ctx)), *declared.stages], accounting=Accounts(ctx), status_of=_status
    )
