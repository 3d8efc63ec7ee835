"""Rich rendering for the CLI: progress bars, summaries and result tables."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:  # types only: importing the answer pipeline would slow every command down
    from stanchion.answer import Answer
    from stanchion.evals.retrieval import RetrievalReport
    from stanchion.ingest.pipeline import IngestSummary
    from stanchion.retrieve.search import SearchResult


class IngestProgressBar:
    """Progress bars for files, embeddings (and eval queries); implements pipeline.Progress."""

    def __init__(self, console: Console, *, enabled: bool = True, queries: int = 0) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self._files = self._progress.add_task("files", total=None)
        self._chunks = self._progress.add_task("embedding", total=0)
        # Documents committed, batch by batch: searchable while the rest is still being read.
        self._written = self._progress.add_task("searchable", total=None)
        self._queries: TaskID | None = self._progress.add_task("queries", total=queries) if queries else None

    def __enter__(self) -> IngestProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def units(self, total: int) -> None:
        self._progress.update(self._files, total=total)

    def unit_done(self) -> None:
        self._progress.advance(self._files)

    def to_embed(self, count: int) -> None:
        task = self._progress.tasks[self._chunks]
        self._progress.update(self._chunks, total=(task.total or 0) + count)

    def embedded(self, count: int) -> None:
        self._progress.advance(self._chunks, count)

    def committed(self, documents: int, chunks: int) -> None:
        self._progress.advance(self._written, documents)

    def query_done(self) -> None:
        if self._queries is not None:
            self._progress.advance(self._queries)


def render_ingest_summary(console: Console, summary: IngestSummary) -> None:
    table = Table(title="ingest summary", show_header=False)
    rows = [
        ("documents written", summary.documents),
        ("chunks written", summary.chunks),
        ("chunks embedded / from cache", f"{summary.embedded} / {summary.cached}"),
        ("documents unchanged", summary.unchanged),
        ("files unchanged (not read)", summary.skipped),
        ("documents deleted", summary.deleted),
        ("duplicates merged (exact / near)", f"{summary.exact_duplicates} / {summary.near_duplicates}"),
        ("PII masked / chunks dropped", f"{summary.pii_masked} / {summary.pii_dropped}"),
        ("chunks flagged: prompt injection", summary.injection_flagged),
        ("failed files", len(summary.failed)),
        ("seconds", f"{summary.seconds:.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    for failure in summary.failed:
        console.print(f"[red]failed[/] {escape(failure.path)}: {escape(failure.reason)}", highlight=False)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def render_hits(console: Console, query: str, result: SearchResult, *, hint: str = "") -> None:
    """The hits, best first; with none, ``hint`` says why when the caller knows (an empty index)."""
    console.print(
        f"[bold]{escape(query)}[/]  ({result.mode}, {sum(result.timings_ms.values()):.1f} ms)",
        highlight=False,
    )
    if not result.hits:
        console.print("  no results" + (f": {escape(hint)}" if hint else ""), highlight=False)
    for hit in result.hits:
        meta = hit.chunk.metadata
        where = " > ".join(
            [
                str(meta.get("title") or hit.chunk.document_id),
                *[str(h) for h in meta.get("heading_path") or []][1:],
            ]
        )
        page = f" p.{meta['page']}" if meta.get("page") else ""
        snippet = " ".join(hit.chunk.text.split())[:240]
        console.print(
            f"[cyan]{hit.rank:>2}.[/] [bold]{where}[/]{page}  [dim]{hit.chunk.id} score={hit.score:.4f}[/]",
            highlight=False,
        )
        console.print(f"    {snippet}", highlight=False)


def render_answer(console: Console, answer: Answer) -> None:
    """A question, its cited answer, the sources behind each [n], and what it cost."""
    console.print()
    console.print(f"[bold]Q: {escape(answer.question)}[/]")
    console.print(f"A: {escape(answer.text)}", highlight=False)
    for c in answer.citations:
        where = c.path + (f" p.{c.page}" if c.page is not None else "")
        console.print(f"  [cyan][{c.number}][/] {escape(c.title or c.document_id)} [dim]{escape(where)}[/]")
    tokens = answer.usage.input_tokens + answer.usage.output_tokens
    console.print(
        f"  [dim]{escape(answer.model)}, {tokens} tokens, ${answer.cost_usd:.4f}, "
        f"{answer.latency_ms.get('total', 0.0):.0f} ms[/]"
    )


def render_retrieval_report(
    console: Console, dataset: Path, split: str, mode: str, report: RetrievalReport
) -> None:
    table = Table(title=f"{dataset.name} ({split}, {mode})", show_header=False)
    for name, value in report.as_json().items():
        if name == "passage_by_tag" and isinstance(value, dict):
            for tag, scores in value.items():
                table.add_row(f"passage [{tag}]", ", ".join(f"{k} {v}" for k, v in scores.items()))
            continue
        shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
        table.add_row(name, str(shown))
    console.print(table)
    if report.reused_index:
        console.print("[dim]index reused from the eval cache (same corpus and settings)[/]")
