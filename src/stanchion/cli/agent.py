"""``stanchion agent``: the spec's agents, and one run of an agent on a task.

``agent run`` goes through the same request pipeline as the server's runs (the guards the spec
declares), shows each step as it happens (the tool calls, their results, the check), then the
answer. Exit codes: 0 answered, 1 stopped by a limit or a model failure (the reason is printed,
and in ``--json``), 2 usage or spec errors.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stanchion.cli.common import JsonOption, SpecOption, err, fail, load_app, operator, out
from stanchion.errors import StanchionError

if TYPE_CHECKING:
    from stanchion.agents import AgentEvent, AgentRun
    from stanchion.app import App

__all__ = ["agent_app", "render_event", "run_agent"]

agent_app = typer.Typer(
    help="Agents (spec: agents:): a model that calls tools until it answers, checking its drafts.",
    no_args_is_help=True,
)
_SHOWN = 300  # characters of a tool result shown per step


@agent_app.command("list")
def list_agents(spec: SpecOption = None, as_json: JsonOption = False) -> None:
    """Each agent the spec declares: its route, tools, memory and limits."""
    stanchion = load_app(spec)
    try:
        agents = stanchion.spec.agents
        if as_json:
            listed = [
                {
                    "name": n,
                    "route": a.route,
                    "tools": a.tools,
                    "memory": a.memory,
                    "limits": a.limits.model_dump(),
                }
                for n, a in agents.items()
            ]
            print(json.dumps({"agents": listed}))
            return
        if not agents:
            out.print("No agents: declare them under agents: in stanchion.yaml (see the README, Agents).")
            return
        table = Table("agent", "route", "tools", "memory", "max steps")
        for name, a in agents.items():
            table.add_row(
                name, a.route, ", ".join(a.tools) or "-", "yes" if a.memory else "no", str(a.limits.max_steps)
            )
        out.print(table)
    finally:
        stanchion.close()


@agent_app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="The agent (agents.<name> in the spec).")],
    task: Annotated[str, typer.Argument(help="What to do, in plain words.")],
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Whose run (memory is per user; default: your login).")
    ] = None,
    session: Annotated[
        str | None,
        typer.Option("--session", "-s", help="Continue this session: its earlier turns go with the task."),
    ] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run an agent on a task: each step as it happens, then the answer."""
    stanchion = load_app(spec)
    try:
        shown = None if as_json else out
        result = asyncio.run(
            run_agent(stanchion, name, task, user=user or operator(), show=shown, session=session or "")
        )
    except StanchionError as exc:
        raise fail(exc) from None
    finally:
        stanchion.close()
    if as_json:
        print(json.dumps(result.as_json()))
    elif result.stop_reason != "answered":
        err.print(
            f"[yellow]stopped:[/] {result.stop_reason}"
            + (f" ({escape(result.error)})" if result.error else "")
        )
    if result.stop_reason != "answered":
        raise typer.Exit(1)


async def run_agent(
    app: App, name: str, task: str, *, user: str, show: Console | None, session: str = ""
) -> AgentRun:
    """One run through the spec's request pipeline (guards included), each event rendered on
    ``show`` as it happens; memories are written before it returns (the CLI's loop then ends)."""
    from stanchion.agents import AgentRun
    from stanchion.pipeline import Call, local_context, wiring
    from stanchion.types import Message

    agent = app.agent(name)
    pipeline = wiring.pipeline_for(app)
    call = Call(
        local_context(user=user, route=agent.spec.route),
        "agents.run",
        query=task,
        inputs=(Message("user", task),),
    )
    result = AgentRun(name, task)

    async def generate(call: Call) -> None:
        async for event in agent.events(call.inputs[0].content, call.context, session=session, run=result):
            if show is not None:
                render_event(show, event)
        call.outcome.text, call.outcome.usage, call.outcome.costs = result.answer, result.usage, result.costs
        call.evidence += [t.result for t in result.tool_calls if t.ok] + result.recalled

    await pipeline.run(call, generate=generate)
    result.answer = call.outcome.text  # as the output guards left it
    result.findings += [g for g in call.guards if g not in result.findings]
    if agent.spec.memory:
        await app.memory_writer.flush()
    return result


def render_event(console: Console, event: AgentEvent) -> None:
    data = event.data
    if event.kind == "step":
        console.print(f"[dim]step {data['step']}[/]")
    elif event.kind == "tool_call":
        arguments = json.dumps(data["arguments"], ensure_ascii=False)
        console.print(f"  [cyan]→ {escape(str(data['name']))}[/] {escape(arguments)}", highlight=False)
    elif event.kind == "tool_result":
        text = " ".join(str(data["content"]).split())
        shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "…"
        mark = "[green]←[/]" if data["ok"] else "[red]← error[/]"
        console.print(f"  {mark} {escape(shown)}", highlight=False)
    elif event.kind == "check":
        if data["ok"]:
            console.print("  [green]check passed[/]")
        else:
            for problem in data["problems"]:
                console.print(f"  [yellow]check:[/] {escape(problem)}", highlight=False)
    elif event.kind == "answer":
        console.print()
        console.print(escape(str(data["text"])), highlight=False)
    elif event.kind == "stop":
        console.print(
            f"[dim]{data['stop_reason']}: {data['tool_calls']} tool calls, ${data['cost_usd']:.6f}[/]"
        )
