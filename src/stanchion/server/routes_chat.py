"""OpenAI-compatible endpoints: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``.

``model`` names a route of the spec. A grounded route answers from the index with citations (an
extra ``citations`` field OpenAI clients ignore); a gateway route (``grounded: false``) passes the
conversation to its fallback chain or router.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request, Response

from stanchion.answer import AnswerEvent, contextual_query
from stanchion.cache.keys import gateway_request, grounded_request
from stanchion.cache.result import HEADER as CACHE_HEADER
from stanchion.errors import StanchionError
from stanchion.models.base import ChatOptions, Piece, aclose_quietly, stream_pieces
from stanchion.models.pricing import ModelCost, estimate_tokens
from stanchion.pipeline import Call, Pipeline, RequestContext
from stanchion.server.accounting import token_reserve
from stanchion.server.cache_io import cache_json, identity
from stanchion.server.chunks import DONE, ChunkFramer
from stanchion.server.context import ServerContext
from stanchion.server.deps import Caller, Ctx, admit, request_context
from stanchion.server.errors import APIError, from_stanchion, unhandled
from stanchion.server.params import conversation_id
from stanchion.server.routes_agents import AGENT_PREFIX, agent_completion
from stanchion.server.schemas import (
    AUTHENTICATED,
    WITH_BODY,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageIn,
    ChatMessageOut,
    Choice,
    EmbeddingItem,
    EmbeddingsRequest,
    EmbeddingsResponse,
    FunctionCallOut,
    ToolCallIn,
    ToolCallOut,
    ToolChoiceIn,
    UsageOut,
    error_responses,
)
from stanchion.server.sse import EventStreamResponse, failure_events
from stanchion.types import Message, StreamEvent, ToolCall, ToolSpec, Usage

router = APIRouter(tags=["OpenAI-compatible"])
# Open API 3.1 has no `itemSchema`: the `schema` of an event stream describes one event.
_SSE = {
    "description": "With `stream: true`, server-sent events: chat.completion.chunk objects, then [DONE]",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {
                        "description": "a chat.completion.chunk or an error as JSON; `[DONE]` last",
                        "anyOf": [
                            {"const": "[DONE]"},
                            {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/ChatCompletionChunk"},
                                        {"$ref": "#/components/schemas/ErrorResponse"},
                                    ]
                                },
                            },
                        ],
                    }
                },
            }
        }
    },
}
MAX_EMBED_INPUTS = 256
MAX_EMBED_CHARS = 32_000


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    summary="Chat completion on a route",
    responses={200: _SSE, **error_responses(*WITH_BODY, 404, 502, 504)},
)
async def chat_completions(
    body: ChatCompletionRequest, ctx: Ctx, principal: Caller, request: Request, response: Response
) -> ChatCompletion | EventStreamResponse:
    if body.model.startswith(AGENT_PREFIX):  # "agent:support": the agent answers
        answered = await agent_completion(body, ctx, principal, request)
        if isinstance(answered, EventStreamResponse):
            return answered
        return ChatCompletion.model_validate(answered)
    ctx.check_route(body.model)
    messages = _messages(body.messages)
    max_tokens = body.max_completion_tokens or body.max_tokens
    reserve = token_reserve(ctx.app.spec, body.model, messages, max_tokens)
    call = Call(
        request_context(principal, route=body.model, budget=reserve),
        "chat.completions",
        query=_last_user(body.messages),
        stream=body.stream,
        tokens=reserve,
        in_flight=True,
        inputs=tuple(messages),
        conversation=conversation_id(request.headers),
    )
    route = ctx.app.spec.routes[body.model]
    grounded = route.grounded
    question = ""
    ask: dict[str, Any] = {}  # a grounded route's Answerer arguments
    options = ChatOptions()

    async def check(call: Call) -> None:
        # Bad input is a 4xx before a stream starts; once it has, an error can only be an event.
        nonlocal messages, question, ask, options
        messages = list(call.inputs)  # as the input guards left them (an attack stripped)
        if grounded:
            if body.tools:
                raise APIError(
                    422, "invalid_request", f"tools: route {body.model!r} answers from documents; "
                    "tool calling needs a gateway route (grounded: false)", param="tools",
                )  # fmt: skip
            question, history, query = _question(messages)
            ask = {
                "where": ctx.where(principal, body.filters),
                "k": body.k,
                "history": history,
                "search_query": query,
                "context": call.context,
            }
            if route.cache is not None:
                call.cache = grounded_request(
                    **identity(ctx, principal, request, body.model, body.cache),
                    question=question,
                    history=history,
                    params={"k": body.k, "filters": sorted(body.filters)},
                    where=ask["where"],
                )
        else:
            options = _options(body, call.context)
            if route.cache is not None:
                call.cache = gateway_request(
                    **identity(ctx, principal, request, body.model, body.cache),
                    messages=messages,
                    params=_cached_params(options),
                )

    async def retrieve(call: Call) -> None:
        if grounded:
            call.retrieved = await (await ctx.answerer(body.model)).retrieve(question, **ask)

    async def generate(call: Call) -> None:
        if body.stream:
            if grounded:
                answerer = await ctx.answerer(body.model)
                call.events = answerer.stream(question, retrieved=call.retrieved, **ask)
            else:
                # The route's stream goes straight to the SSE writer: no layer in between per token.
                call.events = stream_pieces(ctx.app.route_model(body.model), messages, options)
        elif grounded:
            answerer = await ctx.answerer(body.model)
            call.outcome.take_answer(await answerer.answer(question, retrieved=call.retrieved, **ask))
        else:
            completion = await ctx.app.route_model(body.model).complete(messages, options)
            outcome = call.outcome
            outcome.text = completion.text
            outcome.bill(completion.model, completion.usage, ctx.app.prices)
            outcome.tool_calls, outcome.finish = completion.tool_calls, completion.finish_reason

    completion_id = "chatcmpl-" + uuid.uuid4().hex
    pipeline = ctx.request_pipeline
    if body.stream:
        await pipeline.start(call, check=check, retrieve=retrieve, generate=generate)
        assert call.events is not None
        headers = {CACHE_HEADER: call.cache_result.header} if call.cache_result is not None else None
        return EventStreamResponse(_sse(ctx, pipeline, call, body, completion_id, call.events), headers)
    await pipeline.run(call, check=check, retrieve=retrieve, generate=generate)
    if call.cache_result is not None:
        response.headers[CACHE_HEADER] = call.cache_result.header
    outcome = call.outcome
    return ChatCompletion(
        id=completion_id,
        created=int(time.time()),
        model=body.model,
        choices=[
            Choice(
                message=ChatMessageOut(
                    content=outcome.text if outcome.text or not outcome.tool_calls else None,
                    tool_calls=[_tool_call_out(c) for c in outcome.tool_calls] or None,
                ),
                finish_reason=outcome.finish,
            )
        ],
        usage=_usage_out(outcome.usage),
        citations=outcome.detail.pop("citations", []),
        stanchion={
            "model": outcome.model,
            "cost_usd": outcome.cost,
            "models": outcome.models_json(),
            **outcome.detail,
            **cache_json(call),
        },
    )


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingsResponse,
    summary="Embeddings (OpenAI format)",
    responses=error_responses(*WITH_BODY, 404),
)
async def embeddings(body: EmbeddingsRequest, ctx: Ctx, principal: Caller) -> EmbeddingsResponse:
    embedder = ctx.app.outbound_embedder  # a remote one masks PII under guards.pii
    _check_embedding_model(ctx, body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > MAX_EMBED_INPUTS:
        raise APIError(422, "invalid_request", f"input: give 1 to {MAX_EMBED_INPUTS} texts", param="input")
    if any(not t.strip() or len(t) > MAX_EMBED_CHARS for t in texts):
        raise APIError(
            422,
            "invalid_request",
            f"input: every text must be non-empty and at most {MAX_EMBED_CHARS} characters",
            param="input",
        )
    if body.dimensions is not None:
        dim = await asyncio.to_thread(lambda: embedder.dim)  # may load the model
        if body.dimensions != dim:
            raise APIError(
                422, "invalid_request", f"dimensions: {body.model!r} makes {dim}-dimensional vectors "
                "and cannot shorten them; leave dimensions out or give its own", param="dimensions",
            )  # fmt: skip
    tokens = sum(estimate_tokens(t) for t in texts)
    # Not audited (as before the pipeline); its tokens are counted and charged at no cost.
    call = Call(request_context(principal, budget=tokens), "embeddings", tokens=tokens, audited=False)

    async def generate(call: Call) -> None:
        call.result = await asyncio.to_thread(embedder.embed, texts)
        usage = Usage(input_tokens=tokens).attributed(embedder.name)
        call.outcome.model, call.outcome.usage = embedder.name, usage
        call.outcome.costs = (ModelCost(embedder.name, usage, 0.0),)

    await ctx.request_pipeline.run(call, generate=generate)
    vectors: list[npt.NDArray[np.float32]] = call.result
    encode = _base64_floats if body.encoding_format == "base64" else _floats
    return EmbeddingsResponse(
        data=[EmbeddingItem(index=i, embedding=encode(v)) for i, v in enumerate(vectors)],
        model=embedder.name,
        usage={"prompt_tokens": tokens, "total_tokens": tokens},
    )


def _embedding_models(ctx: ServerContext) -> list[str]:
    """The names ``/v1/embeddings`` answers to: the spec's ``embedding.model``, and the embedder's
    own name where that differs (a model directory's, a remote provider's id)."""
    return list(dict.fromkeys((ctx.app.spec.embedding.model, ctx.app.embedder.name)))


def _check_embedding_model(ctx: ServerContext, model: str) -> None:
    """An unknown name is a 404, as an unknown route is on chat: never another model's vectors."""
    known = _embedding_models(ctx)
    if model not in known:
        raise APIError(
            404, "model_not_found", f"no embedding model named {model!r}; models: {', '.join(known)}",
            param="model",
        )  # fmt: skip


