"""``stanchion tools``: the tools the spec offers a model, and one call of a tool by hand."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.markup import escape

from stanchion.cli.common import JsonOption, SpecOption, err, opened_app, operator, out

__all__ = ["tools_app"]

tools_app = typer.Typer(
    help="The tools a model may call (spec: tools:), found by entry point stanchion.tools.",
    no_args_is_help=True,
)


@tools_app.command("list")
def list_tools(spec: SpecOption = None, as_json: JsonOption = False) -> None:
    """Each tool the spec declares: its name, what it does and its arguments' JSON schema."""
    with opened_app(spec) as stanchion:
        specs = stanchion.tools.specs()
    if as_json:
        print(
            json.dumps(
                {
                    "tools": [
                        {"name": s.name, "description": s.description, "parameters": s.parameters}
                        for s in specs
                    ]
                }
            )
        )
        return
    for s in specs:
        arguments = ", ".join(s.parameters.get("properties", {}))
        out.print(f"[bold]{escape(s.name)}[/]({escape(arguments)})  {escape(s.description)}", highlight=False)


@tools_app.command("call")
def call_tool(
    name: Annotated[str, typer.Argument(help="The tool, as `stanchion tools list` names it.")],
    arguments: Annotated[
        str, typer.Argument(help='Its arguments as one JSON object, e.g. \'{"query": "refund policy"}\'.')
    ] = "{}",
    group: Annotated[
        list[str] | None,
        typer.Option("--group", "-g", help="Call as a caller in these access groups (repeatable)."),
    ] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run one tool as a model would, within the spec's default tenant (and --group's groups)."""
    from stanchion.pipeline import Call, local_context, wiring

    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        err.print(f"[bold red]error:[/] arguments are not JSON ({escape(str(exc))})", highlight=False)
        raise typer.Exit(2) from None
    with opened_app(spec) as stanchion:
        call = Call(local_context(user=operator(), groups=group), f"tools.{name}", query=arguments)

        async def generate(call: Call) -> None:
            call.result = stanchion.tools.call(name, parsed, call.context)

        asyncio.run(wiring.pipeline_for(stanchion).run(call, generate=generate))
        result = call.result
    if as_json:
        print(
            json.dumps(
                {
                    "tool": name,
                    "content": result.content,
                    "data": result.data,
                    "sources": list(result.sources),
                }
            )
        )
    else:
        out.print(escape(result.content), highlight=False)
