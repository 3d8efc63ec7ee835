"""``PlannerModel``: an offline ChatModel that drives a tool-calling loop by rules. No LLM.

The packaged local model (SmolLM2-135M) is too small to choose tools or write their arguments;
this model does both by rules, deterministically, and is honest where the rules end.

**A new task** (the last user message, with no tool results after it) is cut into sub-questions
(``planner_rules.split_task``). Each gets the offered tool that fits it best: a rule score by the
tool's shape (``planner_rules.tool_shape``) and the sub-question's intent (``count``, ``list``,
``aggregate`` over a table the sql tool lists -> sql; ``arithmetic`` -> a calculator; a URL -> a
tool taking ``url``; anything else -> a search-like tool), plus ``similarity_weight`` times the
embedding cosine of the sub-question with the tool's name and description. Below
``min_tool_score`` no tool fits that part. The arguments come from the schema: the one string
parameter the shape names (SQL written by ``PlannerRules.write_sql``, a search query, an
expression); a tool with other required parameters is never called. Every call goes out in one
completion (the loop may run them side by side), with ids ``plan_<n>``.

**After the tool results**, the answer states each part with a marker naming the tool that gave
it, ``[<tool name>]``: a count as a sentence ("9 open support tickets mention the refund policy.
[tickets]"), rows as a short list, a calculator's result as it came, and for search (or any text)
the passage sentences that answer best, quoted exactly as the tool returned them (selected by
``ExtractiveModel.select``). A tool that failed is named with its error; nothing is made up.

**After the check's feedback** (a user message holding ``FEEDBACK_MARK``, "The check found"), a
failed call whose error the rules can act on is made again with corrected arguments (a column or
table the database says does not exist is left out of the schema; a string cut to the length the
error allows; a timeout retried once); otherwise the draft is kept without the sentences the
feedback quotes, or, if none, with a sentence saying the feedback cannot be addressed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from stanchion.core.embed import Embedder
from stanchion.models.base import BaseChatModel, Capabilities, ChatOptions
from stanchion.models.extractive import ExtractiveModel, ScoredSentence
from stanchion.models.planner_answer import (
    BULLET,
    bare,
    count_sentence,
    is_error,
    one_line,
    parse_passages,
    parse_rows,
    result_kind,
    split_draft,
)
from stanchion.models.planner_rules import (
    RELATIVE_TIME,
    Table,
    ToolShape,
    arithmetic_expression,
    counted_noun,
    data_intent,
    focus,
    overview,
    resolve_references,
    search_query,
    split_task,
    tool_shape,
)
from stanchion.models.planner_sql import PlannerRules, column_hits, mentions_table, names_row
from stanchion.types import Completion, GroundingSource, Message, StreamEvent, ToolCall, ToolSpec, Usage

__all__ = ["CANNOT_ADDRESS", "FEEDBACK_MARK", "Plan", "PlannerModel", "Step"]

FEEDBACK_MARK = "the check found"
# Feedback that the tool results themselves answer: a figure no result holds, an empty draft.
_ABOUT_RESULTS = re.compile(r"which no tool result holds|the answer is empty", re.I)
CANNOT_ADDRESS = "I could not address the check's findings with the tools offered."
_CALL_ID = re.compile(r"^plan_(?P<step>\d+)(?:_retry(?P<retry>\d+))?$")


@dataclass(frozen=True, slots=True)
class Step:
    """One sub-question and what the planner does about it: ``tool`` is None when no offered tool
    fits (``reason`` says why)."""

    question: str
    intent: str
    tool: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    score: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    task: str
    steps: tuple[Step, ...]

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(f"plan_{i}", s.tool, dict(s.arguments)) for i, s in enumerate(self.steps) if s.tool
        )


class PlannerModel(BaseChatModel):
    """A ChatModel that calls tools by rules and answers from their results; see the module docstring."""

    capabilities = Capabilities(tools=True)

    def __init__(
        self,
        embedder: Embedder,
        name: str = "planner",
        *,
        rules: PlannerRules | None = None,
        similarity_weight: float = 0.3,
        min_tool_score: float = 0.35,
        max_rows_shown: int = 10,
        max_quotes: int = 4,
    ) -> None:
        self._embedder = embedder
        self._name = name
        self.rules = rules or PlannerRules()
        self.similarity_weight = similarity_weight
        self.min_tool_score = min_tool_score
        self.max_rows_shown = max_rows_shown
        self.max_quotes = max_quotes
        self._quoter = ExtractiveModel(embedder, name=name)
        self._tool_cache: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        return await asyncio.to_thread(self.respond, messages, options)

    async def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        completion = await asyncio.to_thread(self.respond, messages, options)
        if completion.text:
            yield StreamEvent(text=completion.text, model=self._name)
        yield StreamEvent(
            tool_calls=completion.tool_calls,
            usage=completion.usage,
            finish_reason=completion.finish_reason,
            model=self._name,
        )

    # --- one turn ----------------------------------------------------------------------------------

    def respond(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        """The next turn: tool calls for a new task or a correction, else the answer."""
        options = options or ChatOptions()
        tools = () if options.tool_choice == "none" else options.tools
        task_at = _task_index(messages)
        if task_at is None or not re.search(r"\w", messages[task_at].content):
            return self._finish(messages, "I was given no task to work on.")
        task = messages[task_at].content
        later = messages[task_at + 1 :]
        feedback = next((m for m in reversed(later) if m.role == "user" and _is_feedback(m.content)), None)
        if feedback is not None and messages[-1] is feedback:
            return self._correct(messages, task, later, feedback.content, tools)
        if any(m.role == "tool" for m in later):
            return self._finish(messages, self.answer(task, later, options.tools))
        plan = self.plan(task, tools, tool_choice=options.tool_choice)
        if plan.calls:
            return self._finish(messages, "", plan.calls)
        return self._finish(messages, _cannot(plan, options.tools, options.tool_choice))

    def plan(self, task: str, tools: Sequence[ToolSpec], *, tool_choice: str | None = None) -> Plan:
        """What to call for ``task`` with ``tools`` (``tool_choice`` as in ``ChatOptions``)."""
        shapes = [tool_shape(spec) for spec in tools]
        if tool_choice and tool_choice not in ("auto", "required", "none"):
            shapes = [s for s in shapes if s.spec.name == tool_choice]
        usable = [s for s in shapes if s.kind != "unknown"]
        questions = resolve_references(split_task(task))
        if not questions:
            return Plan(task, ())
        similarity = self._similarity(questions, usable)
        steps = [self._step(q, usable, similarity[i]) for i, q in enumerate(questions)]
        forced = tool_choice not in (None, "auto", "none")
        if forced and usable and not any(s.tool for s in steps):
            # A forced choice is answered with a call: the best-fitting usable tool, on the whole task.
            best = max(range(len(usable)), key=lambda j: float(np.max(similarity[:, j])))
            step = self._fill(task, usable[best], data_intent(task), float(np.max(similarity[:, best])))
            steps = [step] if step.tool else steps
        return Plan(task, tuple(steps))

    # --- planning ----------------------------------------------------------------------------------

    def _similarity(self, questions: Sequence[str], shapes: Sequence[ToolShape]) -> np.ndarray:
        if not shapes:
            return np.zeros((len(questions), 0), dtype=np.float32)
        asked = np.asarray(self._embedder.embed(list(questions)), dtype=np.float32)
        return np.asarray(asked @ self._tool_vectors(shapes).T, dtype=np.float32)

    def _tool_vectors(self, shapes: Sequence[ToolShape]) -> np.ndarray:
        """The tools' name and description embedded, remembered: an agent offers the same tools
        at every step."""
        texts = [f"{s.spec.name}: {_description(s)}" for s in shapes]
        missing = [t for t in dict.fromkeys(texts) if t not in self._tool_cache]
        if missing:
            if len(self._tool_cache) + len(missing) > 256:
                self._tool_cache.clear()
            for text, vector in zip(missing, self._embedder.embed(missing), strict=True):
                self._tool_cache[text] = np.asarray(vector, dtype=np.float32)
        return np.stack([self._tool_cache[t] for t in texts])

    def _step(self, question: str, shapes: Sequence[ToolShape], similarity: np.ndarray) -> Step:
        intent = data_intent(question)
        if not shapes:
            return Step(question, intent, reason="no usable tool was offered")
        scored = sorted(
            (
                (_rule_score(question, intent, s) + self.similarity_weight * float(similarity[j]), j)
                for j, s in enumerate(shapes)
            ),
            reverse=True,
        )
        for score, j in scored:
            if score < self.min_tool_score:
                break
            step = self._fill(question, shapes[j], intent, score)
            if step.tool:
                return step
            if _rule_score(question, intent, shapes[j]) >= 1.0:
                return step  # the tool that fits could not be filled: no lesser tool stands in for it
        return Step(question, intent, reason="no offered tool fits this question")

    def _fill(self, question: str, shape: ToolShape, intent: str, score: float) -> Step:
        """``question`` as a call of ``shape``'s tool, or a Step without a tool saying why not."""
        value: str | None
        if shape.kind == "sql":
            value = self.rules.write_sql(question, shape)
        elif shape.kind == "calculator":
            value = arithmetic_expression(question) or None
        elif shape.kind == "url":
            found = re.search(r"https?://[^\s)>\]\"']+", question)
            value = found[0].rstrip(".,;") if found else None
        elif shape.kind == "search":
            value = search_query(question)
        else:
            value = None
        if not value:
            why = f"could not write the arguments of {shape.spec.name}"
            relative = RELATIVE_TIME.search(question)
            if shape.kind == "sql" and relative:
                why += f" (the rules cannot date “{relative[0]}”)"
            return Step(question, intent, reason=why)
        return Step(question, intent, shape.spec.name, {shape.parameter: value}, score)

    # --- answering ---------------------------------------------------------------------------------

    def answer(self, task: str, later: Sequence[Message], tools: Sequence[ToolSpec]) -> str:
        """The answer from the tool results in ``later`` (the messages after the task)."""
        calls: dict[str, ToolCall] = {}
        for message in later:
            if message.role == "assistant":
                calls.update((c.id, c) for c in message.tool_calls)
        # Without tools (the loop's call budget spent) the sub-questions still name each result.
        plan = self.plan(task, tools) if tools else _unplanned(task)
        latest: dict[int | str, tuple[ToolCall, str]] = {}
        for message in later:
            if message.role != "tool":
                continue
            call = calls.get(message.tool_call_id or "") or ToolCall(
                message.tool_call_id or "", message.name or "tool"
            )
            match = _CALL_ID.match(call.id)
            key: int | str = int(match["step"]) if match else call.id
            latest[key] = (call, message.content)  # a retry replaces the failed result of its step
        parts: list[str] = []
        shapes = {spec.name: tool_shape(spec) for spec in tools}
        # In the task's order: each sub-question's latest result, or why it has none.
        for n, step in enumerate(plan.steps):
            if n in latest:
                call, content = latest.pop(n)
                parts.append(self._part(step.question, call, content, shapes.get(call.name)))
            elif step.tool is None:
                parts.append(f"I cannot answer “{bare(step.question)}”: {step.reason}.")
        for call, content in latest.values():  # calls the plan does not know (renamed ids, no tools)
            parts.append(self._part(task, call, content, shapes.get(call.name)))
        return " ".join(p for p in parts if p) or "The tools returned nothing I could answer from."

    def _part(self, question: str, call: ToolCall, content: str, shape: ToolShape | None) -> str:
        marker = f"[{call.name}]"
        if is_error(content):
            return (
                f"The {call.name} tool failed ({one_line(content)}), so I cannot answer “{bare(question)}”."
            )
        kind = shape.kind if shape else result_kind(content)
        if kind == "sql" or (kind != "search" and parse_rows(content) is not None):
            table = parse_rows(content)
            if table is not None:
                return self._rows(question, table, marker)
        if kind == "calculator":
            return f"{one_line(content).rstrip('.')}. {marker}"
        return self._quotes(question, call, content, marker)

    def _rows(self, question: str, table: tuple[list[str], list[list[str]], bool], marker: str) -> str:
        columns, rows, cut = table
        more = " (the tool cut the result: more rows matched)" if cut else ""
        if len(rows) == 1 and len(columns) == 1:
            value = rows[0][0]
            if data_intent(question) == "count" and re.fullmatch(r"\d+", value):
                return f"{count_sentence(question, int(value))}{more} {marker}"
            return f"The result for “{bare(question)}” is {value}.{more} {marker}"
        if not rows:
            return f"No rows match “{bare(question)}”. {marker}"
        shown = rows[: self.max_rows_shown]
        listed = "; ".join(", ".join(v for v in row) for row in shown)
        rest = f"; and {len(rows) - len(shown)} more" if len(rows) > len(shown) else ""
        heading = ", ".join(columns)
        return (
            f"{len(rows)} row{'s' if len(rows) != 1 else ''} ({heading}) for “{bare(question)}”: "
            f"{listed}{rest}.{more} {marker}"
        )

    def _quotes(self, question: str, call: ToolCall, content: str, marker: str) -> str:
        sources = parse_passages(content)
        # The search was asked for the subject ("refund policy"); a sentence is chosen for the question.
        if overview(question):
            chosen = self._overview(search_query(question) or question, sources)
        else:
            chosen = self._quoter.select(focus(question), sources)
        if not chosen:
            return f"The {call.name} results do not answer “{bare(question)}”. {marker}"
        quoted = []
        for piece in chosen:
            text = piece.text.strip()
            if piece.code:
                quoted.append(f"\n```\n{text}\n```\n{marker}")
            else:
                quoted.append(f"{BULLET.sub('', ' '.join(text.split()))} {marker}")
        return " ".join(quoted)

    def _overview(self, query: str, sources: Sequence[GroundingSource]) -> list[ScoredSentence]:
        """What a document says as a whole: the best sentence of each passage, in the search's
        order, ``max_quotes`` at most, leaving out table rows and near-repeats."""
        scored = [
            s
            for s in self._quoter.score(query, sources)
            if not s.code and not s.text.lstrip().startswith("|")
        ]
        best: dict[int, ScoredSentence] = {}
        for piece in scored:
            if piece.cosine >= self._quoter.min_cosine and (
                piece.source not in best or piece.score > best[piece.source].score
            ):
                best[piece.source] = piece
        chosen: list[ScoredSentence] = []
        for piece in sorted(best.values(), key=lambda p: -p.score):
            if all(float(piece.vector @ c.vector) < self._quoter.redundancy for c in chosen):
                chosen.append(piece)
            if len(chosen) >= self.max_quotes:
                break
        return chosen

    # --- feedback ----------------------------------------------------------------------------------

    def _correct(
        self,
        messages: Sequence[Message],
        task: str,
        later: Sequence[Message],
        feedback: str,
        tools: Sequence[ToolSpec],
    ) -> Completion:
        retries = self.corrected_calls(task, later, tools)
        if retries:
            return self._finish(messages, "", retries)
        draft = next((m.content for m in reversed(later) if m.role == "assistant" and not m.tool_calls), "")
        if _ABOUT_RESULTS.search(feedback):
            # A figure no result holds, or an empty draft: the answer the results give, afresh.
            fresh = self.answer(task, later, tools)
            if fresh and fresh != draft:
                return self._finish(messages, fresh)
        quoted = [q.strip() for q in re.findall(r"[\"“]([^\"”]{8,})[\"”]", feedback)]
        kept = [s for s in split_draft(draft) if not any(q in s or s in q for q in quoted)]
        if draft and quoted and kept and len(kept) < len(split_draft(draft)):
            return self._finish(messages, " ".join(kept))
        # The findings are not repeated: they may quote figures that no tool result holds.
        note = CANNOT_ADDRESS
        draft = draft.replace(note, "").strip()
        return self._finish(messages, f"{draft} {note}".strip())

    def corrected_calls(
        self, task: str, later: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> tuple[ToolCall, ...]:
        """Calls that failed and that the rules can correct, with their new arguments."""
        steps = self.plan(task, tools).steps if tools else ()
        shapes = {spec.name: tool_shape(spec) for spec in tools}
        calls = {c.id: c for m in later if m.role == "assistant" for c in m.tool_calls}
        failed: dict[str, tuple[ToolCall, str]] = {}
        for message in later:
            call = calls.get(message.tool_call_id or "") if message.role == "tool" else None
            if call is None:
                continue
            match = _CALL_ID.match(call.id)
            step = match["step"] if match else call.id
            if is_error(message.content):
                failed[step] = (call, message.content)
            else:
                failed.pop(step, None)
        out: list[ToolCall] = []
        for step, (call, error) in failed.items():
            match = _CALL_ID.match(call.id)
            if match is None or match["retry"] or call.name not in shapes:
                continue  # one correction per call: a second failure is reported, not chased
            n = int(match["step"])
            question = steps[n].question if n < len(steps) else task
            arguments = self._corrected(dict(call.arguments), error, shapes[call.name], question)
            if arguments is not None:
                out.append(ToolCall(f"plan_{step}_retry1", call.name, arguments))
        return tuple(out)

    def _corrected(
        self, arguments: dict[str, Any], error: str, shape: ToolShape, question: str
    ) -> dict[str, Any] | None:
        if re.search(r"timed? ?out|timeout|no result within|temporar|unavailable|busy|locked", error, re.I):
            return arguments
        limit = re.search(r"at most (\d+) characters|max(?:imum)?[ _]?length[^\d]{0,12}(\d+)", error, re.I)
        if limit and shape.parameter in arguments:
            n = int(limit[1] or limit[2])
            return {**arguments, shape.parameter: str(arguments[shape.parameter])[:n]}
        if shape.kind != "sql":
            return None
        column = re.search(
            r"no such column:\s*(?:\w+\.)?(\w+)|column \"?(?:\w+\.)?(\w+)\"? does not exist", error, re.I
        )
        table = re.search(
            r"no such table:\s*(?:\w+\.)?(\w+)|relation \"?(?:\w+\.)?(\w+)\"? does not exist", error, re.I
        )
        if column:
            name = column[1] or column[2]
            tables = tuple(Table(t.name, tuple(c for c in t.columns if c[0] != name)) for t in shape.tables)
        elif table:
            name = table[1] or table[2]
            tables = tuple(t for t in shape.tables if t.name != name)
        else:
            return None
        sql = self.rules.write_sql(question, replace(shape, tables=tables)) if tables else None
        if not sql or sql == arguments.get(shape.parameter):
            return None
        if _where(sql) != _where(str(arguments.get(shape.parameter, ""))):
            return None  # a condition would be dropped: a count of something else is no correction
        return {**arguments, shape.parameter: sql}

    # --- plumbing ----------------------------------------------------------------------------------

    def _finish(self, messages: Sequence[Message], text: str, calls: tuple[ToolCall, ...] = ()) -> Completion:
        spoken = text + "".join(json.dumps(dict(c.arguments)) for c in calls)
        usage = Usage(
            input_tokens=sum(len(m.content.split()) for m in messages),
            output_tokens=max(1, len(spoken.split())),
        )
        return Completion(
            text=text,
            model=self._name,
            usage=usage,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop",
        )


def _rule_score(question: str, intent: str, shape: ToolShape) -> float:
    """How well ``shape``'s kind of tool fits a question of ``intent``, before similarity."""
    if shape.kind == "calculator":
        return 1.2 if intent == "arithmetic" and arithmetic_expression(question) else 0.0
    if shape.kind == "url":
        return 1.2 if re.search(r"https?://", question) else 0.0
    if shape.kind == "sql":
        if intent in ("count", "list", "aggregate"):
            if mentions_table(question, shape):
                return 1.0
            # "how many customers ..." counts a column; "how many days ..." asks a document.
            return 0.45 if column_hits(counted_noun(question) or question, shape) else 0.1
        return 1.0 if names_row(question, shape) else 0.0
    if shape.kind == "search":
        if intent == "arithmetic":
            return 0.1
        return 0.8 if intent == "lookup" else 0.5
    return 0.0


def _description(shape: ToolShape) -> str:
    """What similarity reads of a tool: its description without the table schema."""
    return re.split(r"\bTables?:", shape.spec.description)[0].strip() or shape.spec.name


def _task_index(messages: Sequence[Message]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user" and not _is_feedback(messages[i].content):
            return i
    return None


def _is_feedback(content: str) -> bool:
    return FEEDBACK_MARK in content.lower()


def _where(sql: str) -> str:
    match = re.search(
        r"\bWHERE\b(.*?)(?:\bGROUP BY\b|\bORDER BY\b|\bLIMIT\b|$)", sql, re.IGNORECASE | re.DOTALL
    )
    return match[1].strip() if match else ""


def _unplanned(task: str) -> Plan:
    """The task's sub-questions when no tools are offered to plan with: each stands for the call
    made for it (``tool="?"``: called, by whatever tool the ids say, so none is reported missing)."""
    steps = (Step(q, data_intent(q), tool="?") for q in resolve_references(split_task(task)))
    return Plan(task, tuple(steps))


def _cannot(plan: Plan, tools: Sequence[ToolSpec], tool_choice: str | None) -> str:
    task = bare(plan.task)
    if tool_choice == "none":
        return f"Tool calls are switched off for this request, and I answer only from tools, so I cannot answer “{task}”."
    if not tools:
        return f"I answer only by calling tools, and none was offered, so I cannot answer “{task}”."
    unusable = [tool_shape(t) for t in tools]
    if all(s.kind == "unknown" for s in unusable):
        named = "; ".join(f"{s.spec.name} ({s.why})" for s in unusable)
        return f"I cannot fill the arguments of the tools offered ({named}), so I cannot answer “{task}”."
    reasons = " ".join(f"I cannot answer “{bare(s.question)}”: {s.reason}." for s in plan.steps)
    return reasons or f"None of the tools offered fits “{task}”, so I cannot answer it."
