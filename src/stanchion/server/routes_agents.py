"""``/v1/agents``: the spec's agents, and their runs (``POST /v1/agents/{name}/runs``).

A request that names a session (``X-Stanchion-Conversation``) runs with the session's stored
history (its earlier turns, the oldest folded into a summary past the agent's
``history_tokens``) and keeps its own turn there.

A run goes through the request pipeline like an answer: admitted against the caller's limits,
its task checked by the input guards (and masked for remote models), its answer by the output
guards, and audited with every step (the tools called and whether each succeeded; arguments and
results stay out of the audit log, which holds no text a guard would mask). With ``stream: true``
the run's events arrive as server-sent events as they happen (``step``, ``tool_call``,
``tool_result``, ``check``, ``answer``, ``stop``), then ``[DONE]``.

The chat endpoint reaches an agent too: ``"model": "agent:support"`` runs the agent on the last
user message, with the earlier turns as its history (``agent_completion``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from stanchion.agents import AgentEvent, AgentRun
from stanchion.errors import SpecError, StanchionError
from stanchion.pipeline import Call, Outcome, Pipeline
from stanchion.server.accounting import token_reserve
from stanchion.server.chunks import DONE, ChunkFramer, event
from stanchion.server.deps import Caller, Ctx, admit, request_context
from stanchion.server.errors import APIError, from_stanchion, unhandled
from stanchion.server.params import Storable, conversation_id
from stanchion.server.schemas import (
    AUTHENTICATED,
    NOT_BLANK,
    NOT_BLANK_STORABLE,
    WITH_BODY,
    ChatCompletionRequest,
    error_responses,
)
from stanchion.server.sse import EventStreamResponse, failure_events
from stanchion.types import Message

router = APIRouter(tags=["agents"])

AGENT_PREFIX = "agent:"  # a chat completion's model that names an agent: "agent:support"


class AgentOut(BaseModel):
    name: str
    route: str
    tools: list[str]
    memory: bool
    description: str = Field(description="the first line of the agent's instructions")


class AgentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AgentOut]


class AgentRunRequest(BaseModel):
    task: Annotated[str, Field(min_length=1, max_length=8192, pattern=NOT_BLANK), Storable] = Field(
        json_schema_extra={"pattern": NOT_BLANK_STORABLE}
    )
    stream: bool = Field(False, description="server-sent events as the run goes, then [DONE]")

    model_config = {"extra": "forbid"}


class AgentRunOut(BaseModel):
    id: str
    object: Literal["agent.run"] = "agent.run"
    agent: str
    answer: str
    stop_reason: str
    error: str | None = None
    steps: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]
    usage: dict[str, int]
    cost_usd: float
    models: list[dict[str, Any]]
    guards: list[dict[str, Any]] | None = None


@router.get(
    "/v1/agents",
    response_model=AgentList,
    summary="The agents the spec declares",
    responses=error_responses(*AUTHENTICATED),
)
async def list_agents(ctx: Ctx, principal: Caller) -> AgentList:
    await admit(ctx, principal, "query")
    return AgentList(
        data=[
            AgentOut(
                name=name,
                route=a.route,
                tools=list(a.tools),
                memory=a.memory,
                description=a.instructions.strip().splitlines()[0] if a.instructions.strip() else "",
            )
            for name, a in ctx.app.spec.agents.items()
        ]
    )


@router.post(
    "/v1/agents/{name}/runs",
    response_model=AgentRunOut,
    summary="Run an agent on a task",
    responses=error_responses(*WITH_BODY, 404, 502, 504),
)
async def run_agent(
    body: AgentRunRequest,
    ctx: Ctx,
    principal: Caller,
    request: Request,
    name: Annotated[str, Path(max_length=64)],
) -> AgentRunOut | EventStreamResponse:
    pipeline, call, run, start = await _prepared(ctx, principal, request, name, body.task, (), body.stream)
    if body.stream:
        await pipeline.start(call, check=start.check, generate=start.generate)
        assert call.events is not None
        return EventStreamResponse(_events(pipeline, call, run, call.events))
    await pipeline.run(call, check=start.check, generate=start.generate)
    return _run_out(call, run)


async def agent_completion(
    body: ChatCompletionRequest, ctx: Ctx, principal: Caller, request: Request
) -> dict[str, Any] | EventStreamResponse:
    """A chat completion answered by the agent ``body.model`` names (``agent:<name>``)."""
    name = body.model.removeprefix(AGENT_PREFIX)
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users or not body.messages[users[-1]].text().strip():
        raise APIError(
            422, "invalid_request", "messages: an agent needs a last user message", param="messages"
        )
    task = body.messages[users[-1]].text()
    history = tuple(
        Message(m.role, m.text()) for m in body.messages[: users[-1]] if m.role in ("user", "assistant")
    )
    pipeline, call, run, start = await _prepared(ctx, principal, request, name, task, history, body.stream)
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    if body.stream:
        await pipeline.start(call, check=start.check, generate=start.generate)
        assert call.events is not None
        return EventStreamResponse(_chat_chunks(pipeline, call, run, call.events, completion_id, body.model))
    await pipeline.run(call, check=start.check, generate=start.generate)
    outcome = call.outcome
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": outcome.text},
                "finish_reason": outcome.finish,
            }
        ],
        "usage": _usage(outcome),
        "stanchion": {"cost_usd": outcome.cost, "models": outcome.models_json(), **outcome.detail},
    }


class _Steps:
    """The endpoint's check and generate steps for one run."""

    def __init__(
        self, ctx: Ctx, name: str, history: tuple[Message, ...], stream: bool, run: AgentRun
    ) -> None:
        self.ctx, self.name, self.history, self.stream, self.run = ctx, name, history, stream, run
        self.task = run.task

    async def check(self, call: Call) -> None:
        # The task and its history as the input guards left them (an attack stripped).
        self.task = self.run.task = call.inputs[-1].content
        self.history = tuple(call.inputs[:-1])

    async def generate(self, call: Call) -> None:
        agent = await self.ctx.agent(self.name)
        if self.stream:
            call.events = agent.events(
                self.task, call.context, history=self.history, session=call.conversation, run=self.run
            )
            return
        await agent.run(
            self.task, call.context, history=self.history, session=call.conversation, run=self.run
        )
        _fill(call, self.run)


