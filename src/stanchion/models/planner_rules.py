"""The planner's rules: a task cut into sub-questions, a tool's shape read from its schema, and the
arguments written for it (SQL included). Pure functions of text; the model (``planner.py``) adds
the embedding similarity that breaks ties between tools.

**Sub-questions.** A task is cut at ``?``, ``;`` and sentence ends, and before ``and`` / ``also`` /
``then`` when a question word follows ("how many ... , and what does the policy say?"). A later
part that says "the policy" or "it" is read with the noun phrase an earlier part named ("the
refund policy").

**Tool shapes** (``ToolShape.kind``), from the schema alone: ``sql`` (a string parameter
``query``/``sql`` and a description naming ``Tables: t(col TYPE, ...)``), ``search`` (a string
parameter ``query``/``question``/``q``/``text``/``topic``/``keywords``), ``calculator`` (a string
parameter ``expression``/``expr``/``formula``), ``url`` (a string parameter ``url``), else
``unknown``: the planner never calls a tool it cannot fill honestly.

The SQL itself is written by ``planner_sql.PlannerRules``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from stanchion.types import ToolSpec

__all__ = [
    "AGGREGATE",
    "RELATIVE_TIME",
    "STOP_WORDS",
    "Table",
    "ToolShape",
    "counted_noun",
    "data_intent",
    "focus",
    "overview",
    "resolve_references",
    "search_query",
    "split_task",
    "tool_shape",
]

Kind = Literal["sql", "search", "calculator", "url", "unknown"]

_WH = (
    r"(?:what|which|who|whom|whose|when|where|why|how|is|are|was|were|does|do|did|can|could|should|"
    r"will|list|show|count|give|tell|find|name)"
)
_SPLIT = re.compile(
    rf"\s*;\s*|(?<=[.?!])\s+(?=[A-Z])|(?<=\?)\s+|,?\s+(?:and then|and also|and|also|then)\s+(?={_WH}\b)|"
    rf",\s*(?:also|then)\s*,?\s+",
    re.IGNORECASE,
)
_LEADING = re.compile(r"^(?:and|also|then|plus|so)\b[\s,]*", re.IGNORECASE)
_COUNT = re.compile(r"\bhow many\b|\bnumber of\b|\bcount\b|^\W*(?:are|is) there any\b", re.IGNORECASE)
# Time the rules cannot turn into dates (they do not know today's date): never dropped silently.
RELATIVE_TIME = re.compile(
    r"\b(?:last|this|next|past|previous|coming)\s+(?:\d+\s+)?(?:week|month|year|quarter|day|days|weeks|months)\b|"
    r"\b(?:yesterday|today|tomorrow|recently|lately)\b|\bago\b",
    re.IGNORECASE,
)
AGGREGATE = re.compile(
    r"\b(average|mean|total|sum|maximum|minimum|largest|smallest|highest|lowest|latest|earliest|"
    r"most recent|newest|oldest)\b",
    re.IGNORECASE,
)
_LIST = re.compile(
    r"^\s*(?:list|show|which|name|find|give me|what are the)\b|\bwhich \w+s\b|\bthe (?:most|fewest|least)\b",
    re.IGNORECASE,
)
_ARITHMETIC = re.compile(
    r"(?:\d[\d,]*(?:\.\d+)?|\))\s*(?:[-+*/x×^]|\*\*|plus|minus|times|multiplied by|divided by|"
    r"percent of|% of)\s*\(?\s*-?\d|\b(?:square root|sqrt) of\s+\d",
    re.IGNORECASE,
)
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_URL = re.compile(r"https?://[^\s)>\]\"']+")
_TABLES = re.compile(r"Tables?:\s*(?P<list>.+?)(?:\.\s*$|\.\s+[A-Z]|$)", re.DOTALL)
_TABLE = re.compile(r"(?P<name>[A-Za-z_][\w.]*)\s*\((?P<cols>[^()]*(?:\([^()]*\)[^()]*)*)\)")

_SEARCH_PARAMS = ("query", "question", "q", "text", "topic", "keywords", "search", "terms")
_SQL_PARAMS = ("query", "sql", "statement")
_CALC_PARAMS = ("expression", "expr", "formula")
STOP_WORDS = frozenset(
    {
        "and", "or", "that", "which", "who", "whom", "from", "in", "on", "since", "before", "after", "with",
        "by", "per", "are", "is", "were", "was", "created", "opened", "filed", "sent", "have", "has", "do",
        "does", "did", "what", "how", "when", "where", "why", "last", "this", "during", "between", "than",
        "for", "to",
    }
)  # fmt: skip
_DETERMINERS = re.compile(r"^(?:the|a|an|our|their|your|its|any|some|this|that)\s+", re.IGNORECASE)
_MENTION = re.compile(
    r"\b(?:mention(?:s|ing|ed)?|about|contain(?:s|ing)?|regarding|concerning|refer(?:s|ring)? to|"
    r"related to|that say|saying|with the words?)\s+(?P<rest>.+)$",
    re.IGNORECASE,
)
_PRONOUN = re.compile(r"\b(it|its|they|them|this|that)\b(?!\s+(?:is|are|was|were)\b\s*\?)", re.IGNORECASE)
_DEFINITE = re.compile(r"\bthe (?P<noun>[a-z]+)\b", re.IGNORECASE)
_SAYS = re.compile(
    r"^\W*what (?:does|do|did) (?P<subject>.+?) (?:say|state|says|cover|covers|require|allow|specify|"
    r"mean|contain|tell us)\b(?P<rest>.*)$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Table:
    """A table as an sql tool's description lists it: ``tickets(id INTEGER, subject TEXT)``."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (column, declared type, upper case)

    def of_type(self, *prefixes: str) -> list[str]:
        return [c for c, t in self.columns if t.startswith(prefixes)]

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.columns]


