"""The ``stanchion`` command line: parse -> call the library -> render. No logic of its own.

Exit codes: 0 success, 1 partial failure (some files could not be ingested), 2 usage or spec error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from stanchion.cli.common import (
    JsonOption,
    SpecOption,
    empty_index_hint,
    err,
    fail,
    load_app,
    opened_app,
    operator,
    out,
)
from stanchion.cli.render import (
    IngestProgressBar,
    render_hits,
    render_ingest_summary,
    render_retrieval_report,
)
from stanchion.errors import StanchionError
from stanchion.spec import SPEC_FILENAME, SourceSpec, Spec, load_spec

app = typer.Typer(
    name="stanchion",
    help="Stanchion: spec-driven RAG and an OpenAI-compatible LLM server over your private data. "
    "Every command reads ./stanchion.yaml "
    "(or --spec FILE, or built-in defaults).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
eval_app = typer.Typer(help="Measure quality and latency on labelled data.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress as JSON lines on stderr.")
    ] = False,
) -> None:
    from stanchion.logs import configure_logging

    configure_logging(logging.INFO if verbose else logging.WARNING)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write stanchion.yaml.")] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing spec.")] = False,
) -> None:
    """Write a commented starter stanchion.yaml."""
    from importlib.resources import files

    target = directory / SPEC_FILENAME
    if target.exists() and not force:
        err.print(f"[bold red]error:[/] {target} exists (use --force to overwrite)")
        raise typer.Exit(2)
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(files("stanchion").joinpath("templates/stanchion.yaml").read_text(encoding="utf-8"))
    out.print(f"wrote {target}; edit its sources, then run [bold]stanchion ingest[/]")


@app.command()
def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files or folders to ingest now, besides the spec's sources (see --paths-only)."),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help="Of the spec's sources, only this one (repeatable)."),
    ] = None,
    paths_only: Annotated[
        bool, typer.Option("--paths-only", help="Ingest only the PATHs given, none of the spec's sources.")
    ] = False,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load, clean, chunk and index sources. Unchanged files cost nothing on re-runs.

    Without arguments: every source of the spec. With PATHs: the spec's sources and the PATHs.
    A source that holds no file (an empty folder, a glob matching nothing) is reported as a warning.
    """
    if paths_only and not paths:
        err.print("[bold red]error:[/] --paths-only needs at least one PATH")
        raise typer.Exit(2)
    stanchion = load_app(spec)
    try:
        chosen = _sources(stanchion.spec, paths or [], source or [], paths_only=paths_only)
        with IngestProgressBar(err, enabled=not as_json and err.is_terminal) as bar:
            summary = stanchion.pipeline.run(chosen, progress=bar)
    except StanchionError as exc:
        raise fail(exc) from None
    finally:
        stanchion.close()
    if as_json:
        print(json.dumps(summary.as_json()))
    else:
        render_ingest_summary(out, summary)
    raise typer.Exit(1 if summary.failed else 0)


def _sources(
    spec: Spec, paths: list[Path], names: list[str], *, paths_only: bool = False
) -> list[SourceSpec]:
    """The spec's sources (or the ``names`` among them; none with ``paths_only``), then ``paths``."""
    chosen = [] if paths_only else [spec.source(n) for n in names] if names else list(spec.sources)
    declared = {spec.resolve(s.path).resolve(): s for s in spec.sources}
    for path in paths:
        resolved = path.expanduser().resolve()
        if resolved in declared:  # a spec source's own folder: ingest it with the spec's settings
            if declared[resolved] not in chosen:
                chosen.append(declared[resolved])
            continue
        # Ad-hoc paths become a source named after the folder; its id prefix stays stable across runs.
        # A name a spec source (or another path) already has gets a suffix from the path: two
        # sources of one name would each delete the other's documents as gone.
        name = _source_name(resolved)
        if name in {s.name for s in (*spec.sources, *chosen)}:
            name = f"{name}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"
        chosen.append(SourceSpec(name=name, path=str(resolved)))
    if not chosen:
        raise StanchionError(
            "nothing to ingest: give PATHs, or declare sources in stanchion.yaml (see `stanchion init`)"
        )
    return chosen


