"""The check a draft answer passes before the user sees it; what fails goes back to the agent.

Two kinds of check:

- **Grounding** (rules, always): the draft is not empty; every figure it states, at the precision
  it is written ("69%" for 69.23), is one the task, the agent's instructions or a tool result
  holds, or computed from them (``derived``: two combined, or three summed; among many known
  figures only from ones the draft states too); the feedback quotes the sentence (a count the
  model made up, or copied wrong, is the commonest agent error); a draft that says nothing of a tool that failed, while every call
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
_FAILED_WORDS = re.compile(
    r"\b(fail\w*|error\w*|could not|couldn't|cannot|can't|unable|unavailable|not available|"
    r"did not work|timed? out|time limit|no result|locked|down|refused|denied)\b",
    re.I,
)

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
    return {_spelled(value) for value, _, _ in _figures(text)}


def _figures(text: str) -> list[tuple[float, int, int]]:
    """(value, decimals as written, offset) of each figure of ``text``."""
    text = _LIST_MARKER.sub(
        lambda m: " " * len(m.group()), _CITATION.sub(lambda m: " " * len(m.group()), text)
    )
    found = []
    for m in _FIGURE.finditer(text):
        raw = m.group().replace(",", "").rstrip(".")
        try:
            value = float(raw)
        except ValueError:  # "1.2.3": not one number
            continue
        decimals = len(raw.partition(".")[2])
        found.append((value, decimals, m.start()))
    return found


_FEW = 8  # known figures: up to this many, any two (or three, summed) may combine
_OPERAND_MIN = 1.0  # 0 and 1 combine into everything (a "(1 row)" line made 17 pass as 18 - 1)


def derived(known: Sequence[float], stated: Sequence[float] = ()) -> set[float]:
    """Figures an answer may compute from known ones: the sum, difference, product, quotient and
    percentage of two, and the sum of three. From any of a few known figures; among many (a
    page of search results), only from figures the answer itself states, since almost any
    number is the sum of two of forty."""
    operands = sorted({k for k in known if abs(k) > _OPERAND_MIN})
    if len(operands) > _FEW:
        said = {round(v, 6) for v in stated}
        operands = [k for k in operands if round(k, 6) in said]
    out: set[float] = set()
    for i, a in enumerate(operands):
        for j, b in enumerate(operands[i + 1 :], start=i + 1):
            out |= {a + b, b - a, a * b, b / a, 100 * a / b, 100 * b / a}
            out |= {a + b + c for c in operands[j + 1 :]}
    return out


def _spelled(value: float) -> str:
    text = f"{round(value, 2):.2f}".rstrip("0").rstrip(".")
    return text or "0"


def _matches(value: float, decimals: int, candidates: set[float]) -> bool:
    """Whether a figure written with ``decimals`` places is one of ``candidates`` at that
    precision ("69%" and "69.2%" for 69.23...)."""
    return any(abs(round(c, decimals) - value) < 1e-9 for c in candidates)


def _sentence_at(text: str, offset: int) -> str:
    start = max(text.rfind(". ", 0, offset) + 2, text.rfind("\n", 0, offset) + 1, 0)
    ends = [e for e in (text.find(". ", offset), text.find("\n", offset)) if e != -1]
    end = min(ends) + 1 if ends else len(text)
    return text[start:end].strip()


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
        texts = [task, self.instructions]
        for record in records:
            texts += [record.result, record.error, json.dumps(record.arguments)]
        known = [value for text in texts for value, _, _ in _figures(text)]
        stated = _figures(draft)
        candidates = set(known) | derived(known, [v for v, _, _ in stated])
        made_up = [(v, at) for v, decimals, at in stated if not _matches(v, decimals, candidates)]
        if made_up and records:
            listed = ", ".join(dict.fromkeys(_spelled(v) for v, _ in made_up))
            quoted = " ".join(f'"{s}"' for s in dict.fromkeys(_sentence_at(draft, at) for _, at in made_up))
            problems.append(
                f"The answer states {listed} ({quoted}), which no tool result holds: state only the "
                "figures the tools returned, or call a tool to find the right one."
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
