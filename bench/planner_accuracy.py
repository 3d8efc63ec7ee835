"""The rule-based planner on its labelled set: tool choice, SQL results, search queries, arithmetic.

    python bench/planner_accuracy.py [--tasks bench/data/planner_tasks.jsonl] [--show-failures] [--end-to-end]

Tools are the demo's: ``tickets`` (sql over ``src/stanchion/sample/tickets.db``, tenant column
``tenant``, the default tenant's 40 rows), ``search`` (its schema only: search calls are judged by
their query) and ``calculator``. Prints the figures for the shipped rules (a mention matched as a
whole phrase) and for the key-term variant (its first word), on the same tasks, in one process.

``--end-to-end`` also runs every task that needs search through the real tools, the search over
the sample corpus (indexed once into ``~/.cache/stanchion/planner-bench``), and the planner's
answer: whether the expected file is among the passages its query found, and whether the answer
quotes a sentence of that file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from stanchion.app import build
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.evals.planner import evaluate, load_tasks
from stanchion.models.base import ChatOptions
from stanchion.models.planner import PlannerModel
from stanchion.models.planner_sql import PlannerRules
from stanchion.request_context import RequestContext
from stanchion.retrieve.search import Retriever
from stanchion.spec import IndexSpec, load_spec
from stanchion.tools import calculator, search, sql
from stanchion.tools.base import Tool
from stanchion.types import Message

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "bench" / "data" / "planner_tasks.jsonl"  # the rules were developed on these
HELDOUT = ROOT / "bench" / "data" / "planner_heldout.jsonl"  # written before the rules met them
SAMPLE = ROOT / "src" / "stanchion" / "sample"
TICKETS = SAMPLE / "tickets.db"
CACHE = Path.home() / ".cache" / "stanchion" / "planner-bench"


def demo_tools() -> dict[str, Tool]:
    """The tools by kind, as the demo offers them."""

    def no_retriever() -> Retriever:
        raise AssertionError("search calls are judged by their query, not run")

    return {
        "sql": sql.build(
            "tickets",
            {
                "database": str(TICKETS),
                "tenant_column": "tenant",
                "description": "Kestrel Freight support tickets.",
            },
            retriever=no_retriever,
        ),
        "search": search.SearchTool(no_retriever),
        "calculator": calculator.build("calculator", {}, retriever=no_retriever),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=Path, action="append", help="default: both shipped sets")
    parser.add_argument("--show-failures", action="store_true")
    parser.add_argument("--end-to-end", action="store_true", help="run search tasks over the sample index")
    args = parser.parse_args()
    embedder = SentenceTransformerEmbedder()
    tools = demo_tools()
    context = RequestContext("default")
    for path in args.tasks or [TASKS, HELDOUT]:
        tasks = load_tasks(path)
        for label, rules in (
            ("phrase (shipped)", PlannerRules()),
            ("key term", PlannerRules(mention="head")),
        ):
            report = evaluate(PlannerModel(embedder, rules=rules), tasks, tools, context)
            print(f"{path.name} {label:17} {json.dumps(report.summary())}")
            if args.show_failures and rules == PlannerRules():
                for o in report.outcomes:
                    if not o.right:
                        print(
                            f"  FAIL {o.task!r}: expected {o.expected}, planned {o.planned} {list(o.arguments)}"
                        )

    if args.end_to_end:
        for path in args.tasks or [TASKS, HELDOUT]:
            print(
                f"{path.name} end to end {json.dumps(end_to_end(PlannerModel(embedder), load_tasks(path), tools))}"
            )


def end_to_end(model: PlannerModel, tasks: list[dict[str, Any]], tools: dict[str, Tool]) -> dict[str, str]:
    """Search tasks through the real tools and the planner's answer (see the module docstring)."""
    spec = load_spec(SAMPLE / "stanchion.yaml")
    CACHE.mkdir(parents=True, exist_ok=True)
    app = build(spec.model_copy(update={"index": IndexSpec(path=str(CACHE / "index.db"))}))
    try:
        app.pipeline.run(progress=None)
        by_kind = {**tools, "search": search.SearchTool(lambda: app.retriever)}
        by_name = {t.spec.name: t for t in by_kind.values()}
        options = ChatOptions(tools=tuple(t.spec for t in by_kind.values()))
        wanted = found = quoted = 0
        for item in tasks:
            sources = [c["source"] for c in item["calls"] if c["tool"] == "search" and c.get("source")]
            if not sources:
                continue
            messages = [Message("user", item["task"])]
            calls = model.respond(messages, options).tool_calls
            messages.append(Message("assistant", "", tool_calls=calls))
            passages: list[dict[str, Any]] = []
            for call in calls:
                result = by_name[call.name].call(call.arguments, CONTEXT)
                if call.name == "search":
                    passages += result.data["passages"]
                messages.append(Message("tool", result.content, tool_call_id=call.id, name=call.name))
            answer = model.respond(messages, options).text
            quotes = [" ".join(q.split()) for q in answer.split("[search]")]
            for source in sources:
                wanted += 1
                # A passage names its file relative to its source's folder: compare the file names.
                texts = [
                    " ".join(p["text"].split())
                    for p in passages
                    if Path(str(p["source"])).name == Path(source).name
                ]
                found += bool(texts)
                quoted += any(len(q) > 20 and q.split("] ")[-1] in t for q in quotes for t in texts)
        return {
            "search_tasks": str(wanted),
            "source_found": f"{found}/{wanted}",
            "answer_quotes_it": f"{quoted}/{wanted}",
        }
    finally:
        app.close()


CONTEXT = RequestContext("default")


if __name__ == "__main__":
    main()
