"""Red team, Dec 6: defects an attacker found in that day's changes, each kept as the regression
test that failed before its fix (cross-group reads under concurrent ingest, one tenant's value
breaking another's filter, SQLite before 3.38, a cached zero count hiding uploads, table and PDF
inputs that blew up, half-written uploads, eval collections writing outside their cache)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stanchion.core.filters import build_filter
from stanchion.testing.store_suite import MODEL, make_write, unit

# --- PostgreSQL: a filter's cached count of 0 hides chunks written after it ------------------------


@pytest.fixture
def pg_store(pg_dsn: str) -> Iterator[object]:
    from stanchion.index.postgres import PostgresStore
    from stanchion.testing.store_suite import DIM

    s = PostgresStore(pg_dsn, dim=DIM, pool_size=2)
    yield s
    s.close()


@pytest.mark.parametrize("mode", ["keyword", "vector"])
def test_postgres_zero_count_is_not_cached_over_a_write(pg_store, mode: str) -> None:
    store = pg_store
    store.write([make_write("other", ["alpha beta"], metadata={"path": "other.txt"})], model=MODEL)
    where = build_filter(["path=new.txt"])

    def search() -> list[str]:
        if mode == "keyword":
            return [h.id for h in store.keyword_search(["alpha"], 5, where)]
        return [h.id for h in store.vector_search(unit(1.0), 5, where)]

    assert search() == []  # nothing admitted yet: the count 0 is remembered
    store.write([make_write("new", ["alpha gamma"], metadata={"path": "new.txt"})], model=MODEL)
    assert search() == ["new#0"]  # the chunk exists and the filter admits it


# --- HTML tables: rowspans over empty rows blow a small file up quadratically ----------------------


def test_html_rowspan_over_empty_rows_is_bounded(tmp_path) -> None:
    from stanchion.ingest.loaders.base import LoadContext
    from stanchion.ingest.loaders.html import load_html

    n = 300
    html = (
        "<html><body><h1>Report</h1><table><tr><td></td>"
        + "".join(f"<td>c{i}</td>" for i in range(n))
        + "</tr><tr>"
        + "".join(f"<td rowspan={n}>value{i}</td>" for i in range(n))
        + "</tr>"
        + "<tr></tr>" * (n - 1)
        + "</table></body></html>"
    )
    path = tmp_path / "bomb.html"
    path.write_text(html)
    text = "".join(d.text for d in load_html(path, LoadContext("s", path.name)))
    # A real table's rows-as-text is a few times its markup; this one is ~50x (and grows as N^2).
    assert len(text) < 10 * len(html), f"{len(html)} bytes of HTML became {len(text)} characters"


def test_html_long_header_over_many_rows_is_bounded(tmp_path) -> None:
    from stanchion.ingest.loaders.base import LoadContext
    from stanchion.ingest.loaders.html import load_html

    head = " ".join(f"word{i}" for i in range(400))  # ~3 KB
    html = (
        f"<html><body><h1>Prices</h1><table><thead><tr><th>{head}</th><th>{head}x</th></tr></thead>"
        + "<tr><td>1</td><td>2</td></tr>" * 300
        + "</table></body></html>"
    )
    path = tmp_path / "bomb.html"
    path.write_text(html)
    text = "".join(d.text for d in load_html(path, LoadContext("s", path.name)))
    assert len(text) < 10 * len(html), f"{len(html)} bytes of HTML became {len(text)} characters"


# --- SQLite: two caches both loaded while a commit landed (-1) are taken as one snapshot ----------


def test_sqlite_unstable_snapshots_are_never_paired(tmp_path) -> None:
    import itertools

    from stanchion.core.filters import SearchFilter
    from stanchion.index.sqlite import SQLiteStore

    path = tmp_path / "index.db"
    writer = SQLiteStore(path)
    writer.write(
        [
            make_write("pub", ["alpha public"]),
            make_write("sec", ["alpha secret"], groups=("hr",)),
            make_write("tail", ["alpha tail"]),
        ],
        model=MODEL,
    )
    reader = SQLiteStore(path)
    ticks = itertools.count(1000)
    reader._version = lambda: next(ticks)  # an ingest job commits during each load (batches)

    class Racing:
        """The reader's connection; the writer commits just before the chunk_acl read."""

        def __init__(self, inner) -> None:
            self.inner, self.done = inner, False

        def execute(self, sql, *args):
            if sql.startswith("SELECT chunk, grp FROM chunk_acl") and not self.done:
                self.done = True
                writer.write([make_write("sec", ["alpha secret v2"], groups=("hr",))], model=MODEL)
            return self.inner.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    reader._db = Racing(reader._db)
    try:
        hits = reader.vector_search(unit(1.0), 10, SearchFilter((), frozenset()))  # no groups: public only
        seen = {c.id: c.access_groups for c in reader.chunks([h.id for h in hits])}
        assert all(not groups for groups in seen.values()), f"a groupless caller saw {seen}"
    finally:
        reader._db = reader._db.inner
        reader.close()
        writer.close()


