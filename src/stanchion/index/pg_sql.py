"""The SQL a PostgreSQL search runs: BM25 over the postings table, pgvector's nearest neighbours,
and a ``SearchFilter`` as a WHERE clause over jsonb metadata and ``text[]`` access groups.
Statements and their parameters only; running them is ``postgres.PostgresStore``'s."""

from __future__ import annotations

from psycopg.types.json import Jsonb

from stanchion.core.filters import Condition, Scalar, SearchFilter
from stanchion.index.bm25 import K1, B
from stanchion.index.pg_migrations import SCHEMA
from stanchion.index.store import Vector

__all__ = ["bm25_sql", "vector_sql", "where_sql"]

_S = SCHEMA


def bm25_sql(clause: str, window: int | None, *, lookup: bool = False) -> str:
    """BM25 exactly as ``bm25.BM25Index`` scores it, so both backends rank alike.

    With a ``window``, the best ``window`` matches are checked against the filter ``clause``
    (parameters: terms, their df, their counts in the query, window, the filter's, k). Without,
    the admitted chunks are found first and only they are scored (parameters: terms, their df,
    their counts, the filter's, k). N and the mean
    length come from ``corpus_stats``; df counts all postings (a filter narrows candidates, not
    statistics).

    A posting scores ``weight * tf / (tf + c0 + c1 * len)`` with the per-query constants
    ``weight = qtf * (k1 + 1) * idf`` (qtf: the term's count in the query), ``c0 = k1 (1 - b)``, ``c1 = k1 b / avgdl``: the same formula, fewer
    operations per row. Each term's postings come from its own index scan (LATERAL), so the term's
    weight travels with them instead of being joined to every posting.

    With ``lookup`` (for a filter admitting few chunks), each admitted chunk's postings of the
    query terms are read by their (chunk, term) key instead of every posting of the terms.
    """
    prefilter = window is None and clause
    ctes = [
        f"s AS (SELECT chunks::float8 AS n, {K1 * (1 - B)}::float8 AS c0, {K1 * B}::float8"
        " / CASE WHEN chunks > 0 AND length > 0 THEN length::float8 / chunks ELSE 1.0 END AS c1"
        f" FROM {_S}.corpus_stats)",
        f"w AS MATERIALIZED (SELECT q.term, q.qtf * {K1 + 1}::float8 * ln(1 + (s.n - q.df + 0.5) / (q.df + 0.5))"
        " AS weight FROM unnest(%s::text[], %s::float8[], %s::float8[]) AS q(term, df, qtf) CROSS JOIN s"
        " WHERE q.df > 0)",
    ]
    if prefilter:
        ctes.append(f"admitted AS MATERIALIZED (SELECT c.rowid FROM {_S}.chunks c WHERE {clause})")
    if lookup:
        ctes.append(
            "scored AS (SELECT a.rowid AS chunk, sum(w.weight * p.tf / (p.tf + s.c0 + s.c1 * p.len)) AS score"
            f" FROM admitted a CROSS JOIN w CROSS JOIN s CROSS JOIN LATERAL (SELECT tf, len FROM {_S}.postings"
            " WHERE chunk = a.rowid AND term = w.term OFFSET 0) p GROUP BY a.rowid)"  # OFFSET 0: a lookup each
        )
        return (
            f"WITH {', '.join(ctes)} SELECT c.id, t.score FROM (SELECT chunk, score FROM scored"
            f" ORDER BY score DESC, chunk LIMIT %s) t JOIN {_S}.chunks c ON c.rowid = t.chunk"
            " ORDER BY t.score DESC, t.chunk"
        )
    ctes.append(
        "scored AS (SELECT p.chunk, sum(w.weight * p.tf / (p.tf + s.c0 + s.c1 * p.len)) AS score"
        f" FROM w CROSS JOIN s CROSS JOIN LATERAL (SELECT chunk, tf, len FROM {_S}.postings"
        " WHERE term = w.term) p"
        + (" WHERE p.chunk IN (SELECT rowid FROM admitted)" if prefilter else "")
        + " GROUP BY p.chunk)"
    )
    # Ties rank by chunk rowid, as the in-memory index ranks them by row.
    best = "(SELECT chunk, score FROM scored ORDER BY score DESC, chunk LIMIT %s) t"
    checked = f" WHERE {clause}" if clause and not prefilter else ""
    return (
        f"WITH {', '.join(ctes)} SELECT c.id, t.score FROM {best} JOIN {_S}.chunks c ON c.rowid = t.chunk"
        f"{checked} ORDER BY t.score DESC, t.chunk" + (" LIMIT %s" if window is not None else "")
    )