@dataclass(frozen=True, slots=True)
class ToolShape:
    """What the planner can do with one offered tool, read from its schema: its ``kind``, the
    string ``parameter`` it fills, and for ``sql`` the tables and the dialect."""

    spec: ToolSpec
    kind: Kind
    parameter: str = ""
    tables: tuple[Table, ...] = ()
    dialect: str = "sqlite"
    why: str = ""  # for ``unknown``: what made it unusable


def tool_shape(spec: ToolSpec) -> ToolShape:
    """``spec``'s shape: which parameter the planner would fill, or ``unknown`` and why not."""
    params: Mapping[str, Any] = spec.parameters.get("properties") or {}
    required = list(spec.parameters.get("required") or [])
    strings = [p for p, schema in params.items() if isinstance(schema, Mapping) and _is_string(schema)]

    # Every required parameter but the one filled must be absent: nothing else is known to fill it.
    def fillable(name: str) -> bool:
        return name in strings and all(r == name for r in required)

    tables_match = _TABLES.search(spec.description)
    if tables_match:
        tables = tuple(
            Table(m["name"].split(".")[-1], tuple(_column(c) for c in m["cols"].split(",") if c.strip()))
            for m in _TABLE.finditer(tables_match["list"])
        )
        parameter = next((p for p in _SQL_PARAMS if fillable(p)), "")
        if tables and parameter:
            dialect = "postgresql" if re.search(r"postgres", spec.description, re.I) else "sqlite"
            return ToolShape(spec, "sql", parameter, tables, dialect)
    for kind, names in (("calculator", _CALC_PARAMS), ("url", ("url",)), ("search", _SEARCH_PARAMS)):
        parameter = next((p for p in names if fillable(p)), "")
        if parameter:
            return ToolShape(spec, kind, parameter)  # type: ignore[arg-type]
    missing = [r for r in required if r not in strings] or required
    why = f"required parameters {', '.join(missing)}" if missing else "no text parameter to fill"
    return ToolShape(spec, "unknown", why=why)


def _is_string(schema: Mapping[str, Any]) -> bool:
    if schema.get("type") == "string":
        return True
    return any(isinstance(o, Mapping) and o.get("type") == "string" for o in schema.get("anyOf") or ())


def _column(text: str) -> tuple[str, str]:
    parts = text.strip().split(None, 1)
    return parts[0].strip('"'), (parts[1] if len(parts) > 1 else "").upper()


# --- sub-questions ---------------------------------------------------------------------------------


def split_task(task: str) -> list[str]:
    """``task`` cut into its sub-questions, each stripped of a leading "and"/"also"."""
    text = " ".join(task.split())
    parts = [_LEADING.sub("", p.strip(" ,")).strip() for p in _SPLIT.split(text) if p and p.strip(" ,.")]
    return [p for p in parts if re.search(r"[A-Za-z]", p)] or ([text] if text else [])


