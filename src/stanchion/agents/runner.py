"""``Agent``: the loop that lets a model call tools until it answers or reaches a limit.

    agent = app.agent("support")
    run = await agent.run("How many open tickets mention refunds?", context)
    run.answer, run.stop_reason, run.tool_calls       # or: async for event in agent.events(...)

Each step is one model call on the agent's route (any ChatModel with tool calling; a route's
fallback chain and the PII guard's masking apply as to any call). A step that asks for tools runs
them, concurrently when it asks for several; each result (or its error, which the model reads
and may correct: bad arguments, an unknown tool, a tool that failed or ran out of time) passes
the injection guard's ``tool_results`` policy, then goes back to the model. A step that answers
gives a draft; the draft is checked (``agents/check.py``) and, when the check finds problems and
the limits allow, the agent is sent back with them, at most ``MAX_REVISIONS`` times. The run ends
with a stop reason either way: ``answered``, a limit (``max_steps``, ``max_tool_calls``,
``max_cost``, ``max_seconds``) or ``model_error``; a limit reached mid-task returns the last
draft, if any, and says which limit.

With ``memory: true`` the user's memories most relevant to the task are recalled into the system
prompt, and what the user states in the task is remembered in the background afterwards
(``memory/writer.py``): never on the answer's path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stanchion.agents.check import DraftCheck
from stanchion.agents.run import AgentEvent, AgentRun, StopReason, ToolRecord
from stanchion.errors import ModelError, StanchionError, ToolError
from stanchion.models.base import ChatModel, ChatOptions
from stanchion.models.openai_format import malformed_arguments
from stanchion.models.pricing import model_costs
from stanchion.request_context import RequestContext
from stanchion.spec import AgentSpec, PriceSpec
from stanchion.tools.base import ToolResult
from stanchion.types import Message, ToolCall, ToolSpec, Usage

__all__ = ["MAX_REVISIONS", "Agent", "AgentParts"]

MAX_REVISIONS = 2  # drafts sent back by the check, at most
MAX_RESULT_CHARS = 8000  # of one tool result, as the model reads it
_TOOL_TIMEOUT_S = 30.0  # one tool call, within the run's own time limit


@dataclass(frozen=True)
class AgentParts:
    """What an agent runs with, from the composition root. ``call_tool(name, arguments, context)``
    runs a tool (the spec's toolbox); ``screen`` applies the injection guard to a tool result
    (``InjectionCheck.screen_tool_result``; None: no guard); ``recall(tenant, user, query)`` gives
    the user's relevant memories and ``remember(tenant, user, messages)`` queues what to learn
    (both None without memory)."""

    model: ChatModel
    tools: Sequence[ToolSpec]
    call_tool: Callable[[str, Mapping[str, Any], RequestContext], ToolResult]
    prices: Mapping[str, PriceSpec]
    screen: Callable[[str, str], tuple[str, dict[str, Any] | None]] | None = None
    recall: Callable[[str, str, str], Sequence[str]] | None = None
    remember: Callable[[str, str, Sequence[Message]], object] | None = None
    # A session's history: ``history(tenant, user, session, budget)`` gives its summary and latest
    # turns within ``budget`` tokens; ``record(tenant, user, session, messages)`` adds a turn.
    history: Callable[[str, str, str, int], Awaitable[list[Message]]] | None = None
    record: Callable[[str, str, str, Sequence[Message]], None] | None = None


class Agent:
    def __init__(
        self, name: str, spec: AgentSpec, parts: AgentParts, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.spec = spec
        self.parts = parts
        self.check = DraftCheck(parts.model, spec.success_criteria, spec.instructions) if spec.check else None
        self._clock = clock

    async def run(
        self,
        task: str,
        context: RequestContext,
        *,
        history: Sequence[Message] = (),
        session: str = "",
        run: AgentRun | None = None,
    ) -> AgentRun:
        """The whole run (``events`` consumed); ``run`` (when given) is the one filled in."""
        state = _State(run or AgentRun(self.name, task))
        async for _ in self._events(task, context, history, session, state):
            pass
        return state.run

    async def events(
        self,
        task: str,
        context: RequestContext,
        *,
        history: Sequence[Message] = (),
        session: str = "",
        run: AgentRun | None = None,
    ) -> AsyncIterator[AgentEvent]:
        """The run's events as they happen; ``run`` (when given) is filled in as they go.
        ``history``: earlier turns the caller sends; ``session``: a session whose stored history
        (summarised past ``history_tokens``) goes before the task, and which keeps this turn."""
        state = _State(run or AgentRun(self.name, task))
        async for event in self._events(task, context, history, session, state):
            yield event

    async def _events(
        self, task: str, context: RequestContext, history: Sequence[Message], session: str, state: _State
    ) -> AsyncIterator[AgentEvent]:
        limits, run = self.spec.limits, state.run
        started = self._clock()
        kept = bool(session and context.user and self.parts.history and self.parts.record)
        if kept and not history:
            assert self.parts.history is not None
            history = await self.parts.history(
                context.tenant, context.user, session, self.spec.history_tokens
            )
        messages = [
            Message("system", await self._system(task, context, state)),
            *history,
            Message("user", task),
        ]
        revisions = 0
        stop: StopReason | None = None
        draft = ""
        for step in range(1, limits.max_steps + 1):
            stop = self._limit_reached(state, started)
            if stop is not None:
                break
            yield AgentEvent("step", {"step": step})
            budget = limits.max_tool_calls - len(run.tool_calls)
            options = ChatOptions(
                temperature=0.0,
                tools=tuple(self.parts.tools) if budget > 0 else (),
                tool_choice=self._tool_choice(step, budget),
                context=context,
                timeout_s=max(0.1, limits.max_seconds - (self._clock() - started)),
            )
            try:
                completion = await asyncio.wait_for(
                    self.parts.model.complete(messages, options), options.timeout_s
                )
            except TimeoutError:
                stop = "max_seconds"
                break
            except ModelError as exc:
                stop, run.error = "model_error", str(exc)
                break
            state.bill(completion.model, completion.usage, self.parts.prices)
            if completion.tool_calls:
                calls = completion.tool_calls[: max(budget, 0)]
                messages.append(Message("assistant", completion.text, tool_calls=calls))
                records = [ToolRecord(step, c.id, c.name, dict(c.arguments)) for c in calls]
                for record in records:
                    yield AgentEvent("tool_call", {"step": step, "id": record.id, "name": record.name,
                                                   "arguments": record.arguments})  # fmt: skip
                remaining = limits.max_seconds - (self._clock() - started)
                results = await asyncio.gather(*(self._call(c, context, remaining) for c in calls))
                for record, (content, result, error) in zip(records, results, strict=True):
                    content, finding = self._screened(record.name, content)
                    if finding is not None:
                        run.findings.append(finding)
                    record.ok, record.result, record.error = error == "", content if not error else "", error
                    record.sources = result.sources if result is not None else ()
                    run.tool_calls.append(record)
                    messages.append(Message("tool", content, tool_call_id=record.id, name=record.name))
                    yield AgentEvent("tool_result", {"step": step, "id": record.id, "name": record.name,
                                                     "ok": record.ok, "content": content})  # fmt: skip
                run.steps.append({"step": step, "tool_calls": [r.name for r in records]})
                if len(calls) < len(completion.tool_calls):
                    stop = "max_tool_calls"  # asked for more than the limit allows: its results stand
                    break
                continue
            draft = completion.text.strip()
            entry: dict[str, Any] = {"step": step, "draft": draft}
            run.steps.append(entry)
            if self.check is not None and revisions < MAX_REVISIONS and step < limits.max_steps:
                verdict = await self.check(task, draft, run.tool_calls, context)
                entry["check"] = {"ok": verdict.ok, "problems": list(verdict.problems)}
                if verdict.unjudged:
                    entry["check"]["unjudged"] = list(verdict.unjudged)
                yield AgentEvent("check", {"step": step, **entry["check"]})
                if not verdict.ok:
                    revisions += 1
                    feedback = "The check found:\n" + "\n".join(f"- {p}" for p in verdict.problems)
                    messages += [
                        Message("assistant", draft),
                        Message("user", feedback + "\nRevise your answer."),
                    ]
                    continue
            stop = "answered"
            break
        else:
            stop = stop or "max_steps"
        run.answer = (
            draft if stop in ("answered", "max_steps", "max_tool_calls", "max_cost", "max_seconds") else ""
        )
        run.stop_reason = stop or "max_steps"
        run.seconds = self._clock() - started
        if run.answer:
            yield AgentEvent("answer", {"text": run.answer})
        if kept and run.answer:
            assert self.parts.record is not None
            turn = [Message("user", task), Message("assistant", run.answer)]
            await asyncio.to_thread(self.parts.record, context.tenant, context.user, session, turn)
        self._learn(task, context, run)
        yield AgentEvent("stop", {"stop_reason": run.stop_reason, **({"error": run.error} if run.error else {}),
                                  "tool_calls": len(run.tool_calls), "cost_usd": run.cost_usd})  # fmt: skip

    def _tool_choice(self, step: int, budget: int) -> str | None:
        """``required`` on the first step when the spec says ``first_step: tool``, else ``auto``
        while tool calls are left; None without tools (the provider's default)."""
        if not self.parts.tools or budget <= 0:
            return None
        return "required" if step == 1 and self.spec.first_step == "tool" else "auto"

    def _limit_reached(self, state: _State, started: float) -> StopReason | None:
        limits = self.spec.limits
        if self._clock() - started >= limits.max_seconds:
            return "max_seconds"
        if limits.max_cost_usd is not None and state.run.cost_usd >= limits.max_cost_usd:
            return "max_cost"
        return None

    async def _system(self, task: str, context: RequestContext, state: _State) -> str:
        parts = [self.spec.instructions.strip()]
        if self.spec.success_criteria:
            parts.append(
                "A finished answer must:\n" + "\n".join(f"- {c}" for c in self.spec.success_criteria)
            )
        recall = self.parts.recall
        if self.spec.memory and recall is not None and context.user:
            try:
                remembered = await asyncio.to_thread(recall, context.tenant, context.user, task)
            except StanchionError:
                remembered = []  # memory is a help, never a reason to fail the run
            state.run.memories = len(remembered)
            state.run.recalled = list(remembered)
            if remembered:
                parts.append(
                    "What you know about this user from earlier conversations (the latest holds):\n"
                    + "\n".join(f"- {m}" for m in remembered)
                )
        return "\n\n".join(p for p in parts if p)

    def _learn(self, task: str, context: RequestContext, run: AgentRun) -> None:
        remember = self.parts.remember
        if self.spec.memory and remember is not None and context.user:
            remember(context.tenant, context.user, [Message("user", task), Message("assistant", run.answer)])

    async def _call(
        self, call: ToolCall, context: RequestContext, remaining_s: float
    ) -> tuple[str, ToolResult | None, str]:
        """(what the model reads, the result, the error or ""): never raises."""
        if call.name not in self.spec.tools:
            offered = ", ".join(self.spec.tools) or "none"
            error = f"tool {call.name}: this agent has no such tool; its tools: {offered}"
            return f"error: {error}", None, error
        malformed = malformed_arguments(call)
        if malformed is not None:
            error = f"tool {call.name}: {malformed}"
            return f"error: {error}", None, error
        timeout = max(0.1, min(_TOOL_TIMEOUT_S, remaining_s))
        try:
            result = await asyncio.wait_for(
                asyncio.to_thread(self.parts.call_tool, call.name, call.arguments, context), timeout
            )
        except TimeoutError:
            error = f"tool {call.name}: no result within {timeout:.0f} s"
            return f"error: {error}", None, error
        except (ToolError, StanchionError) as exc:
            return f"error: {exc}", None, str(exc)
        except Exception as exc:  # a tool's own bug: the model is told, the run goes on
            error = f"tool {call.name} failed ({type(exc).__name__})"
            return f"error: {error}", None, error
        content = result.content
        if len(content) > MAX_RESULT_CHARS:
            content = content[:MAX_RESULT_CHARS] + f"\n[cut at {MAX_RESULT_CHARS} characters]"
        return content, result, ""

    def _screened(self, tool: str, content: str) -> tuple[str, dict[str, Any] | None]:
        if self.parts.screen is None:
            return content, None
        return self.parts.screen(tool, content)


class _State:
    """A run being filled in, and the tokens it used per model."""

    def __init__(self, run: AgentRun) -> None:
        self.run = run

    def bill(self, model: str, usage: Usage, prices: Mapping[str, PriceSpec]) -> None:
        run = self.run
        run.usage = run.usage + usage.attributed(model)
        run.costs = tuple(model_costs(run.usage, prices))
        if model and model not in run.models:
            run.models += (model,)
