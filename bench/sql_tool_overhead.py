"""What the ``sql`` tool's guards cost per call on SQLite, against a plain query.

Both sides open the sample ``tickets.db`` afresh per call and run the demo's count query:

- baseline: ``sqlite3.connect`` (read-only URI), execute, fetch, close;
- tool: ``SqlTool.call`` as a tenant (statement check, TEMP views under a random name,
  ``query_only``, authorizer, progress handler, rendering), and the same without a tenant column.

    python bench/sql_tool_overhead.py [--calls 500]

Prints the median and p95 per call in milliseconds and the ratios to the baseline.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from stanchion.request_context import DEFAULT_TENANT, RequestContext
from stanchion.tools.sql import build

QUERY = (
    "SELECT count(*) FROM tickets WHERE status = 'open' "
    "AND (subject LIKE '%refund policy%' OR body LIKE '%refund policy%')"
)


def timings(run: Callable[[], object], calls: int) -> list[float]:
    for _ in range(20):
        run()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(name: str, values: list[float], base: list[float] | None) -> str:
    median = statistics.median(values)
    p95 = statistics.quantiles(values, n=20)[18]
    text = f"{name:<22} median {median:7.3f} ms   p95 {p95:7.3f} ms"
    if base is not None:
        text += f"   x{median / statistics.median(base):5.1f} median, x{p95 / statistics.quantiles(base, n=20)[18]:5.1f} p95"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    sample = Path(str(files("stanchion").joinpath("sample")))
    database = sample / "tickets.db"
    uri = f"{database.as_uri()}?mode=ro"

    def plain() -> object:
        conn = sqlite3.connect(uri, uri=True)
        try:
            return conn.execute(QUERY).fetchall()
        finally:
            conn.close()

    tenant_tool = build("t", {"database": str(database), "tenant_column": "tenant"}, retriever=lambda: None)  # type: ignore[arg-type,return-value]
    open_tool = build("t", {"database": str(database)}, retriever=lambda: None)  # type: ignore[arg-type,return-value]
    context = RequestContext(DEFAULT_TENANT)
    assert tenant_tool.call({"query": QUERY}, context).data["rows"] == [[9]]
    base = timings(plain, args.calls)
    print(summary("plain sqlite3", base, None))
    print(
        summary(
            "sql tool, tenants",
            timings(lambda: tenant_tool.call({"query": QUERY}, context), args.calls),
            base,
        )
    )
    print(
        summary(
            "sql tool, no tenants",
            timings(lambda: open_tool.call({"query": QUERY}, context), args.calls),
            base,
        )
    )


if __name__ == "__main__":
    main()
