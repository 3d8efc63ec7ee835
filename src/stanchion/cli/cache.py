"""``stanchion cache``: what the response cache holds and has saved, and emptying it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from stanchion.cache.backends import cache_path
from stanchion.cache.entry import CacheStats
from stanchion.cache.keys import cache_tenant
from stanchion.cli.common import JsonOption, SpecOption, fail, opened_app, out
from stanchion.errors import SpecError, StoreError
from stanchion.spec import Spec

__all__ = ["cache_app"]

_T = TypeVar("_T")

cache_app = typer.Typer(
    help="The response cache (routes with `cache:`): Redis when the server has one, else a SQLite file.",
    no_args_is_help=True,
)
TenantOption = Annotated[
    str | None, typer.Option("--tenant", "-t", help="Only this tenant (default: every tenant).")
]
# The counters `stats` shows, in this order; others the backend keeps follow.
COUNTERS = (
    "hit_exact",
    "hit_semantic",
    "miss",
    "near_miss",
    "stale",
    "bypass",
    "stored",
    "tokens_saved",
    "cost_saved_usd",
)


@cache_app.command("stats")
def stats(tenant: TenantOption = None, spec: SpecOption = None, as_json: JsonOption = False) -> None:
    """Entries held and, summed over every worker: hits per tier, misses, near-miss rejections,
    stale entries refused, and the tokens and cost the hits saved."""
    key = _tenant_key(tenant)
    with opened_app(spec) as stanchion:
        backend = stanchion.cache_backend
        result = _run(stanchion.spec, backend.stats(key))
        name = backend.name
    if tenant is not None and key is not None and key != tenant:  # hashed: shown as it was asked for
        result = CacheStats(
            {tenant: result.entries.get(key, 0)},
            {tenant: result.counters[key]} if key in result.counters else {},
        )
    if as_json:
        print(json.dumps(_stats_json(result, name)))
        return
    table = Table("tenant", "entries", *COUNTERS, "hit rate", title=f"response cache ({name})")
    for t, entries, counters, rate in _rows(result):
        table.add_row(
            escape(t),
            str(entries),
            *(_show(counters.get(c, 0.0)) for c in COUNTERS),
            f"{rate:.1%}" if rate is not None else "-",
        )
    out.print(table)


@cache_app.command("clear")
def clear(tenant: TenantOption = None, spec: SpecOption = None, as_json: JsonOption = False) -> None:
    """Remove the cached answers (of one tenant with --tenant, else all) and their counters."""
    key = _tenant_key(tenant)
    with opened_app(spec) as stanchion:
        removed = _run(stanchion.spec, stanchion.cache_backend.clear(key))
    if as_json:
        print(json.dumps({"removed": removed, "tenant": tenant}))
    else:
        who = f"tenant {escape(tenant)}" if tenant is not None else "every tenant"
        out.print(f"removed {removed} cached answers of {who}", highlight=False)


def _run(spec: Spec, work: Coroutine[Any, Any, _T]) -> _T:
    """``work``'s result; an error of the embedded cache names its file and the cause."""
    try:
        return asyncio.run(work)
    except StoreError as exc:
        if exc.backend != "sqlite" or not exc.detail:
            raise
        raise StoreError(
            f"{exc} ({cache_path(spec)}: {exc.detail}); it holds nothing that cannot be rebuilt:"
            " move the file away to start with an empty cache",
            backend=exc.backend,
            detail=exc.detail,
        ) from exc


def _tenant_key(tenant: str | None) -> str | None:
    """The backends' name for ``--tenant`` (None: every tenant). An empty one is an error, not
    every tenant: `--tenant "$T"` with T unset must not clear them all."""
    if tenant is None:
        return None
    if not tenant:
        raise fail(SpecError("--tenant: give a tenant name, or leave the option out for every tenant"))
    return cache_tenant(tenant)


def _rows(stats: CacheStats) -> list[tuple[str, int, dict[str, float], float | None]]:
    """Per tenant: entries, counters and the hit rate (hits over hits and misses)."""
    rows = []
    for t in sorted(set(stats.entries) | set(stats.counters)):
        counters = dict(stats.counters.get(t, {}))
        hits = counters.get("hit_exact", 0.0) + counters.get("hit_semantic", 0.0)
        lookups = hits + counters.get("miss", 0.0)
        rows.append((t, stats.entries.get(t, 0), counters, hits / lookups if lookups else None))
    return rows


def _stats_json(stats: CacheStats, backend: str) -> dict[str, object]:
    return {
        "backend": backend,
        "tenants": {
            t: {"entries": entries, "counters": counters, "hit_rate": rate}
            for t, entries, counters, rate in _rows(stats)
        },
    }


def _show(value: float) -> str:
    return f"{value:.6f}" if value and value != int(value) else str(int(value))
