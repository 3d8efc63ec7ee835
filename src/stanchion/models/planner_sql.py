"""The planner's SQL, written by rules from the schema an sql tool's description lists.

**SQL by rules** (``write_sql``), from the table schema in the tool's description:

* the table is the one the question names (singular or plural), else the only one;
* ``how many`` / ``number of`` / ``count`` / "are there any" -> ``COUNT(*)`` (``COUNT(DISTINCT c)``
  for "how many customers", ``GROUP BY c`` for "per/by/for each c"); "which c has the most/fewest"
  -> ``GROUP BY c ORDER BY COUNT(*)``, one row; ``average``/``total``/``largest``/... ->
  ``AVG/SUM/MAX/MIN`` of the numeric or date column the question names, "latest/oldest" -> the row
  ordered by a date-like column; ``list``/``which``/``show`` -> the id and title-like columns
  (``DISTINCT c`` for "which customers"), at most ``list_limit`` rows;
* ``WHERE``: "mention(s)/about/containing/regarding X" -> ``X`` as a phrase in every free-text
  column (``FREE_TEXT``: subject, body, title, description, ...), ``LIKE`` on SQLite and ``ILIKE``
  on PostgreSQL; a value of ``CATEGORY_VALUES`` used as one ("open tickets", "tickets that are
  still pending", "not closed") on a column named status, state, stage, priority or severity; a
  capitalised name after "from/for/by/of", "did/has" or the column's own name on a column of
  ``ENTITY_COLUMNS`` (customer, client, company, ...); "in January 2026", "in 2026",
  "since/after/before 2026-02-01" on a date-like column; "ticket 12" on ``id``.
* a relative time ("last week", "yesterday") needs today's date, which the rules do not have: no
  SQL is written rather than a query that silently leaves the condition out.

The phrase of a mention is matched whole ("refund policy", not "refund"): on the labelled set
(``bench/data/planner_tasks.jsonl``, ``bench/planner_accuracy.py``) the key-term variant counts
tickets that mention refunds but not the policy; ``PlannerRules(mention="head")`` keeps that
variant to measure against.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from stanchion.models.planner_rules import (
    AGGREGATE,
    RELATIVE_TIME,
    STOP_WORDS,
    Table,
    ToolShape,
    data_intent,
    mention_phrase,
)

__all__ = ["PlannerRules", "column_hits", "mentions_table", "names_row", "pick_table"]

FREE_TEXT = frozenset(
    {
        "subject", "body", "title", "description", "text", "content", "message", "summary", "notes",
        "note", "comment", "comments", "details",
    }
)  # fmt: skip
CATEGORY_VALUES: Mapping[str, frozenset[str]] = {
    "status": frozenset(
        {
            "open", "closed", "pending", "resolved", "new", "active", "inactive", "cancelled", "canceled",
            "done", "escalated", "waiting", "archived", "draft", "approved", "rejected", "completed",
            "failed", "paid", "unpaid", "overdue", "shipped", "delivered", "returned",
        }
    ),
    "priority": frozenset({"low", "medium", "high", "urgent", "critical"}),
}  # fmt: skip
_CATEGORY_COLUMNS = {
    "status": "status", "state": "status", "stage": "status", "priority": "priority", "severity": "priority",
}  # fmt: skip
ENTITY_COLUMNS = (
    "customer", "client", "company", "account", "user", "author", "owner", "assignee", "agent", "vendor",
    "supplier", "carrier", "name",
)  # fmt: skip
_MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
)  # fmt: skip
_MONTH = r"(?P<month>" + "|".join(m[:3] + r"[a-z]*\.?" for m in _MONTHS) + ")"


# --- SQL -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannerRules:
    """The SQL writer's choices. ``mention``: ``phrase`` matches "refund policy" whole, ``head``
    its first word ("refund"), kept to measure against; ``list_limit``: rows a list asks for."""

    mention: Literal["phrase", "head"] = "phrase"
    list_limit: int = 50
    free_text: frozenset[str] = field(default=FREE_TEXT)

    def write_sql(self, question: str, shape: ToolShape) -> str | None:
        """One SELECT answering ``question`` over ``shape``'s tables, or None when the rules find
        no table or no column to aggregate."""
        table = pick_table(question, shape.tables)
        if table is None or RELATIVE_TIME.search(question):
            return None
        lowered = question.lower()
        where = self._conditions(question, table, shape.dialect)
        if where is None:
            return None
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        intent = data_intent(question)
        mentioned = [c for c in table.names if _names_column(lowered, c)]
        most = re.search(
            r"\b(?:which|what)\s+(\w+)\s+(?:has|have|had|with|got)\s+the\s+(most|fewest|least)\b", lowered
        )
        ranked = _match_column(most[1], table) if most else None
        if most and ranked:
            direction = "DESC" if most[2] == "most" else "ASC"
            return (
                f"SELECT {ranked}, COUNT(*) AS n FROM {table.name}{clause} GROUP BY {ranked} "
                f"ORDER BY n {direction}, {ranked} LIMIT 1"
            )
        if intent == "count":
            group = re.search(r"\b(?:per|by|for each|each|grouped by)\s+(\w+)", lowered)
            group_col = _match_column(group[1], table) if group else None
            if group_col:
                return (
                    f"SELECT {group_col}, COUNT(*) AS n FROM {table.name}{clause} "
                    f"GROUP BY {group_col} ORDER BY n DESC"
                )
            counted = re.search(r"how many (?:different |distinct |unique )?(\w+)", lowered)
            distinct = _match_column(counted[1], table) if counted else None
            if distinct and not _is_table_word(counted[1] if counted else "", table):
                return f"SELECT COUNT(DISTINCT {distinct}) AS n FROM {table.name}{clause}"
            return f"SELECT COUNT(*) AS n FROM {table.name}{clause}"
        if intent == "aggregate":
            return self._aggregate(lowered, table, clause, mentioned)
        columns = _listed_columns(lowered, table, mentioned)
        if columns[0] == "DISTINCT":
            col = columns[1]
            return f"SELECT DISTINCT {col} FROM {table.name}{clause} ORDER BY {col} LIMIT {self.list_limit}"
        order = _id_column(table)
        tail = f" ORDER BY {order}" if order else ""
        return f"SELECT {', '.join(columns)} FROM {table.name}{clause}{tail} LIMIT {self.list_limit}"

    def _aggregate(self, lowered: str, table: Table, clause: str, mentioned: list[str]) -> str | None:
        word = AGGREGATE.search(lowered)
        assert word is not None
        kind = word[1]
        numeric = [
            c for c in table.of_type("INT", "REAL", "NUM", "DEC", "FLOAT", "DOUBLE", "BIGINT", "SMALLINT")
        ]
        dates = _date_columns(table)
        if kind in ("latest", "earliest", "most recent", "newest", "oldest"):
            col = next((c for c in mentioned if c in dates), dates[0] if dates else None)
            if col is None:
                return None
            direction = "DESC" if kind in ("latest", "most recent", "newest") else "ASC"
            columns = _listed_columns(lowered, table, [])
            shown = columns[1:] if columns[0] == "DISTINCT" else columns
            shown = [*shown, col] if col not in shown else shown
            return f"SELECT {', '.join(shown)} FROM {table.name}{clause} ORDER BY {col} {direction} LIMIT 1"
        target = next((c for c in mentioned if c in numeric and c != _id_column(table)), None)
        if target is None:
            target = next((c for c in mentioned if c in dates), None)
        if target is None:
            return None
        function = {"average": "AVG", "mean": "AVG", "total": "SUM", "sum": "SUM"}.get(kind)
        if function is None:
            function = "MAX" if kind in ("maximum", "largest", "highest") else "MIN"
        if function in ("AVG", "SUM") and target not in numeric:
            return None
        return f"SELECT {function}({target}) AS value FROM {table.name}{clause}"

    def _conditions(self, question: str, table: Table, dialect: str) -> list[str] | None:
        """The WHERE conditions, or None when the question asks for one the table cannot hold
        (a mention, and no text column to find it in)."""
        lowered = question.lower()
        conditions: list[str] = []
        like = "ILIKE" if dialect == "postgresql" else "LIKE"
        phrase = mention_phrase(question)
        texts = table.of_type("TEXT", "VARCHAR", "CHAR", "STRING", "CLOB")
        free = [c for c in texts if c.lower() in self.free_text] or [
            c
            for c in texts
            if c.lower() not in _CATEGORY_COLUMNS
            and c.lower() not in ENTITY_COLUMNS
            and c not in _date_columns(table)
        ]
        if phrase and not free:
            return None  # counting every row instead would answer another question
        if phrase:
            pattern = phrase.split()[0] if self.mention == "head" else phrase
            if (
                " " not in pattern
                and len(pattern) > 3
                and pattern.endswith("s")
                and not pattern.endswith("ss")
            ):
                pattern = pattern[:-1]
            value = _literal(f"%{pattern.lower()}%")
            conditions.append("(" + " OR ".join(f"{c} {like} {value}" for c in free) + ")")
        outside = lowered.replace(phrase.lower(), " ") if phrase else lowered
        conditions += _category_conditions(outside, table)
        conditions += _entity_conditions(question.replace(phrase, " ") if phrase else question, table, like)
        conditions += _date_conditions(outside, table)
        ident = _id_column(table)
        singular = _singular(table.name)
        number = re.search(
            rf"\b(?:{re.escape(singular)}|{re.escape(table.name)}|id|number|#)\s*#?\s*(\d+)\b", lowered
        )
        if ident and number and not conditions:
            conditions.append(f"{ident} = {int(number[1])}")
        return conditions


def pick_table(question: str, tables: Sequence[Table]) -> Table | None:
    lowered = question.lower()
    named = [t for t in tables if _is_table_word_in(lowered, t)]
    if named:
        return named[0]
    if len(tables) == 1:
        return tables[0]
    scored = sorted(tables, key=lambda t: -sum(_names_column(lowered, c) for c in t.names))
    if scored and any(_names_column(lowered, c) for c in scored[0].names):
        return scored[0]
    return None


def names_row(question: str, shape: ToolShape) -> bool:
    """Whether ``question`` names one row by number: "ticket 12", "ticket #12"."""
    lowered = question.lower()
    return any(
        re.search(rf"\b{re.escape(_singular(t.name))}s?\s*#?\s*\d+\b", lowered) is not None
        for t in shape.tables
    )


def mentions_table(question: str, shape: ToolShape) -> bool:
    """Whether ``question`` names one of ``shape``'s tables (or, weaker, a column: see ``column_hits``)."""
    return any(_is_table_word_in(question.lower(), t) for t in shape.tables)


