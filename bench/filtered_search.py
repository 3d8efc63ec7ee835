"""Filtered search latency at 100k chunks, on SQLite and PostgreSQL, before and after (same run).

The index is SciFact's chunks and MiniLM vectors grown synthetically, as ``query_latency.py`` does
(each copy rotates its sentences and perturbs its vector), laid out as 1,000 files of 100 chunks
with realistic metadata: ``path`` (one per file), ``tenant`` (the server's, on every chunk),
``lang`` (``en`` on every other file), ``created_at`` (one date per file over 2024-2025) and access
groups on 30% of the files (one of ``team-0`` ... ``team-9``). Queries are SciFact's, embedded once
with MiniLM (cached): each search gets its query vector from that cache, so the figures are the
store and fusion alone (MiniLM adds ~8 ms to a hybrid or dense query).

Filters: none; selective (``path`` = one file: 100 chunks); broad (``lang=en``: half);
groups (a caller in ``team-3``: public chunks and that team's, ~73%); range
(``created_at>=2025-10-01``: ~12.5%). Modes: hybrid (each list 100 deep, z-score fusion), bm25
and dense at k=10, through ``Retriever.search``.

Baseline and ours run in child processes over the same index files: ``ours`` is this checkout's
``src``, ``baseline`` the ``--baseline-rev`` commit's ``src`` (extracted with ``git archive``).
Each child warms every (mode, filter) with one query (first-query cost is printed apart), then
times each query.

    python bench/filtered_search.py [--size 100000] [--queries 100] [--backends sqlite postgres]
        [--dir ~/.cache/stanchion/bench-filtered] [--dsn DSN] [--baseline-rev 5bc7ba2]
        [--baseline-queries N] [--reuse-baseline] [--base-index PATH]

The indexes are built once and reused from ``--dir`` (PostgreSQL: a pgserver cluster there, or
the server of ``--dsn``, database ``filtered_<size>``).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared/data/beir-scifact"
PER_FILE = 100
MODEL = "all-MiniLM-L6-v2"
MODES = ["hybrid", "bm25", "dense"]


def filters(size: int) -> dict[str, tuple[list[str], list[str] | None]]:
    """name -> (conditions, groups). All but ``none`` carry the tenant condition, as the server's do."""
    files = size // PER_FILE
    return {
        "none": ([], None),
        "tenant": (["tenant=default"], None),
        "selective": (["tenant=default", f"path=docs/file-{files * 421 // 1000:04d}.pdf"], None),
        "broad": (["tenant=default", "lang=en"], None),
        "groups": (["tenant=default"], ["team-3"]),
        "range": (["tenant=default", "created_at>=2025-10-01"], None),
    }


# --- the corpus -----------------------------------------------------------------------------------
def base_corpus(folder: Path, index: Path | None) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """SciFact chunk texts and vectors (from the eval index), queries and their vectors; cached."""
    cached = folder / "scifact-base.npz"
    if cached.exists():
        data = np.load(cached, allow_pickle=False)
        return list(data["texts"]), data["vectors"], list(data["queries"]), data["query_vectors"]
    index = index or _scifact_index()
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT c.text, e.vector FROM chunks c JOIN embeddings e ON e.hash = c.hash AND e.model = c.model"
        " ORDER BY c.rowid"
    ).fetchall()
    db.close()
    texts = [r[0] for r in rows]
    vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
    from stanchion.core.embed import SentenceTransformerEmbedder
    from stanchion.evals.retrieval import BeirDataset

    queries = list(BeirDataset.load(SCIFACT, "test").queries.values())
    embedder = SentenceTransformerEmbedder()
    query_vectors = np.asarray(embedder.embed(queries), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        cached, texts=np.array(texts), vectors=vectors, queries=np.array(queries), query_vectors=query_vectors
    )
    return texts, vectors, queries, query_vectors


def _scifact_index() -> Path:
    """The SciFact eval index (``stanchion eval retrieval`` builds it; so does this, if missing)."""
    from stanchion.evals.retrieval import eval_cache_dir

    for path in sorted(eval_cache_dir().glob("beir-scifact-*.db"), key=lambda p: -p.stat().st_mtime):
        db = sqlite3.connect(path)
        try:
            if db.execute("SELECT count(*) FROM embeddings").fetchone()[0] > 1000:
                return path
        except sqlite3.Error:
            pass
        finally:
            db.close()
    from stanchion.app import build
    from stanchion.evals.retrieval import BeirDataset, eval_spec
    from stanchion.spec import Spec

    app = build(eval_spec(BeirDataset.load(SCIFACT, "test"), Spec()))
    app.pipeline.run()
    app.close()
    return Path(app.spec.index.path)


