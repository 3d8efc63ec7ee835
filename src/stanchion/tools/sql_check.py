"""The first of the ``sql`` tool's guards: one read-only statement, read token by token.

The query is split into tokens the way the database's own lexer splits it (comments, quoted
strings, quoted identifiers, PostgreSQL's ``E'...'`` and ``$tag$...$tag$``), so a keyword hidden
in a comment or a string is not a keyword, and a keyword hidden from us is one the engine would not
see either. Then: exactly one statement; it starts with SELECT, WITH or VALUES; no word that writes,
attaches, changes settings or ends the transaction; no function on the deny-list. A refusal says
what to change, in words a model can act on.

This layer makes refusals readable; it is not the only wall. The engine guards behind it hold on
their own: SQLite's authorizer (``sql_sqlite.py``) and PostgreSQL's read-only transaction, plan
check and the role's grants (``sql_postgres.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = [
    "Dialect",
    "QueryRefused",
    "Token",
    "check_query",
    "forbidden_function",
    "statement_body",
    "tokenize",
]

Dialect = Literal["sqlite", "postgresql"]

# Words that make a statement write, attach, load, change settings or leave the transaction.
_FORBIDDEN_WORDS = frozenset(
    {
        "insert", "update", "delete", "merge", "upsert", "create", "drop", "alter", "truncate",
        "attach", "detach", "pragma", "vacuum", "reindex", "grant", "revoke", "copy", "into",
        "commit", "rollback", "savepoint", "begin", "explain", "checkpoint", "listen", "notify",
        "prepare", "execute", "deallocate", "refresh", "cluster",
    }
)  # fmt: skip
# Functions that read files, sleep, change state or run SQL of their own.
_FORBIDDEN_FUNCTIONS = frozenset(
    {
        # SQLite
        "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "randomblob", "zeroblob",
        # PostgreSQL
        "set_config", "pg_sleep", "pg_sleep_for", "pg_sleep_until", "pg_read_file", "pg_read_binary_file",
        "pg_stat_file", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
        "pg_notify", "nextval", "setval", "currval", "lastval", "txid_current", "pg_current_xact_id",
        "pg_promote", "pg_switch_wal", "pg_log_backend_memory_contexts", "loread", "lowrite",
        "pg_import_system_collations", "dblink",
    }
)  # fmt: skip
_FORBIDDEN_PREFIXES = (
    "lo_", "dblink_", "pg_ls_", "pg_read_", "pg_file_", "pg_advisory", "pg_try_advisory", "pg_logical_",
    "pg_replication_", "pg_create_", "pg_drop_", "pg_stat_reset", "pg_backup_", "pg_wal_",
    "query_to_xml", "cursor_to_xml", "table_to_xml", "schema_to_xml", "database_to_xml",
)  # fmt: skip
# PostgreSQL folds a call of an immutable function on constants while it plans, so these would put
# a value of any size into the EXPLAIN output the plan check reads (repeat('x', 500000000)).
_BIG_VALUE_FUNCTIONS = frozenset({"repeat", "lpad", "rpad", "array_fill", "format"})

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


class QueryRefused(ValueError):
    """The query breaks a rule; the message says which and what to write instead."""


@dataclass(frozen=True, slots=True)
class Token:
    """``kind``: word (lower-cased), name (a quoted identifier, unquoted), string, number, punct."""

    kind: Literal["word", "name", "string", "number", "punct"]
    text: str
    end: int = field(default=0, compare=False)  # where it ends in the query


def tokenize(sql: str, dialect: Dialect) -> list[Token]:
    """``sql`` as the engine's lexer would cut it; comments dropped. QueryRefused for a string,
    identifier or comment left open (where the engine and this reading could part ways)."""
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c, before = sql[i], len(tokens)
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            i = _comment_end(sql, i, nested=dialect == "postgresql")
        elif c == "'":
            # PostgreSQL's E'...' reads backslash escapes; every other string doubles its quote.
            escapes = dialect == "postgresql" and bool(tokens) and _is_e_prefix(sql, i, tokens[-1])
            if escapes:
                tokens.pop()
                before -= 1
            text, i = _quoted(sql, i, "'", backslash=escapes)
            tokens.append(Token("string", text))
        elif c == '"' or (dialect == "sqlite" and c == "`"):
            text, i = _quoted(sql, i, c, backslash=False)
            tokens.append(Token("name", text))
        elif dialect == "sqlite" and c == "[":
            end = sql.find("]", i)
            if end < 0:
                raise QueryRefused("an identifier opened with [ is never closed")
            tokens.append(Token("name", sql[i + 1 : end]))
            i = end + 1
        elif dialect == "postgresql" and (tag := _DOLLAR_TAG.match(sql, i)):
            end = sql.find(tag.group(), tag.end())
            if end < 0:
                raise QueryRefused(f"a string opened with {tag.group()} is never closed")
            tokens.append(Token("string", sql[tag.end() : end]))
            i = end + len(tag.group())
        elif word := _WORD.match(sql, i):
            tokens.append(Token("word", word.group().lower()))
            i = word.end()
        elif number := _NUMBER.match(sql, i):
            tokens.append(Token("number", number.group()))
            i = number.end()
        else:
            tokens.append(Token("punct", c))
            i += 1
        if len(tokens) > before:
            tokens[-1] = replace(tokens[-1], end=i)
    return tokens


def statement_body(sql: str, dialect: Dialect) -> str:
    """``sql`` without the semicolons and comments that end it, ready to be nested in parentheses."""
    tokens = tokenize(sql, dialect)
    while tokens and tokens[-1] == Token("punct", ";"):
        tokens.pop()
    return sql[: tokens[-1].end] if tokens else ""


def check_query(sql: str, dialect: Dialect) -> None:
    """QueryRefused unless ``sql`` is one read-only SELECT (or WITH ... SELECT, or VALUES)."""
    tokens = tokenize(sql, dialect)
    while tokens and tokens[-1] == Token("punct", ";"):
        tokens.pop()
    if not tokens:
        raise QueryRefused("the query is empty; write one SELECT statement")
    if Token("punct", ";") in tokens:
        raise QueryRefused("one statement at a time: remove the ';' and everything after it")
    first = next((t for t in tokens if t != Token("punct", "(")), tokens[0])
    if first.kind != "word" or first.text not in {"select", "with", "values"}:
        raise QueryRefused(
            f"only read-only queries are allowed (SELECT, or WITH ... SELECT); {first.text.upper()!r} is not"
        )
    for at, token in enumerate(tokens):
        called = at + 1 < len(tokens) and tokens[at + 1] == Token("punct", "(")
        if token.kind == "punct" and (token.text == "$" or (token.text == "?" and dialect == "sqlite")):
            raise QueryRefused("write values into the query itself; parameters are not supported")
        if token.kind == "word" and token.text in _FORBIDDEN_WORDS and not called:
            raise QueryRefused(
                f"{token.text.upper()} is not allowed: the database is read-only to this tool "
                "(a column of that name can be written in double quotes)"
            )
        if token.kind == "word" and token.text == "replace" and not called:
            raise QueryRefused("REPLACE is not allowed: the database is read-only to this tool")
        if called and token.kind in ("word", "name") and forbidden_function(token.text.lower(), dialect):
            raise QueryRefused(f"the function {token.text}() is not allowed in this tool's queries")


def forbidden_function(name: str, dialect: Dialect) -> bool:
    """``name`` (lower case) reads files, sleeps, changes state, runs SQL of its own, or (on
    PostgreSQL) builds a value of any size from a few characters."""
    if dialect == "postgresql" and name in _BIG_VALUE_FUNCTIONS:
        return True
    return name in _FORBIDDEN_FUNCTIONS or name.startswith(_FORBIDDEN_PREFIXES)


def _is_e_prefix(sql: str, quote_at: int, previous: Token) -> bool:
    """The token just before a quote is the single letter E, touching it: E'...'."""
    return previous == Token("word", "e") and quote_at >= 1 and sql[quote_at - 1] in "eE"


def _comment_end(sql: str, start: int, *, nested: bool) -> int:
    depth, i = 0, start
    while i < len(sql):
        if sql.startswith("/*", i) and (nested or depth == 0):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise QueryRefused("a comment opened with /* is never closed")


def _quoted(sql: str, start: int, quote: str, *, backslash: bool) -> tuple[str, int]:
    """The text of a quoted token starting at ``start`` and the index after it."""
    out: list[str] = []
    i = start + 1
    while i < len(sql):
        c = sql[i]
        if backslash and c == "\\" and i + 1 < len(sql):
            out.append(sql[i + 1])
            i += 2
        elif c == quote:
            if sql.startswith(quote * 2, i):
                out.append(quote)
                i += 2
            else:
                return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    what = "a string" if quote == "'" else "an identifier"
    raise QueryRefused(f"{what} opened with {quote} is never closed")
