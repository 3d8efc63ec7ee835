"""``stanchion eval memory``: recall accuracy and latency of long-term memory on labelled
multi-session conversations (``stanchion.evals.memory``). Exit codes: 0 done, 2 usage error."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stanchion.cli.common import JsonOption, SpecOption, fail, load_app, out
from stanchion.errors import StanchionError


def register(eval_app: typer.Typer) -> None:
    eval_app.command("memory")(eval_memory)


def eval_memory(
    dataset: Annotated[
        Path | None,
        typer.Option("--dataset", "-d", help="JSONL of users (default: the packaged set of 120 questions)."),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Memories recalled per question.")] = 5,
    route: Annotated[
        str | None,
        typer.Option("--route", help="Extract with this route's model (JSON mode) instead of the rules."),
    ] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write each user's sessions to a fresh memory store, then ask each question: accuracy (the
    top-k holds the needed memory, not a replaced one nor another user's), p50/p95 recall ms."""
    from stanchion.core.embed import warm_for_serving
    from stanchion.evals.memory import evaluate, load_conversations
    from stanchion.memory import DatabaseMemoryStore, LLMExtractor, Memory
    from stanchion.state.db import SQLiteDatabase

    stanchion = load_app(spec)
    try:
        users = load_conversations(dataset)
        extractor = LLMExtractor(stanchion.route_model(route)) if route else None
        warm_for_serving(stanchion.embedder)
        with tempfile.TemporaryDirectory(prefix="stanchion-eval-memory-") as folder:
            store = DatabaseMemoryStore(SQLiteDatabase(Path(folder) / "memory.db"), owns_db=True)
            try:
                report: dict[str, Any] = evaluate(
                    Memory(store, stanchion.embedder, extractor=extractor), users, k=k
                )
            finally:
                store.close()
    except StanchionError as exc:
        raise fail(exc) from None
    finally:
        stanchion.close()
    report["dataset"] = str(dataset) if dataset else "stanchion/evals/memory_conversations.jsonl"
    if as_json:
        print(json.dumps(report))
        return
    table = Table(title=f"memory recall: {report['questions']} questions, {report['users']} users, top-{k}")
    table.add_column("questions")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    for kind, row in report["by_kind"].items():
        table.add_row(kind, str(row["questions"]), f"{row['accuracy']:.3f}")
    table.add_row("all", str(report["questions"]), f"{report['accuracy']:.3f}", style="bold")
    out.print(table)
    ms, full = report["recall_ms"], report["recall_with_embedding_ms"]
    out.print(
        f"top-1 accuracy {report['top1_accuracy']:.3f}; leaks {report['leaks']}; "
        f"recall p50 {ms['p50']:.1f} ms, p95 {ms['p95']:.1f} ms "
        f"(with the question's embedding: p50 {full['p50']:.1f} ms, p95 {full['p95']:.1f} ms); "
        f"background write {report['write_ms_per_session']:.0f} ms per session"
    )
