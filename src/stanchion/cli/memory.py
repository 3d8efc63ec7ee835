"""``stanchion memory``: list and delete one user's long-term memories (operator commands).

The memories live in the server's state database (the spec's ``server.state_path``, or its
PostgreSQL); ``--tenant`` defaults to the CLI's tenant (``default``). Exit codes: 0 done, 2 usage
error or nothing to delete.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from stanchion.cli.common import JsonOption, SpecOption, err, opened_app, out
from stanchion.request_context import DEFAULT_TENANT

__all__ = ["memory_app"]

memory_app = typer.Typer(
    help="Long-term memory: the facts and preferences kept for each user.", no_args_is_help=True
)
UserOption = Annotated[str, typer.Option("--user", "-u", help="Whose memories (the API key's user).")]
TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="The user's tenant.")]


@memory_app.command("list")
def list_memories(
    user: UserOption,
    tenant: TenantOption = DEFAULT_TENANT,
    history: Annotated[
        bool, typer.Option("--history", help="Also the memories that later ones replaced.")
    ] = False,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """A user's memories, newest first."""
    from stanchion.memory.store import DatabaseMemoryStore

    with opened_app(spec) as stanchion:
        found = DatabaseMemoryStore(stanchion.state.db).memories(tenant, user, include_history=history)
    if as_json:
        print(json.dumps({"tenant": tenant, "user": user, "memories": [m.as_json() for m in found]}))
        return
    table = Table(
        "id", "kind", "slot", "text", "current", title=f"memories of {escape(user)} ({escape(tenant)})"
    )
    for m in found:
        table.add_row(m.id, m.kind, escape(m.slot), escape(m.text), "yes" if m.current else "replaced")
    out.print(table)


@memory_app.command("delete")
def delete_memories(
    user: UserOption,
    memory_id: Annotated[str | None, typer.Argument(help="The memory to forget (see `memory list`).")] = None,
    delete_all: Annotated[bool, typer.Option("--all", help="Forget every memory of the user.")] = False,
    tenant: TenantOption = DEFAULT_TENANT,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Forget one memory (a current one with its history) or, with --all, every one of the user."""
    if (memory_id is None) == (not delete_all):
        err.print("[bold red]error:[/] give a memory ID or --all (not both)")
        raise typer.Exit(2)
    from stanchion.memory.store import DatabaseMemoryStore

    with opened_app(spec) as stanchion:
        store = DatabaseMemoryStore(stanchion.state.db)
        if delete_all:
            deleted = store.delete_all(tenant, user)
        else:
            assert memory_id is not None
            deleted = store.delete(tenant, user, memory_id)
    if memory_id is not None and not deleted:
        err.print(
            f"[bold red]error:[/] no memory {escape(memory_id)!r} of user {escape(user)!r} in {escape(tenant)!r}"
        )
        raise typer.Exit(2)
    if as_json:
        print(json.dumps({"tenant": tenant, "user": user, "id": memory_id, "deleted": deleted}))
        return
    out.print(f"forgot {deleted} memor{'y' if deleted == 1 else 'ies'} of {escape(user)}")
