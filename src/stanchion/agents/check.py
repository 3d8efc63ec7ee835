"""The check a draft answer passes before the user sees it; what fails goes back to the agent.

Two kinds of check:

- **Grounding** (rules, always): the draft is not empty; every figure it states is one the task,
  the agent's instructions or a tool result holds, or the sum, difference, product, quotient or
  percentage of two of them (a count the model made up, or copied wrong, is the commonest agent
  error); a draft that says nothing of a tool that failed, while every call
  of that tool failed, is told to say so rather than answer around it.
- **Success criteria** (``success_criteria`` in the spec): judged by the agent's own model in JSON
  mode, when it has one (``capabilities.json_mode``); a model without it leaves them unjudged
  (the check says so in its result, never passes them silently as met).

Each problem is one sentence the agent reads as feedback: what is wrong and what to do instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from stanchion.agents.run import ToolRecord
from stanchion.errors import ModelError
from stanchion.models.base import ChatModel, ChatOptions
from stanchion.request_context import RequestContext
from stanchion.types import Message

__all__ = ["CheckResult", "DraftCheck", "figures"]

# A figure: digits with optional thousands separators and decimals ("1,577", "3.5", "42").
_FIGURE = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w])")
_CITATION = re.compile(r"\[[^\]]{0,40}\]")  # [1], [2, 3], [tickets]: markers, not figures
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s", re.M)
_FAILED_WORDS = re.compile(r"\b(fail\w*|error\w*|could not|couldn't|unable|unavailable|did not work)\b", re.I)

_JUDGE = (
    "You check whether an answer meets a list of criteria. Reply with one JSON object "
    '{"missing": [...]}: the criteria the answer does not meet, each copied exactly; [] when it '
    "meets them all. Judge only the answer's text."
)


@dataclass(frozen=True, slots=True)
class CheckResult:
    problems: tuple[str, ...] = ()
    unjudged: tuple[str, ...] = field(default=())  # criteria no model could judge

    @property
    def ok(self) -> bool:
        return not self.problems


def figures(text: str) -> set[str]:
    """The figures ``text`` states, each in one spelling ("1,577.50" -> "1577.5", to two
    decimals), without citation markers and list numbering."""
    text = _LIST_MARKER.sub(" ", _CITATION.sub(" ", text))
    found = set()
    for m in _FIGURE.finditer(text):
        raw = m.group().replace(",", "").rstrip(".")
        try:
            found.add(_spelled(float(raw)))
        except ValueError:  # "1.2.3": not one number
            found.add(raw)
    return found


_DERIVE_FROM = 40  # figures: pairs of more would make almost any number "derived"


def derived(known: set[str]) -> set[str]:
    """Figures an answer may compute from two known ones: their sum, difference, product,
    quotient and percentage (to two decimals; as written with or without trailing zeros). Only
    from a few figures: among many, almost any number is the sum of two."""
    values = sorted({float(f) for f in known})[:_DERIVE_FROM] if len(known) <= _DERIVE_FROM else []
    out: set[str] = set()
    for i, a in enumerate(values):
        for b in values[i + 1 :]:
            results = [a + b, b - a, a * b]
            if a:
                results += [b / a, 100 * a / b if b else 0.0, 100 * b / a]
            out |= {_spelled(r) for r in results}
    return out


def _spelled(value: float) -> str:
    text = f"{round(value, 2):.2f}".rstrip("0").rstrip(".")
    return text or "0"


class DraftCheck:
    def __init__(
        self, model: ChatModel | None = None, criteria: Sequence[str] = (), instructions: str = ""
    ) -> None:
        self.model = model
        self.criteria = tuple(criteria)
        self.instructions = instructions

    async def __call__(
        self, task: str, draft: str, records: Sequence[ToolRecord], context: RequestContext | None = None
    ) -> CheckResult:
        problems = self.grounding(task, draft, records)
        unjudged: tuple[str, ...] = ()
        if self.criteria and draft.strip():
            missing, unjudged = await self._judge(task, draft, context)
            problems += [f"The answer does not yet meet this requirement: {c}" for c in missing]
        return CheckResult(tuple(problems), unjudged)

    def grounding(self, task: str, draft: str, records: Sequence[ToolRecord]) -> list[str]:
        if not draft.strip():
            return ["The answer is empty: answer the task from the tool results."]
        problems = []
        known = figures(task) | figures(self.instructions)
        for record in records:
            known |= figures(record.result) | figures(record.error) | figures(json.dumps(record.arguments))
        made_up = sorted(figures(draft) - known - derived(known), key=lambda f: (len(f), f))
        if made_up and records:
            listed = ", ".join(made_up)
            problems.append(
                f"The answer states {listed}, which no tool result holds: state only the figures "
                "the tools returned, or call a tool to find the right one."
            )
        failed = {r.name for r in records if not r.ok} - {r.name for r in records if r.ok}
        if failed and not _FAILED_WORDS.search(draft):
            problems.append(
                f"Every call of {', '.join(sorted(failed))} failed: say that this part could not be "
                "answered (or call it again with corrected arguments) instead of answering around it."
            )
        return problems

    async def _judge(
        self, task: str, draft: str, context: RequestContext | None
    ) -> tuple[list[str], tuple[str, ...]]:
        model = self.model
        if model is None or not model.capabilities.json_mode:
            return [], self.criteria
        criteria = "\n".join(f"- {c}" for c in self.criteria)
        prompt = f"Task:\n{task}\n\nAnswer:\n{draft}\n\nCriteria:\n{criteria}"
        try:
            completion = await model.complete(
                [Message("system", _JUDGE), Message("user", prompt)],
                ChatOptions(temperature=0.0, json_mode=True, max_tokens=256, context=context),
            )
            verdict = json.loads(completion.text)
        except (ModelError, ValueError):
            return [], self.criteria  # no verdict: unjudged, not met
        said = verdict.get("missing") if isinstance(verdict, dict) else None
        if not isinstance(said, list):
            return [], self.criteria
        return [c for c in self.criteria if c in said], ()