def _source_name(path: Path) -> str:
    name = "".join(
        c if c.isalnum() or c in "_.-" else "-" for c in (path.stem if path.is_file() else path.name)
    )
    return name.strip("-.") or "files"


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("--k", "-k", help="How many hits.")] = 10,
    mode: Annotated[
        str | None, typer.Option("--mode", "-m", help="bm25, dense or hybrid (default: the spec's).")
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter", "-f", help="Metadata filter: key=value, key=a,b, key!=v, key>=v, key<=v (repeatable)."
        ),
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", "-g", help="Search as a caller in these access groups (repeatable)."),
    ] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search the index (hybrid BM25 + vectors by default)."""
    from stanchion.core.filters import build_filter
    from stanchion.pipeline import Call, local_context, wiring

    with opened_app(spec) as stanchion:
        where = build_filter(filters or [], groups=group)
        call = Call(local_context(user=operator(), groups=group), "search", query=query)

        async def retrieve(call: Call) -> None:
            call.result = stanchion.retriever.search(
                query, k=k, mode=mode or stanchion.spec.retrieval.mode, where=where
            )

        asyncio.run(wiring.pipeline_for(stanchion).run(call, retrieve=retrieve))
        result = call.result
        hint = "" if result.hits else empty_index_hint(stanchion)
    if as_json:
        print(json.dumps({**_hits_json(result), **({"hint": hint} if hint else {})}))
    else:
        render_hits(out, query, result, hint=hint)


def _hits_json(result: object) -> dict[str, object]:
    from stanchion.retrieve.search import SearchResult

    assert isinstance(result, SearchResult)
    return {
        "mode": result.mode,
        "timings_ms": result.timings_ms,
        "hits": [
            {
                "rank": h.rank,
                "score": round(h.score, 6),
                "scores": {k: round(v, 6) for k, v in h.scores.items()},
                "chunk_id": h.chunk.id,
                "document_id": h.chunk.document_id,
                "title": h.chunk.metadata.get("title"),
                "text": h.chunk.text,
                "metadata": dict(h.chunk.metadata),
            }
            for h in result.hits
        ],
    }


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: Annotated[
        Path,
        typer.Option(
            "--dataset",
            "-d",
            help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or a collection folder "
            "(collection.yaml, queries.jsonl, qrels.tsv), e.g. bench/collections/debian-manuals.",
        ),
    ],
    split: Annotated[str, typer.Option("--split", help="qrels/SPLIT.tsv to score.")] = "test",
    mode: Annotated[str | None, typer.Option("--mode", "-m", help="bm25, dense or hybrid.")] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """nDCG@10, Recall@100, MRR@10 and query latency; for a collection also page/section hit@k.
    The index is cached by corpus content."""
    from stanchion.evals.collection import Collection, is_collection
    from stanchion.evals.retrieval import BeirDataset, run_retrieval_eval
    from stanchion.retrieve.search import MODES

    try:
        base = load_spec(spec)
        chosen = mode or base.retrieval.mode
        if chosen not in MODES:
            raise StanchionError(f"unknown mode {chosen!r}; choose one of {', '.join(MODES)}")
        data = Collection.load(dataset) if is_collection(dataset) else BeirDataset.load(dataset, split)
        with IngestProgressBar(err, enabled=err.is_terminal, queries=len(data.queries)) as bar:
            report = run_retrieval_eval(data, base, mode=chosen, progress=bar, on_query=bar.query_done)
    except StanchionError as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps(report.as_json()))
    else:
        render_retrieval_report(out, dataset, split, chosen, report)


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Where to keep the demo index (default: a cache folder).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest the bundled sample corpus (wiki, Slack, PDF, mail) and search it. No network, no keys."""
    from stanchion.demo import run_demo

    try:
        run_demo(out, err, workdir=workdir, as_json=as_json)
    except StanchionError as exc:
        raise fail(exc) from None


def _register_answer_commands() -> None:
    from stanchion.cli.agent import agent_app
    from stanchion.cli.answer import register
    from stanchion.cli.cache import cache_app
    from stanchion.cli.eval_agent_check import register as register_eval_agent_check
    from stanchion.cli.eval_cache import register as register_eval_cache
    from stanchion.cli.eval_injection import register as register_eval_injection
    from stanchion.cli.eval_memory import register as register_eval_memory
    from stanchion.cli.eval_pii import register as register_eval_pii
    from stanchion.cli.memory import memory_app
    from stanchion.cli.server import register as register_server
    from stanchion.cli.tools import tools_app

    register(app, eval_app)
    register_server(app)
    register_eval_agent_check(eval_app)
    register_eval_cache(eval_app)
    register_eval_injection(eval_app)
    register_eval_memory(eval_app)
    register_eval_pii(eval_app)
    app.add_typer(tools_app, name="tools")
    app.add_typer(cache_app, name="cache")
    app.add_typer(memory_app, name="memory")
    app.add_typer(agent_app, name="agent")
    try:
        from stanchion.cli.bench import bench_app
    except ImportError:  # pragma: no cover
        return
    app.add_typer(bench_app, name="bench")


_register_answer_commands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
