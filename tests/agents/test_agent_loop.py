"""The agent loop with a scripted model: tool calls and their errors, limits, the draft check,
the injection screen on tool results and memory, each with a stop reason."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from stanchion.agents import Agent, AgentParts, AgentRun
from stanchion.app import build
from stanchion.errors import ModelTimeout, ToolError
from stanchion.models.base import BaseChatModel, Capabilities, ChatOptions
from stanchion.request_context import RequestContext
from stanchion.spec import AgentSpec, Spec
from stanchion.tools.base import ToolResult
from stanchion.types import Completion, Message, StreamEvent, ToolCall, ToolSpec, Usage

CONTEXT = RequestContext("acme", "alice")
Step = Completion | BaseException | float  # a float: sleep that long, then answer "late"


class ScriptedModel(BaseChatModel):
    """Answers each call with the next step of its script (the last one repeats)."""

    capabilities = Capabilities(tools=True)

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.calls: list[list[Message]] = []

    @property
    def name(self) -> str:
        return "scripted"

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        self.calls.append(list(messages))
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, float):
            await asyncio.sleep(step)
            return Completion("late", "scripted")
        return step

    async def stream(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Any:
        completion = await self.complete(messages, options)
        yield StreamEvent(text=completion.text, finish_reason="stop")


def calls(*pairs: tuple[str, dict[str, Any]]) -> Completion:
    return Completion(
        "",
        "scripted",
        Usage(10, 5),
        tool_calls=tuple(ToolCall(f"c{i}", n, a) for i, (n, a) in enumerate(pairs)),
    )


def answer(text: str) -> Completion:
    return Completion(text, "scripted", Usage(20, 10))


SPECS = [
    ToolSpec("count", "Count tickets", {"type": "object", "properties": {"status": {"type": "string"}}}),
    ToolSpec("lookup", "Look a page up", {"type": "object", "properties": {"q": {"type": "string"}}}),
]


def tools(**extra: Any) -> Any:
    def call(name: str, arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        if name == "count":
            if arguments.get("status") not in ("open", "closed"):
                raise ToolError("status: give open or closed", tool=name)
            return ToolResult("3 tickets" if arguments["status"] == "open" else "12 tickets")
        if name in extra:
            return extra[name](arguments, context)  # type: ignore[no-any-return]
        return ToolResult(f"page about {arguments.get('q')}")

    return call


def agent(model: ScriptedModel, *, call_tool: Any = None, **spec: Any) -> Agent:
    spec.setdefault("instructions", "You answer support questions with the tools.")
    spec.setdefault("tools", ["count", "lookup"])
    parts = AgentParts(model=model, tools=SPECS, call_tool=call_tool or tools(), prices={})
    return Agent("support", AgentSpec(**spec), parts)


def run(a: Agent, task: str = "How many open tickets?") -> AgentRun:
    return asyncio.run(a.run(task, CONTEXT))


def test_a_tool_result_goes_back_and_the_answer_ends_the_run() -> None:
    model = ScriptedModel(calls(("count", {"status": "open"})), answer("There are 3 open tickets."))
    result = run(agent(model))
    assert result.stop_reason == "answered" and result.answer == "There are 3 open tickets."
    assert [t.name for t in result.tool_calls] == ["count"] and result.tool_calls[0].result == "3 tickets"
    second = model.calls[1]
    assert second[-1].role == "tool" and second[-1].content == "3 tickets" and second[-1].tool_call_id == "c0"
    assert result.usage.total_tokens == 45 and result.steps[0] == {"step": 1, "tool_calls": ["count"]}


def test_parallel_tool_calls_run_at_once() -> None:
    barrier = threading.Barrier(2, timeout=10)

    def meet(arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        barrier.wait()  # both calls must be running at the same time to pass
        return ToolResult("met")

    model = ScriptedModel(calls(("meet", {}), ("meet", {})), answer("Both met."))
    result = run(agent(model, tools=["meet"], call_tool=tools(meet=meet)))
    assert [t.ok for t in result.tool_calls] == [True, True], result.tool_calls


def test_errors_go_back_to_the_model_and_the_run_goes_on() -> None:
    model = ScriptedModel(
        calls(("count", {"status": "everything"}), ("nope", {}), ("lookup", {"q": "x"})),
        calls(("count", {"status": "open"})),
        answer("There are 3 open tickets."),
    )
    result = run(agent(model))
    assert result.stop_reason == "answered"
    bad_args, unknown, fine, corrected = result.tool_calls
    assert not bad_args.ok and "status: give open or closed" in bad_args.error
    assert not unknown.ok and "no such tool" in unknown.error and "count, lookup" in unknown.error
    assert fine.ok and corrected.ok
    told = [m.content for m in model.calls[1] if m.role == "tool"]
    assert told[0].startswith("error:") and told[2] == "page about x"


def test_a_tool_that_crashes_is_an_error_result_not_a_crash() -> None:
    def boom(arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        raise RuntimeError("bug")

    model = ScriptedModel(calls(("boom", {})), answer("The boom tool failed, so I cannot say."))
    result = run(agent(model, tools=["boom"], call_tool=tools(boom=boom)))
    assert (
        result.stop_reason == "answered" and result.tool_calls[0].error == "tool boom failed (RuntimeError)"
    )


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_steps": 3}, "max_steps"),
        ({"max_tool_calls": 4}, "max_tool_calls"),
        ({"max_cost_usd": 0.0001}, "max_cost"),
    ],
)
def test_a_model_that_never_stops_is_stopped_by_a_limit(limits: dict[str, Any], reason: str) -> None:
    model = ScriptedModel(calls(("lookup", {"q": "more"}), ("lookup", {"q": "again"})))
    a = agent(model, limits=limits)
    a.parts = AgentParts(model=model, tools=SPECS, call_tool=tools(), prices={"scripted": _price()})
    result = run(a)
    assert result.stop_reason == reason
    if reason == "max_steps":
        assert len(model.calls) == 3
    if reason == "max_tool_calls":
        assert len(result.tool_calls) == 4


def _price() -> Any:
    from stanchion.spec import PriceSpec

    return PriceSpec(input_per_mtok=10.0, output_per_mtok=10.0)


def test_time_and_model_failures_end_the_run_with_their_reason() -> None:
    slow = run(agent(ScriptedModel(5.0), limits={"max_seconds": 0.2}))
    assert slow.stop_reason == "max_seconds" and slow.answer == ""
    failed = run(agent(ScriptedModel(ModelTimeout("slow", model="m"))))
    assert failed.stop_reason == "model_error" and "slow" in failed.error


def test_the_check_sends_a_made_up_figure_back_and_the_revision_passes() -> None:
    model = ScriptedModel(
        calls(("count", {"status": "open"})),
        answer("There are 7 open tickets."),
        answer("There are 3 open tickets."),
    )
    result = run(agent(model))
    assert result.stop_reason == "answered" and result.answer == "There are 3 open tickets."
    first_draft = result.steps[1]
    assert first_draft["check"]["ok"] is False and "7" in first_draft["check"]["problems"][0]
    assert model.calls[2][-1].role == "user" and "no tool result holds" in model.calls[2][-1].content
    assert result.steps[2]["check"] == {"ok": True, "problems": []}


def test_without_the_check_the_first_draft_stands() -> None:
    model = ScriptedModel(calls(("count", {"status": "open"})), answer("There are 7 open tickets."))
    result = run(agent(model, check=False))
    assert result.answer == "There are 7 open tickets." and len(model.calls) == 2


def test_the_check_gives_up_after_two_revisions() -> None:
    model = ScriptedModel(calls(("count", {"status": "open"})), answer("There are 7 open tickets."))
    result = run(agent(model))
    assert result.stop_reason == "answered" and len(model.calls) == 4  # tool step, draft, 2 revisions


def test_tool_results_pass_the_injection_screen() -> None:
    seen: list[tuple[str, str]] = []

    def screen(tool: str, text: str) -> tuple[str, dict[str, Any] | None]:
        seen.append((tool, text))
        return "[withheld]", {"guard": "injection", "tool": tool, "action": "withheld"}

    model = ScriptedModel(calls(("lookup", {"q": "x"})), answer("Nothing usable."))
    a = agent(model)
    a.parts = AgentParts(model=model, tools=SPECS, call_tool=tools(), prices={}, screen=screen)
    result = run(a)
    assert seen == [("lookup", "page about x")]
    assert model.calls[1][-1].content == "[withheld]" and result.findings[0]["action"] == "withheld"


def test_memory_is_recalled_into_the_prompt_and_the_task_remembered() -> None:
    remembered: list[tuple[str, str, list[str]]] = []
    model = ScriptedModel(answer("Hello Alice."))
    a = agent(model, memory=True)
    a.parts = AgentParts(
        model=model,
        tools=SPECS,
        call_tool=tools(),
        prices={},
        recall=lambda tenant, user, query: ["Prefers answers in French."] if user == "alice" else [],
        remember=lambda tenant, user, messages: remembered.append(
            (tenant, user, [m.content for m in messages])
        ),
    )
    result = run(a, "I moved to Lyon. Hello!")
    assert "Prefers answers in French." in model.calls[0][0].content and result.memories == 1
    assert remembered == [("acme", "alice", ["I moved to Lyon. Hello!", "Hello Alice."])]


def test_the_app_builds_agents_from_the_spec_with_real_tools(tmp_path: Path) -> None:
    spec = Spec.model_validate(
        {
            "tools": {"calc": {"tool": "calculator"}},
            "agents": {"maths": {"instructions": "Compute with the calculator.", "tools": ["calc"]}},
            "base_dir": tmp_path,
            "server": {"state_path": str(tmp_path / "state.db")},
            "index": {"path": str(tmp_path / "index.db")},
        }
    )
    app = build(spec)
    try:
        a = app.agent("maths")
        model = ScriptedModel(calls(("calc", {"expression": "2 ** 10 + 1"})), answer("It is 1025."))
        a.parts = AgentParts(model=model, tools=a.parts.tools, call_tool=a.parts.call_tool, prices={})
        result = run(a, "What is 2 to the 10th plus one?")
        assert result.stop_reason == "answered" and "1025" in result.tool_calls[0].result
        with pytest.raises(Exception, match="no agent named 'nope'"):
            app.agent("nope")
    finally:
        app.close()


def test_the_spec_refuses_agents_naming_unknown_parts() -> None:
    with pytest.raises(Exception, match=r"agents.a.tools: unknown tool 'sql'"):
        Spec.model_validate({"agents": {"a": {"instructions": "x", "tools": ["sql"]}}})
    with pytest.raises(Exception, match=r"agents.a.route: unknown route 'big'"):
        Spec.model_validate({"agents": {"a": {"instructions": "x", "route": "big"}}})


def test_figures_compare_in_one_spelling_and_derived_ones_pass() -> None:
    from stanchion.agents.check import DraftCheck, figures
    from stanchion.agents.run import ToolRecord

    assert figures("Paid 1,577.50 on 2 items [3], see:\n1. the list") == {"1577.5", "2"}
    records = [ToolRecord(1, "c0", "count", {}, result="open: 3; closed: 12; spend 1,577.50")]
    check = DraftCheck()
    assert (
        check.grounding(
            "How many?", "15 tickets in all, 3 open (a quarter of the 12 closed: 25%); spend 1577.5.", records
        )
        == []
    )
    problems = check.grounding("How many?", "There are 17 tickets.", records)
    assert len(problems) == 1 and "17" in problems[0]


def test_a_tool_reads_a_relative_database_path_from_the_specs_folder(tmp_path: Path) -> None:
    import shutil

    import stanchion

    shutil.copy(Path(stanchion.__file__).parent / "sample" / "tickets.db", tmp_path / "tickets.db")
    spec = Spec.model_validate(
        {
            "tools": {
                "tickets": {"tool": "sql", "options": {"database": "tickets.db", "tenant_column": "tenant"}}
            },
            "base_dir": tmp_path,
            "index": {"path": str(tmp_path / "index.db")},
        }
    )
    app = build(spec)
    try:
        result = app.tools.call(
            "tickets", {"query": "SELECT count(*) AS n FROM tickets"}, RequestContext("default")
        )
        assert result.data["rows"] == [[40]]  # the default tenant's tickets only
    finally:
        app.close()


def test_a_session_keeps_its_turns_and_summarises_past_the_budget(tmp_path: Path) -> None:
    spec = Spec.model_validate(
        {
            "tools": {"calc": {"tool": "calculator"}},
            "agents": {"maths": {"instructions": "Compute.", "tools": ["calc"], "history_tokens": 100}},
            "base_dir": tmp_path,
            "server": {"state_path": str(tmp_path / "state.db")},
            "index": {"path": str(tmp_path / "index.db")},
        }
    )
    app = build(spec)
    try:
        base = app.agent("maths")
        model = ScriptedModel(answer("Noted: the budget is 4200 euros for the Lisbon offsite."))
        a = Agent("maths", base.spec, AgentParts(
            model=model, tools=base.parts.tools, call_tool=base.parts.call_tool, prices={},
            history=base.parts.history, record=base.parts.record,
        ))  # fmt: skip

        async def turns() -> None:
            for n in range(6):
                task = (
                    f"Turn {n}: the offsite budget is 4200 euros and it is in Lisbon, remember that please."
                )
                await a.run(task, CONTEXT, session="s1")
            await a.run("And the next step?", RequestContext("acme", "bob"), session="s1")

        asyncio.run(turns())
        sixth = model.calls[5]
        assert sixth[1].role == "system" and sixth[1].content.startswith(
            "Summary of the earlier conversation"
        )
        assert "Turn 4" in sixth[-3].content and sixth[-1].content.startswith(
            "Turn 5"
        )  # the latest kept whole
        bobs = model.calls[6]
        assert [m.role for m in bobs] == ["system", "user"]  # another user's session of the same id: empty
    finally:
        app.close()
