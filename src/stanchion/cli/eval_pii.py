"""``stanchion eval pii``: PII detection precision, recall and F2 on labelled sentences.

``register(eval_app)`` adds the command to ``stanchion eval``. Exit codes: 0 done, 2 usage error
(a file in no known layout, an unknown part or baseline) or a detector that failed (GuardError).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stanchion.cli.common import JsonOption, fail, out
from stanchion.errors import SpecError, StanchionError


def register(eval_app: typer.Typer) -> None:
    eval_app.command("pii")(eval_pii)


def eval_pii(
    dataset: Annotated[
        Path,
        typer.Option(
            "--dataset",
            "-d",
            help="presidio-research JSON: a list of {full_text, spans: [{entity_type, start_position, "
            "end_position}]}, e.g. ../shared/data/presidio-synthetic-pii/synth_dataset_v2.json.",
        ),
    ],
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="'presidio': also score Presidio's default analyzer, same scorer."),
    ] = None,
    part: Annotated[
        str,
        typer.Option("--part", help="all, tune (the first 70% of the file) or held-out (the remaining 30%)."),
    ] = "all",
    as_json: JsonOption = False,
) -> None:
    """Per-entity precision, recall and F2 of the PII detector by span overlap, latency p50 per
    sentence; with --baseline presidio, Presidio's default analyzer beside it."""
    from stanchion.evals.pii import evaluate, load_dataset, ours, presidio_default, split
    from stanchion.guards.pii import PiiDetector

    try:
        if baseline not in (None, "presidio"):
            raise SpecError(f"unknown baseline {baseline!r}: the one baseline is 'presidio'")
        rows = split(load_dataset(dataset), part)
        detector = PiiDetector()
        detector.warm_up()
        report: dict[str, Any] = {"file": str(dataset), "part": part, **evaluate(rows, ours(detector))}
        if baseline:
            report["baseline"] = {"name": baseline, **evaluate(rows, presidio_default())}
    except StanchionError as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps(report))
        return
    systems = [("stanchion", report)] + ([("presidio", report["baseline"])] if baseline else [])
    table = Table(title=f"PII detection: {dataset.name} ({part}, {report['sentences']} sentences)")
    table.add_column("entity")
    table.add_column("support", justify="right")
    for name, _ in systems:
        for metric in ("P", "R", "F2"):
            table.add_column(f"{name} {metric}", justify="right")
    for entity, row in report["per_entity"].items():
        cells = [entity, str(row["support"])]
        for _, rep in systems:
            r = rep["per_entity"].get(entity, {"precision": 0.0, "recall": 0.0, "f2": 0.0})
            cells += [f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f2']:.3f}"]
        table.add_row(*cells)
    cells = ["overall", str(sum(r["support"] for r in report["per_entity"].values()))]
    for _, rep in systems:
        cells += [f"{rep['precision']:.3f}", f"{rep['recall']:.3f}", f"{rep['f2']:.3f}"]
    table.add_row(*cells, style="bold")
    out.print(table)
    for name, rep in systems:
        out.print(f"{name}: latency p50 {rep['latency_ms']:.1f} ms per sentence")
