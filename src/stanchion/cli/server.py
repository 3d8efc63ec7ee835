"""``stanchion serve``, ``stanchion migrate`` and ``stanchion keys``: run and administer the API server."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from stanchion.app import App
from stanchion.cli.common import JsonOption, SpecOption, err, fail, load_app, operator, out
from stanchion.errors import StanchionError
from stanchion.state.records import SCOPES

if TYPE_CHECKING:
    from stanchion.state import ApiKey, AuditRecord

__all__ = ["register"]

LOG_LEVELS = ("debug", "info", "warning", "error")

keys_app = typer.Typer(
    help="Create, list and revoke API keys (stored hashed; a secret is shown once).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    from stanchion.cli.audit import audit_app

    app.command()(serve)
    app.command()(migrate)
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")


def serve(
    spec_file: SpecOption = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default: server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: server.workers).", min=1)
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the HTTP API (OpenAI-compatible) with N stateless worker processes.

    State lives in the index's database (SQLite file or PostgreSQL) and Redis, so workers share
    nothing in memory; SIGTERM drains in-flight requests (up to 30 s) before exiting.
    """
    import uvicorn

    from stanchion.server.asgi import LOG_LEVEL_ENV, SPEC_ENV
    from stanchion.server.metrics import prepare_multiprocess_dir

    if log_level not in LOG_LEVELS:
        err.print(f"[bold red]error:[/] --log-level {log_level!r}: choose one of {', '.join(LOG_LEVELS)}")
        raise typer.Exit(2)
    system = load_app(spec_file)
    settings = system.spec.server
    try:
        applied = _migrate(system)
        active = [k for k in system.state.api_keys() if k.active]
    except StanchionError as exc:
        raise fail(exc) from None
    finally:
        system.close()
    if applied:
        err.print(f"applied migrations: {', '.join(applied)}")
    if not active:
        err.print(
            "[yellow]no API keys yet:[/] create one with `stanchion keys create --tenant default --user you`"
        )
    if spec_file is not None:
        os.environ[SPEC_ENV] = str(spec_file.resolve())
    os.environ[LOG_LEVEL_ENV] = log_level
    count = workers or settings.workers
    prepare_multiprocess_dir()  # Prometheus counters from every worker, merged on /metrics
    uvicorn.run(
        "stanchion.server.asgi:app_factory",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=count,
        log_level=log_level,
        access_log=False,  # the server writes its own JSON access log with request ids
        timeout_graceful_shutdown=30,
        backlog=4096,
        timeout_keep_alive=30,
    )


def migrate(spec_file: SpecOption = None, as_json: JsonOption = False) -> None:
    """Create or upgrade the index and state schemas (ordered migrations; safe to run twice)."""
    system = load_app(spec_file)
    try:
        applied = _migrate(system)
    except StanchionError as exc:
        raise fail(exc) from None
    finally:
        system.close()
    if as_json:
        print(json.dumps({"backend": system.spec.index.backend, "applied": applied}))
    elif applied:
        out.print(f"applied: {', '.join(applied)}")
    else:
        out.print("schemas are up to date")


def _migrate(system: object) -> list[str]:
    from stanchion.app import App

    assert isinstance(system, App)
    applied = []
    if system.spec.index.backend == "postgres":
        from stanchion.index.pg_migrations import migrate as migrate_index

        assert system.spec.index.dsn is not None
        applied += migrate_index(system.spec.index.dsn, dim=system.embedder.dim)
    else:
        system.store  # noqa: B018 - opening the SQLite index applies its migrations
    applied += system.state.applied  # opening the state applies its migrations
    return applied


@keys_app.command("create")
def keys_create(
    tenant: Annotated[
        str, typer.Option(help="Tenant the key belongs to (sources name theirs with `tenant:`).")
    ],
    user: Annotated[str, typer.Option(help="The user the key acts for (recorded in the audit log).")],
    groups: Annotated[str, typer.Option(help="Comma-separated access groups, e.g. ops,finance.")] = "",
    scopes: Annotated[str, typer.Option(help=f"Comma-separated scopes from {', '.join(SCOPES)}.")] = "query",
    name: Annotated[str, typer.Option(help="A label for listings.")] = "",
    spec_file: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key. The secret is printed once and cannot be shown again."""
    chosen = [s.strip() for s in scopes.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        err.print(
            f"[bold red]error:[/] --scopes: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(SCOPES)}"
        )
        raise typer.Exit(2)
    system = load_app(spec_file)
    try:
        key, secret = system.state.create_key(
            tenant=tenant,
            user=user,
            groups=[g.strip() for g in groups.split(",") if g.strip()],
            scopes=chosen,
            name=name,
        )
        system.state.audit([_key_event("keys.create", key)])
        warning = _empty_tenant_warning(system, tenant)
    except StanchionError as exc:
        raise fail(exc) from None
    finally:
        system.close()
    if warning:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if as_json:
        print(json.dumps({**key.as_json(), "key": secret}))
        return
    out.print(f"created {key.id} for {tenant}/{user} (scopes: {', '.join(chosen)})")
    out.print(f"key: [bold]{secret}[/]  (shown once; store it now)")


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    spec_file: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (ids and prefixes only; secrets are never stored)."""
    system = load_app(spec_file)
    try:
        keys = system.state.api_keys(tenant)
    finally:
        system.close()
    if as_json:
        print(json.dumps([k.as_json() for k in keys]))
        return
    table = Table("id", "prefix", "tenant", "user", "groups", "scopes", "status")
    for k in keys:
        table.add_row(
            k.id,
            k.prefix,
            k.tenant,
            k.user,
            ",".join(k.groups),
            ",".join(k.scopes),
            "active" if k.active else "revoked",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (from `stanchion keys list`).")],
    spec_file: SpecOption = None,
) -> None:
    """Revoke a key; every worker refuses it within 2 seconds."""
    system = load_app(spec_file)
    try:
        revoked = system.state.revoke_key(key_id)
        if revoked is not None:
            system.state.audit([_key_event("keys.revoke", revoked)])
    finally:
        system.close()
    if revoked is None:
        err.print(f"[bold red]error:[/] no active key {key_id!r}")
        raise typer.Exit(2)
    out.print(f"revoked {key_id}")


def _empty_tenant_warning(system: App, tenant: str) -> str:
    """Why a new key would find nothing, when its tenant has no documents; else ""."""
    named = sorted({s.tenant for s in system.spec.sources})
    if tenant in named or system.store.documents(tenant=tenant, limit=1):
        return ""
    where = "the spec declares no sources"
    if named:
        where = f"the spec's sources belong to tenant{'s' * (len(named) > 1)} {', '.join(map(repr, named))}"
    return (
        f"tenant {tenant!r} has no documents ({where}, and the index holds none of its uploads): "
        f"this key's searches and answers find nothing until documents are ingested for {tenant!r} "
        "(a source with `tenant: ...` in the spec, or POST /v1/documents with an ingest key)"
    )


def _key_event(action: str, key: ApiKey) -> AuditRecord:
    """Key changes are audited like API actions; the actor is the operator at the command line."""
    from stanchion.state import AuditRecord

    detail: dict[str, object] = {"key_user": key.user, "scopes": list(key.scopes), "groups": list(key.groups)}
    return AuditRecord(action, key.tenant, operator(), key.id, "", 200, detail=detail)