# --- Streaming ingestion: an early commit splits a one-batch unit, then the unit fails ------------


def test_slow_unit_that_fails_within_one_batch_writes_nothing(tmp_path, monkeypatch) -> None:
    import json
    import time

    from stanchion.app import build
    from stanchion.ingest import pipeline
    from stanchion.ingest.loaders import load_unit
    from stanchion.spec import IndexSpec, SourceSpec, Spec

    corpus = tmp_path / "c"
    corpus.mkdir()
    records = {f"r{i}": f"Record {i} about pallets." for i in range(40)}

    def lines(texts: dict[str, str], bad: int = 0) -> str:
        rows = [json.dumps({"_id": k, "title": "", "text": v}) for k, v in texts.items()]
        return "\n".join(rows + ["{not json"] * bad) + "\n"

    spec = Spec(
        index=IndexSpec(path=str(tmp_path / "index.db")),
        sources=[SourceSpec(name="docs", path=str(corpus), type="beir")],
        base_dir=tmp_path,
    )
    (corpus / "corpus.jsonl").write_text(lines(records))
    app = build(spec, embedder=_HashEmbedder())
    assert app.pipeline.run().failed == []

    def slow(kind, path, ctx):  # a big or remote file: the records come in slowly
        for n, doc in enumerate(load_unit(kind, path, ctx)):
            if n == 35:
                time.sleep(1.0)
            yield doc

    monkeypatch.setattr(pipeline, "load_unit", slow)
    (corpus / "corpus.jsonl").write_text(
        lines({k: v.replace("pallets", "crates") for k, v in records.items()}, bad=5)
    )
    summary = app.pipeline.run()  # 40 chunks, well inside one batch of 256
    assert len(summary.failed) == 1 and "malformed" in summary.failed[0].reason
    crates = app.retriever.search("crates", k=50, mode="bm25").hits
    pallets = app.retriever.search("pallets", k=50, mode="bm25").hits
    app.close()
    assert (len(crates), len(pallets)) == (0, 40), "the failed file is half old, half new"


class _HashEmbedder:
    name = "hash-embedder"
    dim = 8

    def embed(self, texts, *, progress=None):
        import hashlib

        import numpy as np

        rows = [
            np.frombuffer(hashlib.sha256(t.encode()).digest()[:32], dtype=np.uint32).astype(np.float32)
            for t in texts
        ]
        out = np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        if progress is not None:
            progress(len(texts))
        return out


# --- PDF tables: one get_text_bounded per text run makes a dense page quadratic --------------------


def test_pdf_table_detection_is_not_quadratic_in_the_page(tmp_path) -> None:
    import time

    from reportlab.pdfgen import canvas

    from stanchion.ingest.loaders.base import LoadContext
    from stanchion.ingest.loaders.pdf import load_pdf

    rows, cols = 160, 40
    path = tmp_path / "grid.pdf"
    width, height = cols * 40 + 100, rows * 12 + 100
    pdf = canvas.Canvas(str(path), pagesize=(width, height))
    pdf.setFont("Helvetica", 8)
    for r in range(rows):
        for k in range(cols):
            pdf.drawString(50 + k * 40, height - 50 - r * 12, f"{r * k % 997}" if r else f"Col{k}")
    pdf.save()
    ctx = LoadContext("s", path.name)
    started = time.perf_counter()
    list(load_pdf(path, ctx, tables=False))
    plain = time.perf_counter() - started
    started = time.perf_counter()
    list(load_pdf(path, ctx))
    with_tables = time.perf_counter() - started
    assert with_tables < 20 * plain + 1.0, f"{with_tables:.1f} s with tables, {plain:.2f} s without"


