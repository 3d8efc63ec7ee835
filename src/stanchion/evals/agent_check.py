"""How often an agent's draft check (``agents/check.py``) fixes an answer, and how often it breaks one.

Each labelled task runs the agent twice, with the check off and on (the agent's spec copied with
``check: false`` / ``check: true``), and judges both final answers by the task's gold criterion.
A task is **fixed** when the answer is wrong without the check and right with it, **broken** when
right without and wrong with, **still wrong** when wrong both ways.

To measure the check on the errors agents make, a task may carry two instruments of the
experiment (neither is part of Stanchion's runtime):

- ``plant``: a first draft that replaces the model's first answer (``PlantedDraft``, a ChatModel
  wrapper): a made-up or miscopied figure, a figure off by one, a total that is not the sum, an
  answer that ignores a failed tool, an empty draft; or a correct but reformatted draft ("1,577.50",
  a derived total, a percentage) that the check must leave alone. Every later draft is the agent's
  own model reacting to the check's feedback.
- ``fault``: a tool that fails (``FaultyTools``, around the agent's ``call_tool``): a time-out
  (raised as the loop's own time-out) or an error, for the first ``times`` calls (all when null).

Runs go to the agent loop itself (``Agent.run`` with the CLI's local context), not through the
request pipeline: its guards and audit log are not what is measured, and an eval run is no
user's request.

A gold criterion is one alternative or a list of them; an alternative holds when the answer
contains every string of ``all`` and none of ``none`` (case-insensitive) and, with
``failure: true``, says that something failed.

    report = await evaluate(app, load_tasks())
    report.as_json()   # tasks, fixed, broken, correct_without_check, correct_with_check, by_kind, ...
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from stanchion.agents import Agent, AgentRun
from stanchion.errors import StanchionError, ToolError
from stanchion.models.base import BaseChatModel, Capabilities, ChatModel, ChatOptions
from stanchion.pipeline.wiring import local_context
from stanchion.request_context import RequestContext
from stanchion.tools.base import ToolResult
from stanchion.types import Completion, Message, StreamEvent

__all__ = [
    "ERROR_KINDS",
    "KINDS",
    "TASKS",
    "Expect",
    "Fault",
    "FaultyTools",
    "PlantedDraft",
    "Report",
    "RunOutcome",
    "Task",
    "TaskOutcome",
    "evaluate",
    "kinds_of",
    "load_tasks",
    "run_task",
]

TASKS = "agent_check_tasks.jsonl"  # packaged beside this module
# What a task's first draft is: the model's own (none, tool_failure) or planted.
ERROR_KINDS = ("made_up", "off_by_one", "wrong_sum", "ignored_failure", "empty")
KINDS = ("none", "tool_failure", "reformatted", *ERROR_KINDS)
# An answer that says something failed. Broader than the check's own words (the gold is not the
# check), but "I could not address the check's findings" alone is no statement of a failure.
_FAILURE = re.compile(
    r"\b(fail\w*|errors?|timed out|time-?out|no result|unavailable|not available|is down|"
    r"did not work|didn't work|unable to|(?:could not|couldn't|cannot|can't) "
    r"(?:be )?(?:reach|run|answer|count|say|get|read|find|load|query|check|compute)\w*)\b",
    re.I,
)
_NUMBER = re.compile(r"^\d[\d,]*(?:\.\d+)?$")
_NUMBERS = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class Expect:
    """One acceptable answer: holds every string of ``all``, none of ``none`` (case-insensitive;
    a string that is a number matches that number as the answer writes it: "9" is not in "19",
    "1577.5" is in "1,577.50"), and says that something failed when ``failure``."""

    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()
    failure: bool = False

    def met(self, answer: str) -> bool:
        return (
            bool(answer.strip())
            and all(_holds(answer, s) for s in self.all)
            and not any(_holds(answer, s) for s in self.none)
            and (not self.failure or _FAILURE.search(answer) is not None)
        )


def _holds(answer: str, wanted: str) -> bool:
    if _NUMBER.match(wanted):
        value = float(wanted.replace(",", ""))
        return any(_value(m) == value for m in _NUMBERS.findall(answer))
    return wanted.casefold() in answer.casefold()


def _value(figure: str) -> float | None:
    try:
        return float(figure.replace(",", "").rstrip("."))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Fault:
    """``tool`` fails for its first ``times`` calls (every call when None): ``error`` "timeout"
    raises a time-out; "bad_table" runs the real tool with each ``FROM t`` of its arguments
    made ``FROM t_missing`` (the tool's own error for a table that does not exist); any other
    text is the error the tool reports."""

    tool: str
    error: str = "timeout"
    times: int | None = None


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    task: str
    kind: str
    expect: tuple[Expect, ...]
    plant: str | None = None
    fault: Fault | None = None

    def right(self, answer: str) -> bool:
        return any(e.met(answer) for e in self.expect)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    answer: str
    right: bool
    steps: int
    revisions: int  # drafts the check sent back
    seconds: float
    first_draft: str = ""
    first_sent_back: bool = False  # the check sent the first draft back
    stop_reason: str = "answered"


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    task: Task
    without: RunOutcome
    with_check: RunOutcome

    @property
    def fixed(self) -> bool:
        return not self.without.right and self.with_check.right

    @property
    def broken(self) -> bool:
        return self.without.right and not self.with_check.right

    @property
    def still_wrong(self) -> bool:
        return not self.without.right and not self.with_check.right

    @property
    def first_draft_right(self) -> bool:
        return self.task.right(self.with_check.first_draft)

    @property
    def caught(self) -> bool:
        """A wrong first draft that the check sent back."""
        return not self.first_draft_right and self.with_check.first_sent_back

    @property
    def false_alarm(self) -> bool:
        """A right first draft that the check sent back."""
        return self.first_draft_right and self.with_check.first_sent_back

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.task.id,
            "kind": self.task.kind,
            "right_without_check": self.without.right,
            "right_with_check": self.with_check.right,
            "revisions": self.with_check.revisions,
            "seconds_without_check": round(self.without.seconds, 3),
            "seconds_with_check": round(self.with_check.seconds, 3),
            "first_sent_back": self.with_check.first_sent_back,
            "answer_without_check": self.without.answer,
            "answer_with_check": self.with_check.answer,
        }


@dataclass(frozen=True, slots=True)
class Report:
    outcomes: tuple[TaskOutcome, ...]

    def counts(self, outcomes: Sequence[TaskOutcome]) -> dict[str, Any]:
        n = len(outcomes)
        wrong_drafts = sum(not o.first_draft_right for o in outcomes)
        added_ms = [1000 * (o.with_check.seconds - o.without.seconds) for o in outcomes]
        return {
            "tasks": n,
            "correct_without_check": sum(o.without.right for o in outcomes),
            "correct_with_check": sum(o.with_check.right for o in outcomes),
            "fixed": sum(o.fixed for o in outcomes),
            "broken": sum(o.broken for o in outcomes),
            "still_wrong": sum(o.still_wrong for o in outcomes),
            "wrong_first_drafts": wrong_drafts,
            "caught": sum(o.caught for o in outcomes),
            "false_alarms": sum(o.false_alarm for o in outcomes),
            "revisions": sum(o.with_check.revisions for o in outcomes),
            "mean_added_steps": _mean([o.with_check.steps - o.without.steps for o in outcomes]),
            "mean_added_ms": _mean(added_ms),
            "median_added_ms": round(statistics.median(added_ms), 2) if added_ms else 0.0,
        }

    def as_json(self) -> dict[str, Any]:
        kinds = [k for k in KINDS if any(o.task.kind == k for o in self.outcomes)]
        return {
            **self.counts(self.outcomes),
            "by_kind": {k: self.counts([o for o in self.outcomes if o.task.kind == k]) for k in kinds},
            "outcomes": [o.as_json() for o in self.outcomes],
        }


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 2) if values else 0.0


# --- the instruments -------------------------------------------------------------------------------


class PlantedDraft(BaseChatModel):
    """``model`` with its first answer (a completion without tool calls) replaced by ``draft``;
    its tool calls and every later answer are its own. One per run: it remembers the plant."""

    def __init__(self, model: ChatModel, draft: str) -> None:
        self.model = model
        self.draft = draft
        self.planted = False

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def capabilities(self) -> Capabilities:
        return self.model.capabilities

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        completion = await self.model.complete(messages, options)
        if completion.tool_calls or self.planted:
            return completion
        self.planted = True
        return replace(completion, text=self.draft)

    async def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        completion = await self.complete(messages, options)
        yield StreamEvent(
            text=completion.text,
            tool_calls=completion.tool_calls,
            usage=completion.usage,
            finish_reason=completion.finish_reason,
            model=completion.model,
        )


_BAD_TABLE = re.compile(r"(\bFROM\s+)(\w+)", re.I)


class FaultyTools:
    """``call_tool`` with ``fault.tool`` failing for its first ``fault.times`` calls. One per run."""

    def __init__(
        self, call_tool: Callable[[str, Mapping[str, Any], RequestContext], ToolResult], fault: Fault
    ) -> None:
        self.call_tool = call_tool
        self.fault = fault
        self.failed = 0

    def __call__(self, name: str, arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        fault = self.fault
        if name == fault.tool and (fault.times is None or self.failed < fault.times):
            self.failed += 1
            if fault.error == "timeout":
                raise TimeoutError  # the loop reports it as its own time-out
            if fault.error == "bad_table":
                wrong = {
                    k: _BAD_TABLE.sub(r"\1\2_missing", v) if isinstance(v, str) else v
                    for k, v in arguments.items()
                }
                return self.call_tool(name, wrong, context)
            raise ToolError(fault.error, tool=name)
        return self.call_tool(name, arguments, context)


# --- tasks -----------------------------------------------------------------------------------------


def load_tasks(path: Path | None = None) -> list[Task]:
    """The tasks of a JSONL file (default: the packaged set); a bad line is an error naming it."""
    where = str(path) if path else f"stanchion/evals/{TASKS}"
    try:
        text = (
            path.read_text(encoding="utf-8")
            if path
            else files("stanchion.evals").joinpath(TASKS).read_text(encoding="utf-8")
        )
    except OSError as exc:
        raise StanchionError(f"cannot read the agent-check tasks {where}: {exc.strerror or exc}") from None
    tasks: list[Task] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            tasks.append(_task(json.loads(line)))
        except (ValueError, TypeError, KeyError) as exc:
            raise StanchionError(f"{where}, line {n}: {exc}") from None
    if not tasks:
        raise StanchionError(f"{where} holds no task (one JSON object per line)")
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise StanchionError(f"{where}: task ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return tasks


_TASK_KEYS = {"id", "task", "kind", "expect", "plant", "fault"}


def _task(raw: Any) -> Task:
    if not isinstance(raw, dict):
        raise ValueError("a task is a JSON object")
    unknown = set(raw) - _TASK_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {sorted(_TASK_KEYS)})")
    kind = raw.get("kind", "none")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    plant = raw.get("plant")
    if (plant is not None) != (kind not in ("none", "tool_failure")):
        raise ValueError(
            f"kind {kind!r} {'needs' if plant is None else 'takes no'} a plant (the first draft)"
        )
    expect = raw["expect"]
    alternatives = expect if isinstance(expect, list) else [expect]
    if not alternatives:
        raise ValueError("expect: give at least one alternative")
    fault = raw.get("fault")
    return Task(
        id=str(raw["id"]),
        task=str(raw["task"]),
        kind=kind,
        expect=tuple(_expect(e) for e in alternatives),
        plant=None if plant is None else str(plant),
        fault=None if fault is None else _fault(fault),
    )


def _expect(raw: Any) -> Expect:
    if not isinstance(raw, dict) or not set(raw) <= {"all", "none", "failure"} or not raw:
        raise ValueError(f"expect: {raw!r} is not an object of all, none and failure")
    return Expect(tuple(raw.get("all", ())), tuple(raw.get("none", ())), bool(raw.get("failure", False)))


def _fault(raw: Any) -> Fault:
    if not isinstance(raw, dict) or not set(raw) <= {"tool", "error", "times"} or "tool" not in raw:
        raise ValueError(f"fault: {raw!r} is not an object of tool, error and times")
    times = raw.get("times")
    if times is not None and (not isinstance(times, int) or times < 1):
        raise ValueError(f"fault.times: {times!r} is not a whole number of calls >= 1 (or null: every call)")
    return Fault(str(raw["tool"]), str(raw.get("error", "timeout")), times)


# --- running ---------------------------------------------------------------------------------------


async def run_task(base: Agent, task: Task, *, check: bool, user: str = "eval") -> RunOutcome:
    """``task`` on a copy of ``base`` with the check on or off, its instruments in place."""
    parts = base.parts
    if task.plant is not None:
        parts = replace(parts, model=PlantedDraft(parts.model, task.plant))
    if task.fault is not None:
        parts = replace(parts, call_tool=FaultyTools(parts.call_tool, task.fault))
    agent = Agent(base.name, base.spec.model_copy(update={"check": check}), parts)
    context = local_context(user=user, route=base.spec.route)
    started = time.perf_counter()
    run = await agent.run(task.task, context)
    return _outcome(task, run, time.perf_counter() - started)


def _outcome(task: Task, run: AgentRun, seconds: float) -> RunOutcome:
    drafts = [s for s in run.steps if "draft" in s]
    first = drafts[0] if drafts else {}
    return RunOutcome(
        answer=run.answer,
        right=task.right(run.answer),
        steps=len(run.steps),
        revisions=sum(1 for s in drafts if not s.get("check", {}).get("ok", True)),
        seconds=seconds,
        first_draft=str(first.get("draft", "")),
        first_sent_back=not first.get("check", {}).get("ok", True),
        stop_reason=run.stop_reason,
    )


async def evaluate(
    agent: Agent,
    tasks: Sequence[Task],
    *,
    user: str = "eval",
    warm: bool = True,
    on_task: Callable[[TaskOutcome], None] | None = None,
) -> Report:
    """Every task with the check off, then on; ``on_task`` sees each outcome as it is judged.
    With ``warm``, each task first runs once unjudged and untimed (check off), so neither timed
    run pays for a first search or a cold embedding cache: the added time is the check's."""
    outcomes = []
    for task in tasks:
        if warm:
            await run_task(agent, task, check=False, user=user)
        without = await run_task(agent, task, check=False, user=user)
        with_check = await run_task(agent, task, check=True, user=user)
        outcome = TaskOutcome(task, without, with_check)
        outcomes.append(outcome)
        if on_task is not None:
            on_task(outcome)
    return Report(tuple(outcomes))


def kinds_of(tasks: Sequence[Task]) -> dict[str, int]:
    return {k: sum(t.kind == k for t in tasks) for k in KINDS if any(t.kind == k for t in tasks)}
