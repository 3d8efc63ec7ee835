"""Property: any filter string either parses or is a ``SearchError`` (the API's 400 naming it),
and a filter that parses runs in every store, selecting exactly what ``SearchFilter.admits``
says. No string reaches a store as a query it cannot run: never a database error, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stanchion.core.filters import build_filter
from stanchion.errors import SearchError
from stanchion.index.sqlite import SQLiteStore
from stanchion.index.store import DocumentWrite, Store
from stanchion.testing.store_suite import DIM, MODEL, ids, make_write, unit

# Derandomized and without an example database, so CI tries the same strings on every run.
_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # the store is only read
)
KEYS = ["team", "page", "score", "created_at", "tags", "flag", "missing"]
# Values at the edges of what parses: empty lists, numbers beyond 64 bits or a float, words that
# float() reads as numbers, text no store holds, digits of other scripts.
EDGES = [
    "",
    ",",
    ",,,",
    " , ",
    "nan",
    "-inf",
    "Infinity",
    "1e400",
    "-1e999",
    "9" * 400,
    str(2**63),
    str(2**63 - 1),
    str(-(2**63)),
    str(-(2**63) - 1),
    "1_000",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: int() reads 3
    "true",
    "FALSE",
    "0",
    "1",
    "1.0",
    "2.5",
    "-0.0",
    "2025-03-01",
    "ops",
    "x",
    "a\x00b",
    "\ud800",
    "\udfff\ud83d",
    "'; DROP TABLE chunks; --",
    '"',
    "%s",
    "?",
]
_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
_VALUE = st.one_of(
    st.sampled_from(EDGES),
    st.integers().map(str),
    st.floats().map(repr),
    _TEXT,
)
_VALUES = st.one_of(_VALUE, st.lists(_VALUE, min_size=1, max_size=4).map(",".join))
_KEY = st.one_of(st.sampled_from(KEYS), st.sampled_from([*KEYS, "a.b", "_x", "1bad", "é", "k-1"]), _TEXT)
_OPS = ["=", "!=", ">", ">=", "<", "<="]
_OP = st.one_of(st.sampled_from(_OPS), st.sampled_from([*_OPS, "==", "=>", "<>", "!"]))
FILTERS = st.one_of(
    st.builds(lambda k, op, v: f"{k}{op}{v}", _KEY, _OP, _VALUES),
    st.builds(lambda k, op, v: f" {k} {op} {v} ", _KEY, _OP, _VALUES),
    _TEXT,
)


def _corpus() -> list[DocumentWrite]:
    """Metadata of every type and edge a filter meets. Floats are ones SQLite and PostgreSQL write
    as Python does: a number compared with a word compares as text, and -0.0 or 1e300 read
    differently there (``0.0``, 1 and 300 zeros), a known limit outside this property."""
    metadata: list[dict[str, object]] = [
        {
            "team": "ops",
            "page": 3,
            "score": 2.5,
            "created_at": "2025-01-10",
            "tags": ["x", "y"],
            "flag": True,
        },
        {"team": "hr", "page": -7, "score": -0.5, "created_at": "2025-06-01", "tags": ["3"], "flag": False},
        {"team": "3", "page": 2**63 - 1, "score": 12.75, "tags": [], "flag": "true"},
        {"team": "nan", "page": "1000", "score": "2.5", "created_at": "2025-03-01T10:00:00+00:00"},
        {"team": "", "page": 0, "score": 1.0, "flag": 1},
        {},
    ]
    return [make_write(f"d{i}", ["freight"], [unit(1, i / 10)], metadata=m) for i, m in enumerate(metadata)]


@pytest.fixture(params=["sqlite", "postgres"])
def populated(
    request: pytest.FixtureRequest, tmp_path: object
) -> Iterator[tuple[Store, list[DocumentWrite]]]:
    store: Store
    if request.param == "postgres":
        from stanchion.index.postgres import PostgresStore

        store = PostgresStore(request.getfixturevalue("pg_dsn"), dim=DIM, pool_size=2)
    else:
        store = SQLiteStore(request.getfixturevalue("tmp_path") / "index.db")
    writes = _corpus()
    store.write(writes, model=MODEL)
    try:
        yield store, writes
    finally:
        store.close()


@_SETTINGS
@given(exprs=st.lists(FILTERS, min_size=1, max_size=2))
def test_any_filter_string_is_a_search_error_or_runs_as_the_reference_says(
    populated: tuple[Store, list[DocumentWrite]], exprs: list[str]
) -> None:
    """Parse errors are SearchError (a 400); a parsed filter never fails inside a store."""
    store, writes = populated
    try:
        where = build_filter(exprs)
    except SearchError as exc:
        assert str(exc)  # says what is wrong
        return
    expected = sorted(
        c.id for w in writes for c in w.chunks if where.admits(dict(c.metadata), c.access_groups)
    )
    assert sorted(ids(store.keyword_search(["freight"], 100, where))) == expected, exprs
    assert sorted(ids(store.vector_search(unit(1), 100, where))) == expected, exprs
