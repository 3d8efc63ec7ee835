"""``/v1/search`` and ``/v1/answer``: Stanchion's own retrieval and grounded-answer endpoints."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response

from stanchion.cache.keys import grounded_request
from stanchion.cache.result import HEADER as CACHE_HEADER
from stanchion.core.filters import SearchFilter
from stanchion.models.pricing import estimate_tokens
from stanchion.pipeline import Call
from stanchion.retrieve.search import SearchResult
from stanchion.server.accounting import token_reserve
from stanchion.server.cache_io import identity
from stanchion.server.deps import Caller, Ctx, request_context
from stanchion.server.params import conversation_id
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
from stanchion.types import Message

router = APIRouter(tags=["Retrieval"])


@router.post(
    "/v1/search",
    response_model=SearchResponse,
    summary="Hybrid search over the caller's documents",
    responses=error_responses(*WITH_BODY),
)
async def search(body: SearchRequest, ctx: Ctx, principal: Caller) -> SearchResponse:
    tokens = estimate_tokens(body.query)
    call = Call(request_context(principal, budget=tokens), "search", query=body.query, tokens=tokens)
    defaults = ctx.app.spec.retrieval
    where = SearchFilter()

    async def check(call: Call) -> None:
        nonlocal where
        where = ctx.where(principal, body.filters)  # a bad filter is a 422, before the call is accepted

    async def retrieve(call: Call) -> None:
        started = time.perf_counter()
        call.result = result = await asyncio.to_thread(
            ctx.app.retriever.search,
            body.query,
            k=body.k or defaults.k,
            mode=body.mode or defaults.mode,
            where=where,
        )
        call.outcome.chunks = tuple(h.chunk.id for h in result.hits)
        call.outcome.detail = {"latency_ms": {"retrieve": (time.perf_counter() - started) * 1000}}

    await ctx.request_pipeline.run(call, check=check, retrieve=retrieve)
    result: SearchResult = call.result
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
    return SearchResponse(mode=result.mode, hits=hits, latency_ms=result.timings_ms)


@router.post(
    "/v1/answer",
    response_model=AnswerResponse,
    summary="A grounded answer with citations",
    responses=error_responses(*WITH_BODY, 404, 502, 504),
)
async def answer(
    body: AnswerRequest, ctx: Ctx, principal: Caller, request: Request, response: Response
) -> AnswerResponse:
    route = body.route or ctx.app.spec.answer.route
    ctx.check_route(route)
    cache = ctx.app.spec.routes[route].cache
    reserve = token_reserve(ctx.app.spec, route, [Message("user", body.question)])
    call = Call(
        request_context(principal, route=route, budget=reserve),
        "answer",
        query=body.question,
        tokens=reserve,
        in_flight=True,
        inputs=(Message("user", body.question),),
        conversation=conversation_id(request.headers),
    )
    where = SearchFilter()
    question = body.question

    async def check(call: Call) -> None:
        nonlocal where, question
        question = call.inputs[0].content  # as the input guards left it (an attack stripped)
        where = ctx.where(principal, body.filters)  # a bad filter is a 422, before the call is accepted
        if cache is not None:
            call.cache = grounded_request(
                **identity(ctx, principal, request, route, body.cache),
                question=question,
                history=(),
                params={"k": body.k, "filters": sorted(body.filters)},
                where=where,
            )

    async def retrieve(call: Call) -> None:
        answerer = await ctx.answerer(route)
        call.retrieved = await answerer.retrieve(question, where=where, k=body.k, context=call.context)

    async def generate(call: Call) -> None:
        answerer = await ctx.answerer(route)
        call.result = await answerer.answer(question, context=call.context, retrieved=call.retrieved)
        call.outcome.take_answer(call.result)

    # Audited however it ends.
    await ctx.request_pipeline.run(call, check=check, retrieve=retrieve, generate=generate)
    # From the outcome, not the Answer: a cache hit has no Answer, only what it replays.
    outcome = call.outcome
    usage = outcome.usage
    if call.cache_result is not None:
        response.headers[CACHE_HEADER] = call.cache_result.header
    latency = outcome.detail.get("latency_ms")
    return AnswerResponse(
        answer=outcome.text,
        citations=[CitationOut(**c) for c in _citations(outcome.detail)],
        model=outcome.model,
        usage={"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        cost_usd=outcome.cost,
        models=outcome.models_json(),
        latency_ms=dict(latency) if isinstance(latency, dict) else {},
        abstained=bool(outcome.detail.get("abstained", False)),
        cache=call.cache_result.as_json() if call.cache_result is not None else None,
        guards=call.guards or None,
    )


def _citations(detail: dict[str, object]) -> list[dict[str, Any]]:
    citations = detail.get("citations", [])
    return [c for c in citations if isinstance(c, dict)] if isinstance(citations, list) else []
