"""How well the rule-based planner (``models/planner.py``) picks tools and writes their arguments.

A labelled task names the calls it needs, in order, by kind: ``sql`` with a hand-written ``gold``
query (the planner's SQL is right when it returns the gold rows: a single value compared as is,
otherwise the gold's columns compared as sets of rows), ``search`` with ``terms`` its query must
hold, ``calculator`` with the ``value`` the expression must evaluate to. ``calls: []`` means no
offered tool fits and the planner must say so rather than call one. ``tools`` limits which kinds
are offered for that task (default: all).

    report = evaluate(model, load_tasks(path), tools, context)
    report.task_accuracy, report.tool_accuracy, report.sql_accuracy, ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stanchion.errors import ToolError
from stanchion.models.planner import PlannerModel
from stanchion.request_context import RequestContext
from stanchion.tools.base import Tool

__all__ = ["PlannerReport", "TaskOutcome", "evaluate", "load_tasks"]


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    task: str
    expected: tuple[str, ...]  # kinds of the calls needed, in order
    planned: tuple[str, ...]  # kinds the planner called, in order
    arguments: tuple[Mapping[str, Any], ...]
    calls_right: tuple[bool, ...]  # per expected call: tool and arguments right
    note: str = ""

    @property
    def tools_right(self) -> bool:
        return self.expected == self.planned

    @property
    def right(self) -> bool:
        return self.tools_right and all(self.calls_right)


@dataclass(frozen=True, slots=True)
class PlannerReport:
    outcomes: tuple[TaskOutcome, ...]
    by_kind: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # kind: (right, expected)

    @property
    def task_accuracy(self) -> float:
        return sum(o.right for o in self.outcomes) / len(self.outcomes)

    @property
    def tool_accuracy(self) -> float:
        return sum(o.tools_right for o in self.outcomes) / len(self.outcomes)

    def accuracy(self, kind: str) -> float:
        right, total = self.by_kind.get(kind, (0, 0))
        return right / total if total else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "tasks": len(self.outcomes),
            "task_accuracy": round(self.task_accuracy, 3),
            "tool_accuracy": round(self.tool_accuracy, 3),
            **{f"{kind}_calls": f"{r}/{t}" for kind, (r, t) in sorted(self.by_kind.items())},
        }


def load_tasks(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(
    model: PlannerModel,
    tasks: Sequence[Mapping[str, Any]],
    tools: Mapping[str, Tool],
    context: RequestContext,
) -> PlannerReport:
    """``tools`` by kind (``sql``, ``search``, ``calculator``); sql and calculator calls are run,
    search calls are not (their query is checked)."""
    kind_of = {tool.spec.name: kind for kind, tool in tools.items()}
    outcomes: list[TaskOutcome] = []
    tally: dict[str, list[int]] = {}
    for item in tasks:
        offered = [tools[k].spec for k in item.get("tools", list(tools))]
        calls = model.plan(item["task"], offered).calls
        planned = tuple(kind_of[c.name] for c in calls)
        expected = tuple(c["tool"] for c in item["calls"])
        right: list[bool] = []
        for n, want in enumerate(item["calls"]):
            call = calls[n] if n < len(calls) else None
            ok = call is not None and kind_of[call.name] == want["tool"]
            if ok and call is not None:
                ok = _arguments_right(want, dict(call.arguments), tools[want["tool"]], context)
            right.append(ok)
            counts = tally.setdefault(want["tool"], [0, 0])
            counts[0] += ok
            counts[1] += 1
        if not expected:
            counts = tally.setdefault("none", [0, 0])
            counts[0] += not calls
            counts[1] += 1
        outcomes.append(
            TaskOutcome(
                item["task"],
                expected,
                planned,
                tuple(dict(c.arguments) for c in calls),
                tuple(right),
                item.get("note", ""),
            )
        )
    return PlannerReport(tuple(outcomes), {k: (v[0], v[1]) for k, v in tally.items()})


def _arguments_right(
    want: Mapping[str, Any], arguments: dict[str, Any], tool: Tool, context: RequestContext
) -> bool:
    if want["tool"] == "search":
        query = str(next(iter(arguments.values()), "")).lower()
        return all(term.lower() in query for term in want["terms"])
    try:
        result = tool.call(arguments, context)
    except ToolError:
        return False
    if want["tool"] == "calculator":
        value = result.data.get("value") if isinstance(result.data, dict) else None
        return isinstance(value, int | float) and abs(value - float(want["value"])) < 1e-9
    gold = tool.call({"query": want["gold"]}, context).data
    return _same_rows(gold, result.data)


def _same_rows(gold: Mapping[str, Any], got: Mapping[str, Any]) -> bool:
    if len(gold["columns"]) == 1 and gold["row_count"] == 1:
        # One value (a count, the id of the latest ticket): the same value, under any name.
        if got["row_count"] != 1:
            return False
        name = gold["columns"][0]
        column = (
            got["columns"].index(name) if name in got["columns"] else 0 if len(got["columns"]) == 1 else -1
        )
        return column >= 0 and got["rows"][0][column] == gold["rows"][0][0]
    if not set(gold["columns"]) <= set(got["columns"]):
        return False
    at = [got["columns"].index(c) for c in gold["columns"]]
    projected = sorted(json.dumps([row[i] for i in at]) for row in got["rows"])
    return projected == sorted(json.dumps(row) for row in gold["rows"])