# --- SQLite filter index: the JSON '->' operator needs SQLite 3.38 ----------------------------------


def test_sqlite_filtered_search_runs_on_sqlite_before_3_38(tmp_path, monkeypatch) -> None:
    import sqlite3

    from stanchion.errors import StoreError
    from stanchion.index.sqlite import SQLiteStore

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 37, 2))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.37.2")
    try:
        store = SQLiteStore(tmp_path / "index.db")
    except StoreError as exc:  # refusing an old SQLite up front, by name, is a fix too
        assert "3.3" in str(exc)
        return
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.write([make_write("a", ["alpha"], metadata={"tenant": "t1"})], model=MODEL)
    store.vector_search(unit(1.0), 5, build_filter(["tenant=t1"]))
    store.close()
    too_new = [s for s in statements if "->" in s]
    assert not too_new, f"SQL that SQLite 3.37 cannot parse: {too_new[0][:120]}"


# --- Eval collections: collection.yaml names what is written and read ------------------------------


def _collection(tmp_path, *, name: str, source_path: str):
    from stanchion.evals.collection import Collection

    root = tmp_path / "data"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("hello docs about refunds")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "pay.txt").write_text("payroll: secret")
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "collection.yaml").write_text(
        f"name: {name}\ndata_root: {root}\nsources:\n  - name: s\n    type: text\n    path: {source_path}\n"
    )
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "refunds"}\n')
    (folder / "qrels.tsv").write_text("query-id\tdocument\tpassage\tscore\nq1\tdocs/a.txt\t\t1\n")
    return Collection.load(folder)


def test_collection_name_cannot_place_the_index_outside_the_cache(tmp_path) -> None:
    from stanchion.errors import SpecError
    from stanchion.evals.retrieval import collection_spec
    from stanchion.spec import Spec

    cache = tmp_path / "cache"
    try:
        collection = _collection(tmp_path, name="../../escaped", source_path="docs")
        spec = collection_spec(collection, Spec(), cache_dir=cache)
    except SpecError:
        return  # refusing the name is a fix
    from pathlib import Path

    assert Path(spec.index.path).resolve().is_relative_to(cache.resolve()), spec.index.path


def test_collection_source_outside_the_data_root_is_a_spec_error(tmp_path) -> None:
    from stanchion.errors import SpecError
    from stanchion.evals.retrieval import collection_spec
    from stanchion.spec import Spec

    with pytest.raises(SpecError):
        collection = _collection(tmp_path, name="c", source_path="../secret")
        collection_spec(collection, Spec(), cache_dir=tmp_path / "cache")


# --- Chunking: is_row_line on the whole line at every cut makes a long line quadratic -------------


def test_chunking_a_long_line_that_opens_like_a_row_is_not_quadratic() -> None:
    import time

    from stanchion.ingest.chunk import ChunkingOptions, chunk_document
    from stanchion.ingest.tokens import tokenizer_for
    from stanchion.types import Document

    tokenizer = tokenizer_for("all-MiniLM-L6-v2")
    body = " ".join(f"This is sentence number {i} of the long line." for i in range(6000))

    def seconds(text: str) -> float:
        doc = Document(id="s:a.txt", text=text, title="a", source="s")
        started = time.perf_counter()
        chunk_document(doc, ChunkingOptions(), tokenizer, None)
        return time.perf_counter() - started

    plain, note = seconds(body), seconds("Note: " + body)
    assert note < 3 * plain + 0.5, f"'Note: ' + line: {note:.1f} s, the same line alone: {plain:.1f} s"


# --- SQLite filter index: one huge integer in any tenant's metadata breaks that key for everyone ---


def test_sqlite_huge_integer_in_one_tenant_does_not_break_anothers_filter(tmp_path) -> None:
    from stanchion.index.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "index.db")
    store.write(
        [
            make_write("a", ["alpha"], metadata={"tenant": "A", "year": 10**400}),  # tenant A's upload
            make_write("b", ["alpha"], metadata={"tenant": "B", "year": 2021}),
        ],
        model=MODEL,
    )
    try:
        where = build_filter(["year>=2020", "tenant=B"])  # tenant B's own search
        assert [h.id for h in store.vector_search(unit(1.0), 5, where)] == ["b#0"]
        assert [
            h.id for h in store.keyword_search(["alpha"], 5, build_filter(["year=2021", "tenant=B"]))
        ] == ["b#0"]
    finally:
        store.close()