def column_hits(question: str, shape: ToolShape) -> int:
    lowered = question.lower()
    return sum(_names_column(lowered, c) for t in shape.tables for c in t.names if c.lower() != "id")


def _singular(word: str) -> str:
    word = word.lower()
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("ses") or word.endswith("xes"):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _is_table_word(word: str, table: Table) -> bool:
    return bool(word) and _singular(word) == _singular(table.name.replace("_", " ").split()[-1])


def _is_table_word_in(lowered: str, table: Table) -> bool:
    noun = _singular(table.name.replace("_", " ").split()[-1])
    return re.search(rf"\b{re.escape(noun)}(?:s|es)?\b", lowered) is not None


def _names_column(lowered: str, column: str) -> bool:
    words = column.lower().replace("_", " ")
    if words in ("id",):
        return False
    return re.search(rf"\b{re.escape(_singular(words))}(?:s|es)?\b", lowered) is not None


def _match_column(word: str, table: Table) -> str | None:
    return next((c for c in table.names if _singular(c.replace("_", " ")) == _singular(word)), None)


def _id_column(table: Table) -> str | None:
    return next((c for c in table.names if c.lower() == "id"), None)


def _date_columns(table: Table) -> list[str]:
    return [
        c
        for c, t in table.columns
        if t.startswith(("DATE", "TIMESTAMP", "TIME"))
        or re.search(r"(^|_)(date|at|on|time|day|created|updated|opened|closed)$", c.lower())
    ]


