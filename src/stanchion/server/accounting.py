"""Before a model answers, the token reserve it is admitted with; after, token and cost metrics,
per-stage latency, the rate-limit charge and the audit record.

Shared by ``/v1/chat/completions`` (plain and streamed) and ``/v1/answer``, so every answer is
admitted and counted the same way. Every token is priced by the model that produced it
(``Usage.by_model``): an answer finished by a backup model, or retried on another tier, names
each model with its own tokens and cost in the response, the metrics and the audit record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stanchion.answer import Answer
from stanchion.errors import StanchionError
from stanchion.logs import request_id
from stanchion.models.pricing import ModelCost, estimate_message_tokens, model_costs
from stanchion.server.context import ServerContext
from stanchion.spec import PriceSpec, Spec
from stanchion.state import AuditRecord, Principal
from stanchion.types import Message, ToolCall, Usage

log = logging.getLogger(__name__)

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


@dataclass
class Outcome:
    """What one answer used and returned. ``model`` wrote the final text; ``costs`` has one entry
    per model that produced tokens."""

    text: str = ""
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    costs: tuple[ModelCost, ...] = ()
    chunks: tuple[str, ...] = ()
    status: int = 200
    detail: dict[str, object] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()
    finish: str = "stop"

    @property
    def cost(self) -> float:
        return sum(c.cost_usd for c in self.costs)

    def bill(self, model: str, usage: Usage, prices: Mapping[str, PriceSpec]) -> None:
        """Record ``usage`` (tokens nobody was credited with go to ``model``), priced per model."""
        self.model = model or self.model
        self.usage = usage.attributed(self.model)
        self.costs = tuple(model_costs(self.usage, prices))

    def take_answer(self, answer: Answer) -> None:
        """Fill in from a grounded answer (priced by its Answerer): the chunks it was shown,
        citations, stage latencies."""
        self.text, self.model, self.usage, self.costs = answer.text, answer.model, answer.usage, answer.costs
        sources = answer.sources
        self.chunks = (
            tuple(s.hit.chunk.id for s in sources) if sources else tuple(c.chunk_id for c in answer.citations)
        )
        self.detail = {
            "citations": [c.as_json() for c in answer.citations],
            "latency_ms": dict(answer.latency_ms),
            "abstained": answer.abstained,
        }

    def models_json(self) -> list[dict[str, object]]:
        """Each model that produced tokens, with its own tokens and cost (responses, audit)."""
        return [c.as_json() for c in self.costs]


async def account(
    ctx: ServerContext,
    principal: Principal,
    outcome: Outcome,
    *,
    action: str,
    query: str,
    route: str,
    started: float,
) -> None:
    """Count metrics, queue the audit record and charge the tokens. A charge the rate limiter
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
    ctx.audit.record(
        AuditRecord(
            action,
            principal.tenant,
            principal.user,
            principal.key_id,
            request_id.get(),
            outcome.status,
            query=query,
            route=route,
            models=models,
            chunks=outcome.chunks,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=outcome.cost,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail={"models": outcome.models_json()} if outcome.costs else {},
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
