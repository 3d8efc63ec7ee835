"""``/v1/search`` and ``/v1/answer``: Stanchion's own retrieval and grounded-answer endpoints."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter

from stanchion.errors import StanchionError
from stanchion.logs import request_id
from stanchion.models.pricing import estimate_tokens
from stanchion.server.accounting import Outcome, account, token_reserve
from stanchion.server.deps import Caller, Ctx, admit
from stanchion.server.errors import from_stanchion
from stanchion.server.schemas import (
    WITH_BODY,
    AnswerRequest,
    AnswerResponse,
    CitationOut,
    SearchHit,
    SearchRequest,
    SearchResponse,
    error_responses,
)
from stanchion.state import AuditRecord
from stanchion.types import Message

router = APIRouter(tags=["Retrieval"])


@router.post(
    "/v1/search",
    response_model=SearchResponse,
    summary="Hybrid search over the caller's documents",
    responses=error_responses(*WITH_BODY),
)
async def search(body: SearchRequest, ctx: Ctx, principal: Caller) -> SearchResponse:
    await admit(ctx, principal, "query", tokens=estimate_tokens(body.query))
    where = ctx.where(principal, body.filters)
    defaults = ctx.app.spec.retrieval
    started = time.perf_counter()
    result = await asyncio.to_thread(
        ctx.app.retriever.search,
        body.query,
        k=body.k or defaults.k,
        mode=body.mode or defaults.mode,
        where=where,
    )
    ctx.metrics.stage("retrieve", time.perf_counter() - started)
    hits = [
        SearchHit(
            chunk_id=h.chunk.id,
            document_id=h.chunk.document_id,
            score=h.score,
            text=h.chunk.text,
            title=str(h.chunk.metadata.get("title", "")),
            source=str(h.chunk.metadata.get("source", "")),
            path=str(h.chunk.metadata.get("path", "")),
            metadata=dict(h.chunk.metadata),
        )
        for h in result.hits
    ]
    ctx.audit.record(
        AuditRecord(
            "search",
            principal.tenant,
            principal.user,
            principal.key_id,
            request_id.get(),
            200,
            query=body.query,
            chunks=tuple(h.chunk_id for h in hits),
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    )
    return SearchResponse(mode=result.mode, hits=hits, latency_ms=result.timings_ms)


@router.post(
    "/v1/answer",
    response_model=AnswerResponse,
    summary="A grounded answer with citations",
    responses=error_responses(*WITH_BODY, 404, 502, 504),
)
async def answer(body: AnswerRequest, ctx: Ctx, principal: Caller) -> AnswerResponse:
    route = body.route or ctx.app.spec.answer.route
    ctx.check_route(route)
    reserve = token_reserve(ctx.app.spec, route, [Message("user", body.question)])
    await admit(ctx, principal, "query", tokens=reserve)
    where = ctx.where(principal, body.filters)
    started = time.perf_counter()
    ctx.audit.started("answer", principal, query=body.question, route=route)  # until the final record
    outcome = Outcome()
    try:  # audited however it ends, as chat completions are
        answerer = await ctx.answerer(route)
        result = await answerer.answer(body.question, where=where, k=body.k)
        outcome.take_answer(result)
    except StanchionError as exc:
        outcome.status = from_stanchion(exc).status
        raise
    except Exception:
        outcome.status = 500  # a bug; the error handler answers 500
        raise
    finally:
        await account(
            ctx, principal, outcome, action="answer", query=body.question, route=route, started=started
        )
    usage = result.usage
    return AnswerResponse(
        answer=result.text,
        citations=[CitationOut(**c.as_json()) for c in result.citations],
        model=result.model,
        usage={"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        cost_usd=result.cost_usd,
        models=outcome.models_json(),
        latency_ms=dict(result.latency_ms),
        abstained=result.abstained,
    )
