"""``stanchion demo``: ingest the bundled Kestrel Freight corpus, answer sample questions with citations,
then run the ``support`` agent (SQL over the sample tickets, search over the corpus), step by step."""

from __future__ import annotations

import asyncio
import json
import os
from importlib.resources import as_file, files
from pathlib import Path

import yaml
from rich.console import Console

from stanchion.app import build
from stanchion.cli.agent import run_agent
from stanchion.cli.common import operator
from stanchion.cli.render import IngestProgressBar, render_answer, render_ingest_summary
from stanchion.spec import IndexSpec, load_spec

# The demo's agent task: a count from the sample tickets database and a quote from the policies.
AGENT_TASK = "How many open support tickets mention the refund policy, and what does the policy say?"


def demo_dir() -> Path:
    return Path(os.environ.get("STANCHION_CACHE_DIR", Path.home() / ".cache" / "stanchion")) / "demo"


def run_demo(
    out: Console, err: Console, *, workdir: Path | None = None, as_json: bool = False, k: int = 3
) -> dict[str, object]:
    with as_file(files("stanchion").joinpath("sample")) as sample:
        spec = load_spec(Path(sample) / "stanchion.yaml")
        index_path = (workdir or demo_dir()) / "index.db"
        spec = spec.model_copy(update={"index": IndexSpec(path=str(index_path))})
        questions = yaml.safe_load((Path(sample) / "questions.yaml").read_text(encoding="utf-8"))
        app = build(spec)
        try:
            if not as_json:
                out.print(f"[bold]Stanchion demo[/]: Kestrel Freight sample corpus -> {index_path}")
            with IngestProgressBar(err, enabled=not as_json and err.is_terminal) as bar:
                summary = app.pipeline.run(progress=bar)
            if not as_json:
                render_ingest_summary(out, summary)
            from stanchion.answer import answer_questions

            answers = asyncio.run(answer_questions(app.answerer(), [item["question"] for item in questions]))
            results = []
            for answer in answers:
                if not as_json:
                    render_answer(out, answer)
                results.append({"question": answer.question, **answer.as_json()})
            if not as_json:
                out.print(f"\n[bold]Agent[/] support: {AGENT_TASK}")
            run = asyncio.run(
                run_agent(app, "support", AGENT_TASK, user=operator(), show=None if as_json else out)
            )
        finally:
            app.close()
    report: dict[str, object] = {"ingest": summary.as_json(), "questions": results, "agent": run.as_json()}
    if as_json:
        print(json.dumps(report))
    return report