async def _prepared(
    ctx: Ctx,
    principal: Caller,
    request: Request,
    name: str,
    task: str,
    history: tuple[Message, ...],
    stream: bool,
) -> tuple[Pipeline, Call, AgentRun, _Steps]:
    spec = ctx.app.spec.agents.get(name)
    if spec is None:
        known = ", ".join(ctx.app.spec.agents) or "none"
        raise APIError(404, "not_found", f"no agent named {name!r} (agents: {known})")
    try:
        await ctx.agent(name)  # a tool or model the spec cannot build: a clear error before the run
    except SpecError as exc:
        raise from_stanchion(exc) from None
    messages = [*history, Message("user", task)]
    reserve = token_reserve(ctx.app.spec, spec.route, messages)
    call = Call(
        request_context(principal, route=spec.route, budget=reserve),
        "agents.run",
        query=task,
        stream=stream,
        tokens=reserve,
        in_flight=True,
        inputs=(*history, Message("user", task)),  # all checked; the history explains PII in answers
        conversation=conversation_id(request.headers),
    )
    run = AgentRun(name, task)
    return ctx.request_pipeline, call, run, _Steps(ctx, name, history, stream, run)


def _fill(call: Call, run: AgentRun) -> None:
    """The call's outcome from a finished run: answer, tokens and cost per model, the audit's steps."""
    outcome = call.outcome
    outcome.text = run.answer
    outcome.usage, outcome.costs = run.usage, run.costs
    outcome.model = run.models[-1] if run.models else ""
    outcome.finish = "stop" if run.stop_reason == "answered" else "length"
    outcome.detail["agent"] = {
        "name": run.agent,
        "stop_reason": run.stop_reason,
        "steps": [
            {
                "step": s["step"],
                **({"tool_calls": [{"name": t.name, "ok": t.ok} for t in run.tool_calls if t.step == s["step"]]}
                   if "tool_calls" in s else {"check": s.get("check", {}).get("ok")}),
            }
            for s in run.steps
        ],
    }  # fmt: skip
    call.evidence += [t.result for t in run.tool_calls if t.ok] + run.recalled
    call.guards += run.findings


def _run_out(call: Call, run: AgentRun) -> AgentRunOut:
    data = run.as_json()
    return AgentRunOut(
        id="run-" + uuid.uuid4().hex,
        agent=run.agent,
        answer=call.outcome.text,  # as the output guards left it
        stop_reason=run.stop_reason,
        error=run.error or None,
        steps=data["steps"],
        tool_calls=data["tool_calls"],
        usage=data["usage"],
        cost_usd=run.cost_usd,
        models=data["models"],
        guards=call.guards or None,
    )


def _usage(outcome: Outcome) -> dict[str, int]:
    u = outcome.usage
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
    }


def _events(
    pipeline: Pipeline, call: Call, run: AgentRun, events: AsyncIterator[AgentEvent]
) -> AsyncGenerator[bytes, None]:
    """The run's events as SSE."""

    def frame(item: AgentEvent) -> bytes:
        return event(item.as_json()) + (DONE if item.kind == "stop" else b"")

    return _streamed(pipeline, call, run, events, frame)


def _chat_chunks(
    pipeline: Pipeline,
    call: Call,
    run: AgentRun,
    events: AsyncIterator[AgentEvent],
    completion_id: str,
    model: str,
) -> AsyncGenerator[bytes, None]:
    """An agent's run as chat.completion.chunk frames: its answer as the content, each step as a
    ``stanchion`` field on a chunk without content (clients that know it can show progress)."""
    frames = ChunkFramer(completion_id, int(time.time()), model)

    def frame(item: AgentEvent) -> bytes:
        if item.kind == "answer":
            return frames.text(str(item.data["text"]))
        if item.kind == "stop":
            return frames.chunk({}, call.outcome.finish, stanchion={"agent": item.as_json()}) + DONE
        return frames.chunk({}, None, stanchion={"agent": item.as_json()})

    return _streamed(pipeline, call, run, events, frame)


async def _streamed(
    pipeline: Pipeline,
    call: Call,
    run: AgentRun,
    events: AsyncIterator[AgentEvent],
    frame: Callable[[AgentEvent], bytes],
) -> AsyncGenerator[bytes, None]:
    """A run's events written by ``frame``; the outcome filled in at its ``stop``, an error as the
    stream's last event, and the pipeline closed (guards' records, accounting) however it ends."""
    try:
        async for item in events:
            if item.kind == "stop":
                _fill(call, run)
            yield frame(item)
    except Exception as exc:
        api = from_stanchion(exc) if isinstance(exc, StanchionError) else unhandled(exc)
        call.outcome.status = api.status
        yield failure_events(api)
    except (asyncio.CancelledError, GeneratorExit):
        call.outcome.status = 499
        raise
    finally:
        await pipeline.close(call)