def _floats(vector: npt.NDArray[np.float32]) -> list[float]:
    return [float(x) for x in vector.tolist()]


def _base64_floats(vector: npt.NDArray[np.float32]) -> str:
    """OpenAI's ``encoding_format: base64``: the vector as little-endian float32 bytes, base64."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


@router.get(
    "/v1/models",
    summary="What a client may name as `model`: the routes, then the embedding model",
    responses=error_responses(*AUTHENTICATED),
)
async def models(ctx: Ctx, principal: Caller) -> dict[str, object]:
    await admit(ctx, principal, "query")
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "stanchion", "grounded": route.grounded}
            for name, route in ctx.app.spec.routes.items()
        ]
        + [  # for /v1/embeddings, not a route
            {
                "id": ctx.app.spec.embedding.model,
                "object": "model",
                "created": 0,
                "owned_by": "stanchion",
                "embedding": True,
            }
        ],
    }


# --- grounded routes -------------------------------------------------------------------------------


def _question(messages: list[Message]) -> tuple[str, list[Message], str]:
    """(question, earlier turns, what to search for) from a chat transcript."""
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise APIError(
            422, "invalid_request", "messages: a grounded route needs a user message", param="messages"
        )
    last = users[-1]
    question = messages[last].content.strip()
    if not question:
        raise APIError(422, "invalid_request", "messages: the last user message is empty", param="messages")
    previous = next((messages[i].content for i in reversed(users[:-1])), "")
    history = [m for m in messages[:last] if m.role in ("user", "assistant")]
    return question, history, contextual_query(previous, question)


# --- streaming -------------------------------------------------------------------------------------


async def _sse(
    ctx: ServerContext,
    pipeline: Pipeline,
    call: Call,
    body: ChatCompletionRequest,
    completion_id: str,
    events: AsyncIterator[Piece | AnswerEvent],
) -> AsyncGenerator[bytes, None]:
    """The stream's events as chat.completion.chunk frames; the pipeline is closed (output
    checks, accounting) when the stream ends, however it ends."""
    outcome = call.outcome
    parts: list[str] = []
    frames = ChunkFramer(completion_id, int(time.time()), body.model)
    try:
        async for event in events:
            if type(event) is str:  # a gateway's token: the path every streamed token takes
                parts.append(event)
                yield frames.text(event)
                continue
            assert isinstance(event, StreamEvent | AnswerEvent)
            if text := event.text:
                parts.append(text)
                yield frames.text(text)
            if isinstance(event, AnswerEvent):
                if event.answer is not None:
                    outcome.take_answer(event.answer)
            else:
                if event.tool_calls:
                    calls = [
                        {"index": len(outcome.tool_calls) + n, **_tool_call_out(c).model_dump()}
                        for n, c in enumerate(event.tool_calls)
                    ]
                    outcome.tool_calls += event.tool_calls
                    yield frames.chunk({"tool_calls": calls})
                if event.usage is not None or event.finish_reason is not None:  # a gateway stream's end
                    outcome.bill(event.model, event.usage or Usage(), ctx.app.prices)
                    outcome.finish = event.finish_reason or outcome.finish
        outcome.text = "".join(parts)
        extra: dict[str, object] = {}
        if "citations" in outcome.detail:
            extra["citations"] = outcome.detail["citations"]
        ours: dict[str, object] = {
            "model": outcome.model,
            "cost_usd": outcome.cost,
            "models": outcome.models_json(),
        }
        if "abstained" in outcome.detail:  # a grounded answer's, as the non-streamed reply has it
            ours["abstained"] = outcome.detail["abstained"]
        ours.update(cache_json(call))
        if call.guards:  # the input guards' findings (the output is checked once it has been sent)
            ours["guards"] = list(call.guards)
        extra["stanchion"] = ours
        last = frames.chunk({}, outcome.finish, **extra)
        if body.stream_options is not None and body.stream_options.include_usage:
            last += frames.usage(_usage_out(outcome.usage).model_dump())
        yield last + DONE  # one write; EventStreamResponse ends the response with it
    except Exception as exc:
        # Headers are sent: the error goes in the stream, as OpenAI does, and [DONE] ends it.
        api = from_stanchion(exc) if isinstance(exc, StanchionError) else unhandled(exc)
        outcome.status = api.status
        yield failure_events(api)
    except (asyncio.CancelledError, GeneratorExit):
        outcome.status = 499  # the client went away
        outcome.text = "".join(parts)
        raise
    finally:
        await aclose_quietly(events)  # stops the upstream generation now
        await pipeline.close(call)  # output checks and cache (a stream that succeeded), accounting


def _last_user(messages: list[ChatMessageIn]) -> str:
    return next((m.text() for m in reversed(messages) if m.role == "user"), "")


def _messages(raw: list[ChatMessageIn]) -> list[Message]:
    out: list[Message] = []
    for m in raw:
        role = "system" if m.role == "developer" else m.role
        calls = tuple(_tool_call_in(c) for c in m.tool_calls or ())
        out.append(Message(role, m.text(), tool_calls=calls, tool_call_id=m.tool_call_id, name=m.name))
    return out


def _tool_call_in(call: ToolCallIn) -> ToolCall:
    """A call the client sends back in the history; its arguments string is forwarded as is."""
    raw = call.function.arguments
    try:
        parsed = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        parsed = {}  # OpenAI accepts any string here; the raw text still goes upstream unchanged
    return ToolCall(
        call.id, call.function.name, parsed if isinstance(parsed, dict) else {}, raw_arguments=raw
    )


def _tool_call_out(call: ToolCall) -> ToolCallOut:
    return ToolCallOut(
        id=call.id,
        # A model's malformed arguments go to the client as the model wrote them (as OpenAI does).
        function=FunctionCallOut(
            name=call.name, arguments=call.raw_arguments or json.dumps(dict(call.arguments))
        ),
    )


def _options(body: ChatCompletionRequest, context: RequestContext) -> ChatOptions:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    tools = tuple(
        ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in body.tools or ()
    )
    choice = (
        body.tool_choice.function.name if isinstance(body.tool_choice, ToolChoiceIn) else body.tool_choice
    )
    if choice is not None and choice not in ("auto", "none") and not tools:
        raise APIError(422, "invalid_request", "tool_choice: no tools are offered", param="tool_choice")
    if choice not in (None, "auto", "none", "required") and choice not in {t.name for t in tools}:
        raise APIError(
            422,
            "invalid_request",
            f"tool_choice: {choice!r} is not among the offered tools",
            param="tool_choice",
        )
    return ChatOptions(
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=stop,
        tools=tools,
        tool_choice=choice if tools else None,
        context=context,
    )


def _cached_params(options: ChatOptions) -> dict[str, Any]:
    """What besides the messages changes a gateway's answer: two requests share a cached one
    only when all of it is equal."""
    return {
        "temperature": options.temperature,
        "max_tokens": options.max_tokens,
        "stop": list(options.stop),
        "tools": [[t.name, t.description, t.parameters] for t in options.tools],
        "tool_choice": options.tool_choice,
    }


def _usage_out(usage: Usage) -> UsageOut:
    return UsageOut(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )
