"""``stanchion eval agent-check``: how often an agent's draft check fixes an answer and how often it
breaks one, on labelled tasks run with the check off and on (``stanchion.evals.agent_check``).
Exit codes: 0 done, 2 usage or spec error."""

from __future__ import annotations

import asyncio
import json
from importlib.resources import as_file, files
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stanchion.cli.common import JsonOption, err, fail, out
from stanchion.errors import StanchionError


def register(eval_app: typer.Typer) -> None:
    eval_app.command("agent-check")(eval_agent_check)


def eval_agent_check(
    tasks: Annotated[
        Path | None,
        typer.Option("--tasks", "-t", help="JSONL of tasks (default: the packaged 60 over the sample spec)."),
    ] = None,
    agent: Annotated[
        str, typer.Option("--agent", "-a", help="The agent to run (agents.<name>).")
    ] = "support",
    spec: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            "-s",
            help="Spec file, its sources already ingested (default: the demo's sample spec, ingested "
            "like `stanchion demo` into its cache folder).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run each task with the agent's check off and on; count answers fixed, broken, still wrong."""
    from stanchion.evals.agent_check import load_tasks

    try:
        chosen = load_tasks(tasks)
        if spec is not None:
            report = _evaluate(spec, agent, chosen, ingest=False, as_json=as_json)
        else:
            with as_file(files("stanchion").joinpath("sample")) as sample:
                report = _evaluate(
                    Path(sample) / "stanchion.yaml", agent, chosen, ingest=True, as_json=as_json
                )
    except StanchionError as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps(report))
        return
    _render(report)


def _evaluate(
    spec_file: Path, agent: str, tasks: list[Any], *, ingest: bool, as_json: bool
) -> dict[str, Any]:
    from stanchion.app import build
    from stanchion.cli.common import operator
    from stanchion.cli.render import IngestProgressBar
    from stanchion.demo import demo_dir
    from stanchion.evals.agent_check import evaluate
    from stanchion.spec import IndexSpec, load_spec

    spec = load_spec(spec_file)
    if ingest:  # the sample spec: its index where the demo keeps it (unchanged files cost nothing)
        spec = spec.model_copy(update={"index": IndexSpec(path=str(demo_dir() / "index.db"))})
    app = build(spec)
    try:
        if ingest:
            with IngestProgressBar(err, enabled=not as_json and err.is_terminal) as bar:
                app.pipeline.run(progress=bar)
        report = asyncio.run(evaluate(app.agent(agent), tasks, user=operator()))
    finally:
        app.close()
    return report.as_json()


# (column, key of the report's counts)
_COLUMNS = (
    ("tasks", "tasks"),
    ("right off", "correct_without_check"),
    ("right on", "correct_with_check"),
    ("fixed", "fixed"),
    ("broken", "broken"),
    ("still wrong", "still_wrong"),
    ("caught", "caught"),
    ("false alarms", "false_alarms"),
    ("revisions", "revisions"),
    ("+steps", "mean_added_steps"),
    ("+ms mean", "mean_added_ms"),
    ("+ms median", "median_added_ms"),
)


def _render(report: dict[str, Any]) -> None:
    table = Table(title=f"agent check: {report['tasks']} tasks, each run with the check off and on")
    table.add_column("first draft")
    for column, _ in _COLUMNS:
        table.add_column(column, justify="right")

    def row(name: str, counts: dict[str, Any], style: str = "") -> None:
        table.add_row(name, *(f"{counts[key]:g}" for _, key in _COLUMNS), style=style)

    for kind, counts in report["by_kind"].items():
        row(kind, counts)
    row("all", report, "bold")
    out.print(table)
    out.print(
        "[dim]caught: wrong first drafts the check sent back; false alarms: right ones it sent back. "
        "Planted drafts are the experiment's instrument; revisions come from the agent's own model.[/]"
    )
    for outcome in report["outcomes"]:
        if outcome["right_without_check"] and not outcome["right_with_check"]:
            out.print(f"[red]broken[/] {outcome['id']}: {outcome['answer_with_check']}", highlight=False)
