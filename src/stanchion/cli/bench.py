"""``stanchion bench``: load a chat completions endpoint, or measure what the gateway adds.

Exit codes: 0 every request succeeded, 1 some requests failed (the figures are still printed),
2 the benchmark could not run (bad option, a service or the gateway did not start).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from stanchion.cli.common import JsonOption, err, fail, out
from stanchion.errors import StanchionError

if TYPE_CHECKING:
    from stanchion.bench.gateway import CacheMode

bench_app = typer.Typer(
    help="Load benchmarks: drive an OpenAI-compatible endpoint, or measure the gateway's added latency.",
    no_args_is_help=True,
)

UsersOption = Annotated[int, typer.Option("--users", "-u", min=1, help="Concurrent virtual users.")]
DurationOption = Annotated[
    float, typer.Option("--duration", "-d", min=0.1, help="Measured seconds (after the warm-up).")
]
WarmupOption = Annotated[
    float,
    typer.Option("--warmup", min=0.0, help="Seconds before measuring; users start spread over them."),
]
StreamOption = Annotated[bool, typer.Option("--stream/--no-stream", help="SSE streaming or one JSON answer.")]


@bench_app.command("load")
def load(
    url: Annotated[str, typer.Option("--url", help="Base URL (http://host:port/v1) or the completions URL.")],
    users: UsersOption = 100,
    duration: DurationOption = 10.0,
    warmup: WarmupOption = 2.0,
    stream: StreamOption = True,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Route (or model) name to ask for.")
    ] = "passthrough",
    key: Annotated[
        str | None,
        typer.Option("--key", envvar="STANCHION_API_KEY", help="API key (Bearer).", show_default=False),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds per request.")] = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Closed-loop load: each user sends a chat completion, reads the whole answer, and repeats."""
    from stanchion.bench.loadgen import LoadConfig, run_load

    try:
        config = LoadConfig(
            url=url, users=users, duration_s=duration, warmup_s=warmup, stream=stream, model=model,
            api_key=key, timeout_s=timeout,
        )  # fmt: skip
    except ValueError as exc:
        raise _usage_error(str(exc)) from None
    err.print(f"{users} users, {warmup:g} s warm-up + {duration:g} s against {escape(url)}", highlight=False)
    try:
        result = run_load(config)
    except ValueError as exc:  # a bad URL or too few file descriptors
        raise _usage_error(str(exc)) from None
    report = result.to_dict()
    if as_json:
        print(json.dumps(report))
    else:
        _render_load(report)
    if result.errors:
        raise typer.Exit(1)


@bench_app.command("gateway")
def gateway(
    users: UsersOption = 100,
    duration: DurationOption = 10.0,
    backend: Annotated[
        str, typer.Option("--backend", "-b", help="sqlite, or postgres (with PostgreSQL and Redis).")
    ] = "sqlite",
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=1, max=64, help="Gateway worker processes.")
    ] = 1,
    warmup: WarmupOption = 3.0,
    stream: StreamOption = True,
    cache: Annotated[
        str,
        typer.Option(
            "--cache",
            help="Response cache on the route: off, exact, or semantic (exact + semantic tiers); "
            "in Redis with --backend postgres, else SQLite.",
        ),
    ] = "off",
    unique_prompts: Annotated[
        bool | None,
        typer.Option(
            "--unique-prompts/--same-prompt",
            help="A question of its own per request (every cache lookup misses), or one for all. "
            "Default: unique with --cache, the same without.",
            show_default=False,
        ),
    ] = None,
    guards: Annotated[
        bool,
        typer.Option(
            "--guards/--no-guards",
            help="PII masking and the injection check on the route (guards: {pii: {}, injection: {}}); "
            "every prompt then holds a name and an e-mail address.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Same load straight at a fake upstream, then through `stanchion serve`; reports the added latency."""
    from stanchion.bench.gateway import run_gateway_bench
    from stanchion.testing.services import ServiceUnavailable

    chosen = _backend(backend)
    cache_mode = _cache_mode(cache)
    err.print(
        f"{users} users x 2 runs of {warmup:g} s warm-up + {duration:g} s ({chosen}, {workers} workers, "
        f"cache {cache_mode}{', guards on' if guards else ''})"
    )
    try:
        report = run_gateway_bench(
            users, duration, chosen, workers, stream, warmup_s=warmup, cache=cache_mode,
            unique_prompts=unique_prompts, guards=guards,
        )  # fmt: skip
    except StanchionError as exc:
        raise fail(exc) from None
    except (ServiceUnavailable, ValueError) as exc:
        raise _usage_error(str(exc)) from None
    if as_json:
        print(json.dumps(report))
    else:
        _render_gateway(report)
    if report["errors"] or report["direct"]["errors"]:
        raise typer.Exit(1)


def _backend(name: str) -> Literal["sqlite", "postgres"]:
    if name == "sqlite":
        return "sqlite"
    if name == "postgres":
        return "postgres"
    raise _usage_error(f"--backend must be sqlite or postgres, not {name!r}")


def _cache_mode(name: str) -> CacheMode:
    from stanchion.bench.gateway import CACHE_MODES

    for mode in CACHE_MODES:
        if name == mode:
            return mode
    raise _usage_error(f"--cache must be one of {', '.join(CACHE_MODES)}, not {name!r}")


def _usage_error(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(2)


# --- rendering ---------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _percentile_row(table: Table, label: str, figures: dict[str, float | None] | None) -> None:
    if figures is not None:
        table.add_row(label, *(_ms(figures[k]) for k in ("p50", "p95", "p99")))


def _percentile_table(title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("ms")
    for name in ("p50", "p95", "p99"):
        table.add_column(name, justify="right")
    return table


def _summary_line(report: dict[str, Any]) -> str:
    kinds = ", ".join(f"{kind} {n}" for kind, n in report["error_kinds"].items())
    errors = f"{report['errors']} errors" + (f" ({escape(kinds)})" if kinds else "")
    return f"{report['users']} users, {report['requests']} requests, {errors}, {report['rps']:,.1f} req/s"


def _render_load(report: dict[str, Any]) -> None:
    table = _percentile_table("latency")
    _percentile_row(table, "end to end", report["latency_ms"])
    _percentile_row(table, "first token", report["ttft_ms"])
    out.print(table)
    out.print(_summary_line(report), highlight=False)
    out.print(f"client CPU {report['client_cpu_pct']:.0f}% of one core", highlight=False)


def _render_gateway(report: dict[str, Any]) -> None:
    prompts = "unique prompts" if report.get("unique_prompts") else "one prompt"
    title = f"gateway ({report['backend']}, {report['workers']} workers, cache {report.get('cache', 'off')}{', guards on' if report.get('guards') else ''}, {prompts})"
    table = _percentile_table(title)
    _percentile_row(table, "direct", report["direct_ms"])
    _percentile_row(table, "through gateway", report["gateway_ms"])
    _percentile_row(table, "added", report["added_ms"])
    _percentile_row(table, "first token, direct", report.get("ttft_direct_ms"))
    _percentile_row(table, "first token, gateway", report.get("ttft_gateway_ms"))
    _percentile_row(table, "first token, added", report.get("ttft_added_ms"))
    out.print(table)
    out.print(f"direct:  {_summary_line(report['direct'])}", highlight=False)
    out.print(f"gateway: {_summary_line(report)}", highlight=False)
