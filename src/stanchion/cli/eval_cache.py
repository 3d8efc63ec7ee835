"""``stanchion eval cache``: semantic-cache hit precision and recall on labelled pairs.

``register(eval_app)`` adds the command to ``stanchion eval``. Exit codes: 0 done, 2 usage error
(a file in no known layout, a bad threshold).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from stanchion.cli.common import JsonOption, SpecOption, err, fail, out
from stanchion.errors import SpecError, StanchionError


def register(eval_app: typer.Typer) -> None:
    eval_app.command("cache")(eval_cache)


def eval_cache(
    pairs: Annotated[
        str | None,
        typer.Option(
            "--pairs",
            "-p",
            help="Labelled pairs: an MRPC file (e.g. ../shared/data/mrpc/msr_paraphrase_train.txt), "
            "an STS-B file or folder (score >= 4 same, <= 2 different), a TSV with the header "
            "label, kind, question_a, question_b; or 'adversarial' (the default): the shipped set.",
        ),
    ] = None,
    layout: Annotated[
        str | None, typer.Option("--layout", help="mrpc, stsb or tsv (default: detected from the file).")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", "-t", help="Cosine floor of a hit (default: the cache's default)."),
    ] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Hit precision (1 - false-hit rate) and recall of the semantic cache's matcher, with the
    rejections by reason, matcher latency and the precision/recall curve (cosine alone and with
    the matcher)."""
    from stanchion.app import build
    from stanchion.cache.match import DEFAULT_THRESHOLD
    from stanchion.evals.cache import embed_pairs, evaluate_pairs
    from stanchion.evals.pairs import load_pairs, resolve_pairs_path
    from stanchion.spec import load_spec

    chosen = DEFAULT_THRESHOLD if threshold is None else threshold
    try:
        if not -1.0 <= chosen <= 1.0:
            raise SpecError(f"--threshold {chosen} is not a cosine: give a value between -1 and 1")
        path = resolve_pairs_path(pairs)
        labelled = load_pairs(path, layout)
        app = build(load_spec(spec))
        try:
            with Progress(
                TextColumn("embedding pairs"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                disable=not err.is_terminal,
                transient=True,
            ) as bar:
                task = bar.add_task("embed", total=2 * len(labelled))
                similarity = embed_pairs(labelled, app.embedder, progress=lambda n: bar.advance(task, n))
        finally:
            app.close()
        report = evaluate_pairs(labelled, similarity, chosen)
    except StanchionError as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps({"file": str(path), **report.as_json()}))
        return
    _render(path, report.as_json())


def _render(path: Path, report: dict[str, object]) -> None:
    out.print(f"[bold]{path}[/]: {report['pairs']} pairs, {report['same']} same meaning")
    cosine = report["cosine"]
    assert isinstance(cosine, dict)
    out.print(
        f"threshold {report['threshold']}: hit precision [bold]{report['precision']:.3f}[/], "
        f"recall [bold]{report['recall']:.3f}[/] ({report['hits']} hits, {report['false_hits']} false); "
        f"cosine alone {cosine['precision']:.3f} / {cosine['recall']:.3f}"
    )
    latency = report["latency_ms"]
    assert isinstance(latency, dict)
    out.print(f"matcher latency p50 {latency['p50']:.3f} ms, p95 {latency['p95']:.3f} ms")
    by_reason = report["by_reason"]
    assert isinstance(by_reason, dict)
    if by_reason:
        out.print("rejected above the threshold: " + ", ".join(f"{k} {v}" for k, v in by_reason.items()))
    by_kind = report["by_kind"]
    assert isinstance(by_kind, dict)
    if by_kind:
        kinds = Table("kind", "pairs", "hits", "false hits")
        for kind, row in sorted(by_kind.items()):
            kinds.add_row(kind, str(row["pairs"]), str(row["hits"]), str(row["false_hits"]))
        out.print(kinds)
    curve = Table("threshold", "cosine P", "cosine R", "matcher P", "matcher R")
    points = report["curve"]
    assert isinstance(points, list)
    for point in points:
        c, m = point["cosine"], point["matcher"]
        curve.add_row(
            f"{point['threshold']:.2f}",
            f"{c['precision']:.3f}",
            f"{c['recall']:.3f}",
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
        )
    out.print(curve)