def vector_sql(vector: Vector, k: int, where: SearchFilter, *, exact: bool) -> tuple[str, list[object]]:
    """Cosine top-k: via the HNSW index, or ``exact`` (every admitted row scored, then sorted)."""
    clause, params = where_sql(where)
    where_clause = f"WHERE {clause}" if clause else ""
    if exact:
        # MATERIALIZED keeps the planner from answering ORDER BY ... LIMIT with the HNSW index.
        return (
            f"WITH f AS MATERIALIZED (SELECT c.rowid, c.id, c.embedding <=> %s AS d FROM {_S}.chunks c"
            f" {where_clause}) SELECT id, 1 - d FROM f ORDER BY d, rowid LIMIT %s",
            [vector, *params, k],
        )
    return (
        f"SELECT c.id, 1 - (c.embedding <=> %s) FROM {_S}.chunks c {where_clause}"
        " ORDER BY c.embedding <=> %s LIMIT %s",
        [vector, *params, vector, k],
    )


def where_sql(where: SearchFilter) -> tuple[str, list[object]]:
    """A condition on chunk rows ``c`` (no leading WHERE/AND; empty when nothing is filtered)."""
    parts: list[str] = []
    params: list[object] = []
    if where.groups is not None:
        if where.groups:
            parts.append("(cardinality(c.access_groups) = 0 OR c.access_groups && %s::text[])")
            params.append(sorted(where.groups))
        else:
            parts.append("cardinality(c.access_groups) = 0")
    for cond in where.conditions:
        sql, cond_params = _condition_sql(cond)
        parts.append(sql)
        params.extend(cond_params)
    return " AND ".join(parts), params


_SQL_OPS = {"eq": "=", "ne": "=", "in": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _condition_sql(cond: Condition) -> tuple[str, list[object]]:
    """One condition with ``SearchFilter.admits`` semantics (``ne`` is "no element equals")."""
    wanted = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    negate = "NOT " if cond.op == "ne" else ""
    if cond.op in ("eq", "in", "ne") and all(isinstance(v, str) and not _numeric(v) for v in wanted):
        # Fast path, GIN-indexable: only a JSON string (alone or in a list) can equal such a value.
        params: list[object] = []
        for value in wanted:
            params += [Jsonb({cond.key: value}), Jsonb({cond.key: [value]})]
        contained = " OR ".join(["c.metadata @> %s"] * len(params))
        return f"{negate}({contained})", params
    op = _SQL_OPS[cond.op]
    # Keys match ``[A-Za-z_][A-Za-z0-9_.-]*`` (Condition checks), so the literal needs no escaping.
    field = f"(c.metadata -> '{cond.key}')"
    on_elements, element_params = _any_value(op, wanted, "e.v")
    on_scalar, scalar_params = _any_value(op, wanted, field)
    # A scalar is tested in place; only a list is expanded (a set-returning call per row costs 2x).
    holds = (
        f"(CASE WHEN jsonb_typeof({field}) = 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements("
        f"{field}) AS e(v) WHERE {on_elements}) ELSE COALESCE({on_scalar}, false) END)"
    )
    return negate + holds, element_params + scalar_params


def _any_value(op: str, wanted: tuple[Scalar, ...], v: str) -> tuple[str, list[object]]:
    tests, params = [], []
    for value in wanted:
        sql, value_params = _value_test(op, value, v)
        tests.append(sql)
        params.extend(value_params)
    return "(" + " OR ".join(tests) + ")", params


def _value_test(op: str, value: Scalar, v: str) -> tuple[str, list[object]]:
    """SQL comparing the JSON value ``v`` with ``value`` the way ``filters._compare`` does.

    A JSON null or a missing key (SQL NULL) never matches, like ``None`` in ``admits``.
    """
    text = f"({v} #>> '{{}}') COLLATE \"C\""  # code-point order, like Python's str comparison
    if isinstance(value, bool):
        if op != "=":
            return "false", []
        return f"({v} = %s OR (jsonb_typeof({v}) = 'number' AND ({v} #>> '{{}}')::float8 = %s))", [
            Jsonb(value),
            float(value),
        ]
    if isinstance(value, int | float):
        boolean = "false"
        params: list[object] = [float(value), str(value)]
        if op == "=" and float(value) in (0.0, 1.0):  # Python: True == 1, False == 0
            boolean = f"{v} = %s"
            params.append(Jsonb(float(value) == 1.0))
        return (
            f"CASE jsonb_typeof({v}) WHEN 'number' THEN ({v} #>> '{{}}')::float8 {op} %s"
            f" WHEN 'string' THEN {text} {op} %s WHEN 'boolean' THEN {boolean} ELSE false END",
            params,
        )
    return f"(jsonb_typeof({v}) IN ('string', 'number') AND {text} {op} %s)", [value]


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- adapters -------------------------------------------------------------------------------------
