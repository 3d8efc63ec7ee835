"""After a model answered: token and cost metrics, per-stage latency, rate-limit charge, audit record.

Shared by ``/v1/chat/completions`` (plain and streamed) and ``/v1/answer``, so every answer is
counted the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from stanchion.answer import Answer
from stanchion.logs import request_id
from stanchion.server.context import ServerContext
from stanchion.state import AuditRecord, Principal
from stanchion.types import ToolCall, Usage


@dataclass
class Outcome:
    """What one answer used and returned."""

    text: str = ""
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    chunks: tuple[str, ...] = ()
    status: int = 200
    detail: dict[str, object] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()
    finish: str = "stop"

    def take_answer(self, answer: Answer) -> None:
        """Fill in from a grounded answer: the chunks it was shown, citations, stage latencies."""
        self.text, self.model, self.usage, self.cost = (
            answer.text,
            answer.model,
            answer.usage,
            answer.cost_usd,
        )
        sources = answer.sources
        self.chunks = (
            tuple(s.hit.chunk.id for s in sources) if sources else tuple(c.chunk_id for c in answer.citations)
        )
        self.detail = {
            "citations": [c.as_json() for c in answer.citations],
            "latency_ms": dict(answer.latency_ms),
            "abstained": answer.abstained,
        }


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
    """Count metrics, queue the audit record and charge the tokens; never raises into the response."""
    usage = outcome.usage
    if outcome.model:
        ctx.metrics.tokens(
            outcome.model, principal.tenant, usage.input_tokens, usage.output_tokens, outcome.cost
        )
    stages = outcome.detail.get("latency_ms")
    if isinstance(stages, dict):
        for stage, ms in stages.items():
            if stage != "total":
                ctx.metrics.stage(stage, float(ms) / 1000)
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
            models=(outcome.model,) if outcome.model else (),
            chunks=outcome.chunks,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=outcome.cost,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    )
    if usage.total_tokens:
        with contextlib.suppress(Exception):  # best effort: the request already happened
            await asyncio.shield(ctx.limiter.charge(principal.key_id, usage.total_tokens, ctx.limits))