# --- HTML tables: one odd span attribute fails the whole page ---------------------------------------


@pytest.mark.parametrize("span", ["\u00b2", "9" * 5000])
def test_html_odd_span_attribute_does_not_fail_the_page(tmp_path, span: str) -> None:
    from stanchion.ingest.loaders.base import LoadContext
    from stanchion.ingest.loaders.html import load_html

    path = tmp_path / "prices.html"
    path.write_text(
        "<html><body><h1>Prices</h1><table><tr><th>Plan</th><th>Price</th></tr>"
        f'<tr><td colspan="{span}">Basic</td><td>10</td></tr><tr><td>Pro</td><td>20</td></tr></table>'
        "<p>Some prose here.</p></body></html>",
        encoding="utf-8",
    )
    text = "".join(d.text for d in load_html(path, LoadContext("s", path.name)))
    assert "Pro" in text and "Some prose here." in text


def test_bundled_tables_collection_loads_with_data_dir_set(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    from stanchion.evals.collection import Collection

    monkeypatch.setenv("STANCHION_DATA_DIR", str(tmp_path))
    folder = Path(__file__).resolve().parents[1] / "bench" / "collections" / "tables"
    collection = Collection.load(folder)
    assert all((collection.data_root / s.path).exists() for s in collection.sources), collection.data_root


# --- Upload jobs: a failed job hides the documents a large file already committed ------------------


def test_failed_upload_job_names_or_removes_what_it_committed(tmp_path) -> None:
    import json

    from stanchion.app import build
    from stanchion.server.ingest_job import run_job
    from stanchion.spec import IndexSpec, Spec

    app = build(
        Spec(index=IndexSpec(path=str(tmp_path / "index.db")), base_dir=tmp_path), embedder=_HashEmbedder()
    )
    try:
        state = app.state
        lines = [
            json.dumps({"_id": f"r{i}", "title": "", "text": f"Record {i} about pallets."})
            for i in range(300)
        ]
        data = "\n".join([*lines, *["{not json"] * 5]).encode()  # > 1% malformed: fails after reading all
        options = {"metadata": {}, "access_groups": [], "caller_groups": None}
        job = state.create_job(tenant="acme", user="u", filename="corpus.jsonl", data=data, options=options)
        run_job(app, state, state.claim_job("w1"), "w1")
        finished = state.job(job.id)
        indexed = {d.id for d in app.store.documents(tenant="acme")}
        assert finished is not None and finished.status == "failed"
        assert indexed == set(finished.result.get("document_ids") or ()), (
            f"{len(indexed)} documents indexed, the failed job names {finished.result.get('document_ids')}"
        )
    finally:
        app.close()


# --- HTML tables: a cell past the table's width is dropped, text and all ---------------------------


def test_html_cell_beyond_the_table_width_keeps_its_text(tmp_path) -> None:
    from stanchion.ingest.loaders.base import LoadContext
    from stanchion.ingest.loaders.html import load_html

    path = tmp_path / "contacts.html"
    path.write_text(
        "<html><body><h1>Contacts</h1><table><tr><th>Team</th><th>Owner</th></tr>"
        '<tr><td rowspan="2">Billing</td><td>Alice</td></tr>'
        "<tr><td>Bob</td><td>escalations: call 555-0199</td></tr>"
        "<tr><td>Support</td><td>Carol</td></tr></table></body></html>"
    )
    text = "".join(d.text for d in load_html(path, LoadContext("s", path.name)))
    assert "555-0199" in text, text


def test_table_footnote_row_is_kept(tmp_path) -> None:
    from stanchion.ingest.loaders.base import LoadContext
    from stanchion.ingest.loaders.html import load_html

    path = tmp_path / "results.html"
    path.write_text(
        "<html><body><h1>Results</h1><table><tr><th></th><th>2019</th><th>2018</th></tr>"
        "<tr><td>Revenue</td><td>1,200</td><td>1,100</td></tr>"
        "<tr><td>Net income</td><td>300</td><td>250</td></tr>"
        "<tr><td>Figures for 2019 are unaudited and restated for the Kestrel divestiture</td>"
        "<td></td><td></td></tr></table></body></html>"
    )
    text = "".join(d.text for d in load_html(path, LoadContext("s", path.name)))
    assert "unaudited" in text, text
