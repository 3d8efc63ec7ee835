"""``stanchion eval injection``: precision, recall, F1, false-positive rate and latency of the
prompt-injection detector on labelled JSONL.

``register(eval_app)`` adds the command to ``stanchion eval``. Exit codes: 0 done, 2 usage error
(a missing or malformed file, an unknown baseline).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stanchion.cli.common import JsonOption, SpecOption, fail, out
from stanchion.errors import StanchionError


def register(eval_app: typer.Typer) -> None:
    eval_app.command("injection")(eval_injection)


def eval_injection(
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            "-d",
            help="JSONL with 'text' and 'label' (1 = attack, 0 = benign) per line; default: the held-out "
            "part of the shipped attack and benign/alarming set.",
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline", help="Also run securevector-guardian-model on the same rows: securevector."
        ),
    ] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Precision, recall, F1 and false-positive rate of the injection detector; latency p50 per text."""
    from stanchion.app import build
    from stanchion.evals.injection import evaluate, load_rows, shipped_dev_rows
    from stanchion.guards.injection import InjectionDetector
    from stanchion.spec import load_spec

    try:
        rows = load_rows(dataset) if dataset is not None else shipped_dev_rows()
        app = build(load_spec(spec))
        try:
            report = evaluate(rows, InjectionDetector(app.embedder), baseline=baseline)
        finally:
            app.close()
    except StanchionError as exc:
        raise fail(exc) from None
    data = report.as_json()
    name = str(dataset) if dataset is not None else "shipped dev set"
    if as_json:
        print(json.dumps({"dataset": name, **data}))
        return
    out.print(f"[bold]{name}[/]: {report.rows} texts, {report.attacks} attacks")
    out.print(
        f"precision [bold]{data['precision']:.3f}[/], recall [bold]{data['recall']:.3f}[/], "
        f"F1 [bold]{data['f1']:.3f}[/], false-positive rate [bold]{data['fpr']:.3f}[/]; "
        f"latency p50 {data['latency_ms']:.1f} ms, p95 {data['latency_p95_ms']:.1f} ms "
        f"({data['latency_shared_vector_ms']:.2f} ms given the text's embedding)"
    )
    if report.by_reason:
        out.print("reasons: " + ", ".join(f"{k} {v}" for k, v in report.by_reason.items()))
    if report.baseline is not None:
        b = report.baseline
        out.print(
            f"{b['name']}: precision {b['precision']:.3f}, recall {b['recall']:.3f}, F1 {b['f1']:.3f}, "
            f"false-positive rate {b['fpr']:.3f}; latency p50 {b['latency_ms']:.2f} ms"
        )