def _listed_columns(lowered: str, table: Table, mentioned: list[str]) -> list[str]:
    """What a list shows: ``["DISTINCT", c]`` for "which customers ...", else the id, title-like
    and any named columns."""
    asked = re.search(
        r"\b(?:which|list(?: the| all)?|show(?: the| all)?|what are the|name the)\s+(\w+)", lowered
    )
    if asked:
        col = _match_column(asked[1], table)
        if col and not _is_table_word(asked[1], table):
            return ["DISTINCT", col]
    shown: list[str] = []
    ident = _id_column(table)
    if ident:
        shown.append(ident)
    title = next(
        (c for c in table.names if c.lower() in ("subject", "title", "name", "headline", "summary")), None
    )
    if title:
        shown.append(title)
    for c in mentioned:
        if c not in shown and c.lower() not in FREE_TEXT:
            shown.append(c)
    return shown or ["*"]


def _category_conditions(lowered: str, table: Table) -> list[str]:
    conditions: list[str] = []
    noun = _singular(table.name.replace("_", " ").split()[-1])
    for column in table.names:
        vocabulary = CATEGORY_VALUES.get(_CATEGORY_COLUMNS.get(column.lower(), ""))
        if not vocabulary:
            continue
        found: list[str] = []
        negated: list[str] = []
        for value in sorted(vocabulary):
            adjective = rf"\b{value}\b(?=(?:\s+[a-z]+){{0,2}}\s+{noun}s?\b|\s+ones\b)"
            predicate = (
                rf"\b(?:are|is|were|was|still|currently|marked(?: as)?|status(?: is| of)?|{column.lower()}"
                rf"(?: is| =)?)\s+(?P<not>not\s+)?(?:(?:\w+\s+(?:or|and)\s+)?){value}\b"
            )
            alternative = rf"\b\w+\s+or\s+{value}\s+{noun}s?\b"
            m = re.search(predicate, lowered)
            if m and m["not"]:
                negated.append(value)
            elif re.search(adjective, lowered) or m or re.search(alternative, lowered):
                found.append(value)
        if found:
            values = ", ".join(_literal(v) for v in found)
            conditions.append(
                f"{column} = {_literal(found[0])}" if len(found) == 1 else f"{column} IN ({values})"
            )
        for value in negated:
            conditions.append(f"{column} <> {_literal(value)}")
    return conditions