def synthetic(texts: list[str], vectors: np.ndarray, size: int) -> Iterator[list[Any]]:
    """Batches of 20 files (2,000 chunks): copies rotate sentences and perturb vectors (seeded)."""
    from stanchion.index.store import DocumentWrite
    from stanchion.types import Chunk, Document

    rng = np.random.default_rng(0)
    acl = np.random.default_rng(1)
    batch: list[DocumentWrite] = []
    files = size // PER_FILE
    for f in range(files):
        path = f"docs/file-{f:04d}.pdf"
        day = np.datetime64("2024-01-01") + int(f * 731 / files)
        meta = {
            "path": path,
            "tenant": "default",
            "lang": "en" if f % 2 == 0 else "fr",
            "created_at": str(day),
        }
        groups = (f"team-{acl.integers(10)}",) if acl.random() < 0.3 else ()
        chunks, rows = [], []
        for p in range(PER_FILE):
            i = f * PER_FILE + p
            base, copy = i % len(texts), i // len(texts)
            text = texts[base]
            if copy:
                sentences = text.split(". ")
                shift = copy % max(1, len(sentences))
                text = ". ".join(sentences[shift:] + sentences[:shift])
            vector = vectors[base].copy()
            if copy:
                vector += rng.normal(0.0, 0.05, size=(vectors.shape[1],)).astype(np.float32)
            rows.append((vector / np.linalg.norm(vector)).astype(np.float32))
            chunk_meta = {**meta, "source": "bench", "document_id": path, "title": f"File {f}", "position": p}
            chunks.append(Chunk(f"{path}#{p}", path, text, p, chunk_meta, groups))
        doc = Document(id=path, text="", source="bench", path=path, metadata=meta, access_groups=groups)
        batch.append(DocumentWrite(doc, chunks, np.stack(rows)))
        if len(batch) == 20:
            yield batch
            batch = []
    if batch:
        yield batch


