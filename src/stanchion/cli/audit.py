"""``stanchion audit show|prune``: read the audit log (and a period's usage), and apply retention."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from stanchion.cli.common import JsonOption, SpecOption, err, load_app, operator, out
from stanchion.server.audit import prune_record
from stanchion.state import AuditRecord

__all__ = ["audit_app", "parse_moment"]

audit_app = typer.Typer(
    help="Read the audit log (who asked what, at what cost) and delete old records.", no_args_is_help=True
)

_MOMENT_HELP = "ISO 8601 date or time (no zone means UTC), or Unix seconds."


def parse_moment(text: str, option: str) -> float:
    """Unix seconds from ``2026-11-01``, ``2026-11-01T09:30:00+01:00`` or ``1793491200``."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        err.print(f"[bold red]error:[/] {option}: {escape(text)!r} is not a date, a time or Unix seconds")
        raise typer.Exit(2) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@audit_app.command("show")
def show(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (default: every tenant).")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. chat.completions.")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user.")] = None,
    since: Annotated[str | None, typer.Option(help=f"Only records at or after this. {_MOMENT_HELP}")] = None,
    until: Annotated[str | None, typer.Option(help=f"Only records before this. {_MOMENT_HELP}")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many records.")] = 50,
    before: Annotated[
        int | None,
        typer.Option(min=1, help="Only records older than this id (the next page: the last id shown)."),
    ] = None,
    spec_file: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the audit log, newest first: who asked what, with which models and chunks, at what cost.

    With --tenant, also the tenant's totals over the same period. Secrets were redacted when each record was written.
    """
    start = parse_moment(since, "--since") if since else None
    end = parse_moment(until, "--until") if until else None
    system = load_app(spec_file)
    try:
        records = system.state.audit_log(
            tenant, action=action, user=user, since=start, until=end, before=before, limit=limit
        )
        usage = system.state.usage(tenant, since=start, until=end) if tenant else None
    finally:
        system.close()
    if as_json:
        print(json.dumps({"records": [r.as_json() for r in records], "usage": usage}))
        return
    out.print(_table(records))
    if usage is not None:
        out.print(
            f"{tenant}: {usage['requests']:.0f} record{'' if usage['requests'] == 1 else 's'}, "
            f"{usage['input_tokens']:.0f} tokens in, "
            f"{usage['output_tokens']:.0f} out, ${usage['cost_usd']:.4f}"
        )


@audit_app.command("prune")
def prune(
    before: Annotated[
        str | None, typer.Option(help=f"Delete records older than this. {_MOMENT_HELP}")
    ] = None,
    older_than_days: Annotated[
        float | None, typer.Option(min=0, help="Delete records older than this many days.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    spec_file: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete old audit records, in every tenant (the server does it hourly with server.audit_retention_days). The deletion itself is audited."""
    if (before is None) == (older_than_days is None):
        err.print("[bold red]error:[/] give one of --before or --older-than-days")
        raise typer.Exit(2)
    cutoff = parse_moment(before, "--before") if before else time.time() - (older_than_days or 0) * 86400
    when = datetime.fromtimestamp(cutoff, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if not yes and not typer.confirm(f"Delete every audit record older than {when}?"):
        raise typer.Exit(1)
    system = load_app(spec_file)
    try:
        deleted = system.state.prune_audit(cutoff)
        if deleted:
            system.state.audit([prune_record(deleted, cutoff, actor=operator())])
    finally:
        system.close()
    if as_json:
        print(json.dumps({"deleted": deleted, "before": cutoff}))
        return
    out.print(f"deleted {deleted} audit record{'' if deleted == 1 else 's'} older than {when}")


def _table(records: list[AuditRecord]) -> Table:
    """What fits an 80-column terminal; routes, chunks and latency are in ``--json``."""
    table = Table(box=None, header_style="bold", collapse_padding=True, pad_edge=False)
    for name in ("id", "at (UTC)", "tokens", "cost"):
        table.add_column(name, no_wrap=True)
    table.add_column("who", overflow="fold")
    table.add_column("action", no_wrap=True)
    table.add_column("query", min_width=16, overflow="fold")
    for r in records:
        failed = "" if 200 <= r.status < 300 else f" [red]{r.status}[/]"
        table.add_row(
            str(r.id),
            datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%d %H:%M"),
            f"{r.input_tokens}/{r.output_tokens}",
            f"${r.cost_usd:.4f}",
            escape(f"{r.tenant}/{r.user}"),
            escape(r.action) + failed,
            escape(r.query if len(r.query) <= 120 else r.query[:117] + "..."),
        )
    return table
