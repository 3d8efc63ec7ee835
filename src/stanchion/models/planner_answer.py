"""What the planner reads in tool results and how it words an answer: an sql tool's rows, a search
tool's numbered passages, an error, and a count said as a sentence ("9 open support tickets
mention the refund policy.")."""

from __future__ import annotations

import json
import re

from stanchion.types import GroundingSource

__all__ = [
    "BULLET",
    "bare",
    "count_sentence",
    "is_error",
    "one_line",
    "parse_passages",
    "parse_rows",
    "result_kind",
    "split_draft",
]

_ERROR = re.compile(r"^\s*(?:error\b|tool error\b|toolerror\b|tool [\w.-]+:|failed\b)", re.IGNORECASE)
_ROW_COUNT = re.compile(r"^\((?P<n>\d+) rows?(?P<cut> shown[^)]*)?\)$")
BULLET = re.compile(r"^(?:[-*+\u2022]|\d{1,3}[.)])\s+")
_PASSAGE = re.compile(r"^\[(?P<n>\d+)\]\s*(?P<title>.*)$")


def count_sentence(question: str, n: int) -> str:
    """A count stated with what was counted: "how many open tickets mention X" and 9 ->
    "9 open tickets mention X."; a question the rules cannot turn round is quoted."""
    q = bare(question)
    any_match = re.match(r"^(?P<verb>are|is) there any (?P<rest>.+)$", q, re.IGNORECASE)
    if any_match:
        words = any_match["rest"].split()
        if n == 1:
            plural = next((i for i, w in enumerate(words) if w.endswith("s") and not w.endswith("ss")), None)
            if plural is not None:
                words[plural] = _singular_phrase(words[plural])
        rest = " ".join(words)
        return f"There {'is' if n == 1 else 'are'} {'no' if n == 0 else n} {rest}."
    match = re.match(r"^how many (?P<rest>.+)$", q, re.IGNORECASE)
    if match is None or re.search(r"\b(?:do|does|did|can|could|will|would|should)\b", match["rest"], re.I):
        return f"The count for “{q}” is {n}."
    words = match["rest"].split()
    there = re.match(r"^(?P<noun>.+?) (?P<verb>are|were) there\b(?P<rest>.*)$", match["rest"], re.I)
    if there:
        verb = there["verb"] if n != 1 else {"are": "is", "were": "was"}[there["verb"].lower()]
        noun = there["noun"] if n != 1 else _singular_phrase(there["noun"])
        return f"There {verb} {'no' if n == 0 else n} {noun}{there['rest']}."
    if n == 1:
        words = _singular_clause(words)
    return f"{'No' if n == 0 else n} {' '.join(words)}."


_VERB_PLURAL = {"are": "is", "were": "was", "have": "has"}
_CLAUSE_VERB = re.compile(
    r"^(are|were|have|mention|contain|refer|say|ask|match|include|need|come|belong|use|show|remain|"
    r"concern|cite|quote|involve|reference)$",
    re.IGNORECASE,
)


def _singular_clause(words: list[str]) -> list[str]:
    out = list(words)
    for i, word in enumerate(out):
        if _CLAUSE_VERB.match(word):
            out[i] = _VERB_PLURAL.get(word.lower(), word + "s")
            if i > 0:
                out[i - 1] = _singular_phrase(out[i - 1])
            break
    else:
        out[0] = _singular_phrase(out[0]) if len(out) == 1 else out[0]
    return out


def _singular_phrase(phrase: str) -> str:
    head, _, last = phrase.rpartition(" ")
    word = (
        last[:-3] + "y"
        if last.endswith("ies")
        else last[:-1]
        if last.endswith("s") and not last.endswith("ss")
        else last
    )
    return f"{head} {word}".strip()


def is_error(content: str) -> bool:
    if _ERROR.match(content):
        return True
    try:
        value = json.loads(content)
    except ValueError:
        return False
    return isinstance(value, dict) and "error" in value


def result_kind(content: str) -> str:
    if parse_rows(content) is not None:
        return "sql"
    if any(_PASSAGE.match(line) for line in content.splitlines()[:1]):
        return "search"
    if re.fullmatch(r"[^=\n]+ = [-\d.e+]+", content.strip()):
        return "calculator"
    return "text"


def parse_rows(content: str) -> tuple[list[str], list[list[str]], bool] | None:
    """An sql tool's rows (``header\\nrow\\n...\\n(N rows)``): columns, rows, and whether cut."""
    lines = content.strip().splitlines()
    if len(lines) < 2:
        return None
    last = _ROW_COUNT.match(lines[-1].strip())
    if last is None or len(lines) - 2 != int(last["n"]):
        return None
    columns = [c.strip() for c in lines[0].split(" | ")]
    rows = [[v.strip() for v in line.split(" | ")] for line in lines[1:-1]]
    return columns, rows, bool(last["cut"])


def parse_passages(content: str) -> list[GroundingSource]:
    """A search result's numbered passages (``[n] title`` then text); any other text is one source."""
    sources: list[GroundingSource] = []
    number, title = 0, ""
    body: list[str] = []
    for line in content.splitlines():
        match = _PASSAGE.match(line)
        if match:
            if number:
                sources.append(GroundingSource(number, title, "\n".join(body).strip()))
            number, title, body = int(match["n"]), match["title"], []
        else:
            body.append(line)
    if number:
        sources.append(GroundingSource(number, title, "\n".join(body).strip()))
    return sources or [GroundingSource(1, "", content)]


def split_draft(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=\])\s+|(?<=[.!?])\s+(?=[A-Z0-9“\"])", text.strip()) if s]


def bare(question: str) -> str:
    return " ".join(question.split()).rstrip("?.! ")


def one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 300 else flat[:297] + "..."