def _entity_conditions(question: str, table: Table, like: str) -> list[str]:
    columns = [c for c in table.names if c.lower() in ENTITY_COLUMNS]
    if not columns:
        return []
    name = r"(?P<name>[A-Z][\w'&.-]*(?:\s+(?:&\s+)?[A-Z][\w'&.-]*)*)"
    for column in columns:
        # "customer Tahoe Solar", "from/for/by Tahoe Solar", "did Tahoe Solar open": a capitalised name.
        match = (
            re.search(rf"\b{column}\s+{name}", question, re.IGNORECASE)
            or re.search(rf"\b(?:from|for|by|of)\s+{name}", question)
            or re.search(rf"\b(?:did|does|do|has|have|had)\s+{name}", question)
        )
        first = match["name"].split()[0].lower() if match else ""
        if (
            match
            and first not in STOP_WORDS | {"i", "we"}
            and not any(first.startswith(m[:3]) for m in _MONTHS)
        ):
            return [f"{column} {like} {_literal('%' + match['name'].strip('.') + '%')}"]
    return []


def _date_conditions(lowered: str, table: Table) -> list[str]:
    dates = _date_columns(table)
    if not dates:
        return []
    col = next((c for c in dates if "creat" in c.lower()), dates[0])
    iso = r"(?P<date>\d{4}-\d{2}-\d{2})"
    conditions: list[str] = []
    for word, op in (("since", ">="), ("from", ">="), ("after", ">"), ("before", "<"), ("until", "<=")):
        m = re.search(rf"\b{word}\s+{iso}", lowered)
        if m:
            conditions.append(f"{col} {op} {_literal(m['date'])}")
    m = re.search(rf"\bin\s+{_MONTH}(?:\s+(?P<year>\d{{4}}))?\b", lowered)
    if m:
        month = next(i for i, name in enumerate(_MONTHS, start=1) if m["month"].startswith(name[:3]))
        prefix = f"{m['year']}-{month:02d}" if m["year"] else f"____-{month:02d}"
        conditions.append(f"{col} LIKE {_literal(prefix + '-%')}")
    elif (y := re.search(r"\bin\s+(?P<year>(?:19|20)\d\d)\b", lowered)) is not None:
        conditions.append(f"{col} LIKE {_literal(y['year'] + '-%')}")
    return conditions


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
