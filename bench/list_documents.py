"""Listing one caller's documents: every tenant's rows filtered in Python (the first release) against
the tenant and group filters and the page limit done in the store (``Store.documents``).

The index holds ``--documents`` documents spread over ``--tenants`` tenants; a third of them carry
an access group. One page of 100 is listed for a key in one tenant with one group, on SQLite and
on PostgreSQL (a local pgserver). Both ways must return the same page; the script checks it.

    python bench/list_documents.py [--documents 20000] [--tenants 20] [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stanchion.index.postgres import PostgresStore
from stanchion.index.sqlite import SQLiteStore
from stanchion.index.store import Store, StoredDocument
from stanchion.testing.services import fresh_database, postgres_server
from stanchion.testing.store_suite import DIM, MODEL, make_write

GROUPS = frozenset({"g1"})
PAGE = 100


def fill(store: Store, documents: int, tenants: int) -> None:
    rng = np.random.default_rng(7)
    batch = []
    for i in range(documents):
        groups = (f"g{i % 3}",) if i % 3 else ()  # a third open to all, the rest in g1 or g2
        vector = rng.normal(size=DIM).astype(np.float32)
        batch.append(
            make_write(
                f"src:doc-{i:06d}.md",
                [f"document {i}"],
                [vector / np.linalg.norm(vector)],
                metadata={"tenant": f"t{i % tenants}"},
                groups=groups,
            )
        )
        if len(batch) == 500:
            store.write(batch, model=MODEL)
            batch = []
    if batch:
        store.write(batch, model=MODEL)


def in_python(store: Store) -> list[StoredDocument]:
    """What ``GET /v1/documents`` did before: read every document, then filter."""
    visible = [
        d
        for d in store.documents()
        if d.metadata.get("tenant") == "t3" and (not d.access_groups or GROUPS.intersection(d.access_groups))
    ]
    return visible[:PAGE]


def in_store(store: Store) -> list[StoredDocument]:
    return store.documents(tenant="t3", groups=GROUPS, limit=PAGE)


def timed(fn: Callable[[Store], list[StoredDocument]], store: Store, rounds: int) -> list[float]:
    fn(store)
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn(store)
        out.append((time.perf_counter() - started) * 1000)
    return out


def report(name: str, store: Store, rounds: int) -> None:
    assert [d.id for d in in_python(store)] == [d.id for d in in_store(store)], "the two ways differ"
    before, after = timed(in_python, store, rounds), timed(in_store, store, rounds)
    p50_before, p50_after = statistics.median(before), statistics.median(after)
    print(
        f"{name:<10} all rows, Python filter: p50 {p50_before:8.2f} ms, max {max(before):8.2f} ms | "
        f"in the store: p50 {p50_after:6.2f} ms, max {max(after):6.2f} ms | {p50_before / p50_after:6.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(f"{args.documents} documents, {args.tenants} tenants, one page of {PAGE} for tenant t3, group g1")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SQLiteStore(Path(tmp) / "index.db")
        fill(sqlite, args.documents, args.tenants)
        report("SQLite", sqlite, args.rounds)
        sqlite.close()
        with postgres_server(Path(tmp) / "pg") as admin_dsn:
            pg = PostgresStore(fresh_database(admin_dsn), dim=DIM)
            fill(pg, args.documents, args.tenants)
            report("PostgreSQL", pg, args.rounds)
            pg.close()


if __name__ == "__main__":
    main()
