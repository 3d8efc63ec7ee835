"""The rule-based planner on its labelled set: tool choice, SQL results, search queries, arithmetic.

    python bench/planner_accuracy.py [--tasks bench/data/planner_tasks.jsonl] [--show-failures]

Tools are the demo's: ``tickets`` (sql over ``src/stanchion/sample/tickets.db``, tenant column
``tenant``, the default tenant's 40 rows), ``search`` (its schema only: search calls are judged by
their query) and ``calculator``. Prints the figures for the shipped rules (a mention matched as a
whole phrase) and for the key-term variant (its first word), on the same tasks, in one process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.evals.planner import evaluate, load_tasks
from stanchion.models.planner import PlannerModel
from stanchion.models.planner_sql import PlannerRules
from stanchion.request_context import RequestContext
from stanchion.retrieve.search import Retriever
from stanchion.tools import calculator, search, sql
from stanchion.tools.base import Tool

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "bench" / "data" / "planner_tasks.jsonl"  # the rules were developed on these
HELDOUT = ROOT / "bench" / "data" / "planner_heldout.jsonl"  # written before the rules met them
TICKETS = ROOT / "src" / "stanchion" / "sample" / "tickets.db"


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


if __name__ == "__main__":
    main()