def resolve_references(parts: Sequence[str]) -> list[str]:
    """Each part with "the <noun>" and a bare pronoun read as the fuller phrase an earlier part
    named: "what does the policy say" after "... mention the refund policy" asks about the refund
    policy."""
    resolved: list[str] = []
    phrases: list[str] = []
    for part in parts:
        text = part
        for phrase in reversed(phrases):
            head = phrase.split()[-1].lower()
            match = _DEFINITE.search(text)
            if match and match["noun"].lower() == head and len(phrase.split()) > 1:
                text = text[: match.start()] + "the " + phrase + text[match.end() :]
                break
        else:
            if phrases and _PRONOUN.search(text):
                text = _PRONOUN.sub(lambda m: _pronoun(m[1], phrases[-1]), text, count=1)
        resolved.append(text)
        named = mention_phrase(text)
        if named:
            phrases.append(named)
    return resolved


def _pronoun(word: str, phrase: str) -> str:
    return f"the {phrase}'s" if word.lower() == "its" else f"the {phrase}"


def mention_phrase(question: str) -> str:
    """The noun phrase after "mention(s)/about/containing/regarding ...", without its article."""
    quoted = re.search(r"[\"“']([^\"”']{2,60})[\"”']", question)
    match = _MENTION.search(question)
    if match is None:
        return ""
    if quoted and quoted.start() >= match.start("rest") - 1:
        return quoted[1].strip()
    words: list[str] = []
    for word in re.findall(r"[\w$%&.-]+|[,?;!]", _DETERMINERS.sub("", match["rest"].strip())):
        if word in ",?;!" or word.lower() in STOP_WORDS:
            break
        words.append(word.strip("."))
    return " ".join(w for w in words if w)


def data_intent(question: str) -> str:
    """``count``, ``aggregate``, ``list`` (questions over rows), ``arithmetic``, or ``lookup``."""
    if _ARITHMETIC.search(_ISO_DATE.sub(" ", question)):
        return "arithmetic"
    if _COUNT.search(question):
        return "count"
    if AGGREGATE.search(question) and not re.search(r"\bwhat (does|do|did)\b", question, re.I):
        return "aggregate"
    if _LIST.search(question):
        return "list"
    return "lookup"


def search_query(question: str) -> str:
    """What a search tool is asked: "what does X say about Y" -> "X Y"; else the question itself."""
    text = question.strip().rstrip("?.! ").strip()
    match = _SAYS.match(text)
    if match:
        rest = re.sub(r"^\s*(?:about|on|regarding)\b", "", match["rest"]).strip()
        subject = _DETERMINERS.sub("", match["subject"].strip())
        return f"{subject} {rest}".strip()
    return text


def overview(question: str) -> bool:
    """Whether ``question`` asks what a document says as a whole ("what does the policy say?")."""
    match = _SAYS.match(question.strip().rstrip("?.! "))
    return match is not None and not match["rest"].strip()


def focus(question: str) -> str:
    """What a sentence must answer: "what does the travel policy say about hotels" -> "hotels"
    (the policy's name found the passages; it does not tell their sentences apart)."""
    match = _SAYS.match(question.strip().rstrip("?.! "))
    if match is not None:
        rest = re.sub(r"^\s*(?:about|on|regarding|concerning|for)\b", "", match["rest"]).strip()
        if rest:
            return rest
    return " ".join(question.split()).rstrip("?.! ")


def counted_noun(question: str) -> str:
    """What "how many X" / "number of X" counts (``""`` when it asks no count): the word X."""
    match = re.search(r"\b(?:how many|number of)\s+(?:\w+\s+){0,2}?(\w+s)\b", question, re.IGNORECASE)
    return match[1] if match else ""


def arithmetic_expression(question: str) -> str:
    """The arithmetic in ``question`` as an expression a calculator reads, or ``""``."""
    text = _ISO_DATE.sub(" ", question).lower().replace(",", "")
    text = re.sub(r"(\d+(?:\.\d+)?)\s*(?:%|percent) of\s*(\d+(?:\.\d+)?)", r"\1 / 100 * \2", text)
    text = re.sub(r"\b(?:square root|sqrt) of\s*(\d+(?:\.\d+)?)", r"sqrt(\1)", text)
    for words, symbol in (
        ("multiplied by", "*"),
        ("divided by", "/"),
        ("times", "*"),
        ("plus", "+"),
        ("minus", "-"),
        ("over", "/"),
        ("×", "*"),
        ("^", "**"),
    ):
        text = text.replace(words, f" {symbol} ")
    text = re.sub(r"(?<=\d)\s*x\s*(?=\d)", " * ", text)
    match = re.search(r"[-(]*\s*(?:sqrt\()?\d[\d.\s()+\-*/%]*(?:\*\*[\d.\s()]+)*", text)
    if match is None:
        return ""
    expression = " ".join(match[0].split()).strip(" +-*/")
    return expression if re.search(r"[-+*/]|sqrt", expression) else ""