def build_sqlite(folder: Path, size: int, texts: list[str], vectors: np.ndarray) -> Path:
    from stanchion.index.sqlite import SQLiteStore

    path = folder / f"sqlite-{size}.db"
    done = path.with_suffix(".done")
    if not done.exists():
        for leftover in folder.glob(f"sqlite-{size}.db*"):
            leftover.unlink()
        started = time.perf_counter()
        store = SQLiteStore(path)
        for batch in synthetic(texts, vectors, size):
            store.write(batch, model=MODEL)
        store.close()
        done.write_text("ok")
        print(f"built {path} in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def build_postgres(admin_dsn: str, size: int, texts: list[str], vectors: np.ndarray) -> str:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from stanchion.index.postgres import PostgresStore

    name = f"filtered_{size}"
    dsn = make_conninfo(**{**conninfo_to_dict(admin_dsn), "dbname": name})  # type: ignore[arg-type]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            with psycopg.connect(dsn) as db:
                marked = db.execute("SELECT to_regclass('public.bench_done')").fetchone()
            if marked and marked[0]:
                return dsn
            conn.execute(f'DROP DATABASE "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    started = time.perf_counter()
    store = PostgresStore(dsn, dim=vectors.shape[1])
    for batch in synthetic(texts, vectors, size):
        store.write(batch, model=MODEL)
    store.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CREATE TABLE public.bench_done ()")
    print(f"built PostgreSQL {name} in {time.perf_counter() - started:.0f} s", flush=True)
    return dsn


# --- one code version, in a child process -----------------------------------------------------------
def measure(target: str, backend: str, folder: Path, queries: int, size: int) -> dict[str, Any]:
    """Times every (mode, filter) with the ``stanchion`` on ``sys.path``: runs in the child."""
    import stanchion
    from stanchion.core.filters import build_filter
    from stanchion.retrieve.search import Retriever

    assert stanchion.__file__.startswith(os.environ["PYTHONPATH"]), "the child imports the wrong stanchion"

    data = np.load(folder / "scifact-base.npz", allow_pickle=False)
    texts = [str(q) for q in data["queries"][:queries]]
    by_text = dict(zip(texts, data["query_vectors"][:queries], strict=True))

    class Precomputed:
        name, dim = MODEL, int(data["query_vectors"].shape[1])

        def embed(self, batch: list[str], **_: object) -> np.ndarray:
            return np.stack([by_text[t] for t in batch])

    store: Any
    if backend == "sqlite":
        from stanchion.index.sqlite import SQLiteStore

        store = SQLiteStore(target)
    else:
        from stanchion.index.postgres import PostgresStore

        store = PostgresStore(target, dim=Precomputed.dim)
    retriever = Retriever(store, Precomputed())  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    started = time.perf_counter()
    retriever.search(texts[0], k=10, mode="hybrid")  # load the index caches, outside the timings
    out["load_s"] = time.perf_counter() - started
    for name, (exprs, groups) in filters(size).items():
        where = build_filter(exprs, groups=groups)
        for mode in MODES:
            started = time.perf_counter()
            first = retriever.search(texts[0], k=10, mode=mode, where=where)
            first_ms = (time.perf_counter() - started) * 1000
            samples, hits = [], len(first.hits)
            for q in texts:
                started = time.perf_counter()
                retriever.search(q, k=10, mode=mode, where=where)
                samples.append((time.perf_counter() - started) * 1000)
            out[f"{mode}/{name}"] = {"first_ms": first_ms, "samples": samples, "hits": hits}
    store.close()
    return out


def run_child(src: Path, backend: str, target: str, folder: Path, size: int, queries: int) -> dict[str, Any]:
    """``measure`` in a child process whose ``stanchion`` comes from ``src``."""
    options = ["--dir", str(folder), "--queries", str(queries), "--size", str(size)]
    result = subprocess.run(
        [sys.executable, __file__, "--child", backend, target, *options],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{src} {backend} failed:\n{result.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def both(
    old: Path, backend: str, target: str, folder: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Baseline then ours; the baseline's figures are saved, and reused with ``--reuse-baseline``."""
    queries = args.baseline_queries or args.queries
    saved = folder / f"baseline-{args.baseline_rev}-{backend}-{args.size}-{queries}.json"
    if args.reuse_baseline and saved.exists():
        base: dict[str, Any] = json.loads(saved.read_text())
        print(f"(baseline figures reused from {saved})")
    else:
        base = run_child(old, backend, target, folder, args.size, queries)
        saved.write_text(json.dumps(base))
    return [base, run_child(ROOT / "src", backend, target, folder, args.size, args.queries)]


def baseline_src(rev: str, folder: Path) -> Path:
    """The ``src`` tree of ``rev``, extracted once under ``folder``."""
    out = folder / f"baseline-{rev}"
    if not (out / "src" / "stanchion").exists():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
        ).stdout
        tar = out / "src.tar"
        tar.write_bytes(archive)
        with tarfile.open(tar) as handle:
            handle.extractall(out, filter="data")
        tar.unlink()
    return out / "src"


def p(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q))


def report(backend: str, size: int, base: dict[str, Any], ours: dict[str, Any]) -> None:
    print(f"\n{backend}: index load {base['load_s']:.1f} s (baseline) / {ours['load_s']:.1f} s (ours)")
    print(
        f"  {'mode / filter':<18} {'hits':>4}  {'baseline p50':>12} {'p95':>8}  {'ours p50':>9} {'p95':>8}"
        f"  {'p50 ratio':>9} {'p95 ratio':>9}  {'first query (base / ours)':>26}"
    )
    for key in (f"{m}/{f}" for f in filters(size) for m in MODES):
        b, o = base[key], ours[key]
        assert b["hits"] == o["hits"], (key, b["hits"], o["hits"])
        bs, os_ = b["samples"], o["samples"]
        print(
            f"  {key:<18} {o['hits']:>4}  {p(bs, 50):>9.2f} ms {p(bs, 95):>5.1f} ms  {p(os_, 50):>6.2f} ms"
            f" {p(os_, 95):>5.1f} ms  {p(bs, 50) / p(os_, 50):>8.1f}x {p(bs, 95) / p(os_, 95):>8.1f}x"
            f"  {b['first_ms']:>10.0f} / {o['first_ms']:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--dir", type=Path, default=Path.home() / ".cache" / "stanchion" / "bench-filtered")
    parser.add_argument("--dsn", help="a PostgreSQL server (with pgvector) instead of a local pgserver")
    parser.add_argument("--baseline-rev", default="5bc7ba2", help="the commit measured as the baseline")
    parser.add_argument(
        "--base-index",
        type=Path,
        help="a Stanchion index to take chunks and vectors from (default: SciFact's eval index)",
    )
    parser.add_argument(
        "--baseline-queries", type=int, help="fewer queries for the (slow) baseline; default: --queries"
    )
    parser.add_argument(
        "--reuse-baseline",
        action="store_true",
        help="reuse the baseline's saved figures (same size and queries)",
    )
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder: Path = args.dir.expanduser()
    if args.child:
        print(json.dumps(measure(args.child[1], args.child[0], folder, args.queries, args.size)))
        return

    sys.path.insert(0, str(ROOT / "src"))
    texts, vectors, queries, _ = base_corpus(folder, args.base_index)
    base_queries = min(args.baseline_queries or args.queries, len(queries))
    print(
        f"{min(args.queries, len(queries))} SciFact queries ({base_queries} for the baseline);"
        f" {args.size} chunks grown from {len(texts)}"
    )
    old = baseline_src(args.baseline_rev, folder)
    if "sqlite" in args.backends:
        path = str(build_sqlite(folder, args.size, texts, vectors))
        report("SQLite", args.size, *both(old, "sqlite", path, folder, args))
    if "postgres" in args.backends:
        if args.dsn:
            dsn = build_postgres(args.dsn, args.size, texts, vectors)
            base, ours = both(old, "postgres", dsn, folder, args)
        else:
            from stanchion.testing.services import postgres_server

            with postgres_server(folder / "pg") as admin:
                dsn = build_postgres(admin, args.size, texts, vectors)
                base, ours = both(old, "postgres", dsn, folder, args)
        report("PostgreSQL + pgvector", args.size, base, ours)


if __name__ == "__main__":
    main()
