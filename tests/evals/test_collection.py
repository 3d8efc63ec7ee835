"""Test collections of real documents: the format, chunk-to-page mapping, and the eval end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
from pypdf import PdfReader
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas
from typer.testing import CliRunner

from stanchion.app import build
from stanchion.cli import app as cli_app
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.errors import SpecError
from stanchion.evals.collection import (
    Collection,
    chunk_document,
    chunk_passage,
    heading_key,
    rank_passages,
)
from stanchion.evals.retrieval import (
    _reread_if_code_changed,
    collection_spec,
    ingest_code_digest,
    run_retrieval_eval,
)
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.html import load_html
from stanchion.spec import Spec
from stanchion.types import Chunk

DEBIAN = Path(__file__).resolve().parents[2] / "bench" / "collections" / "debian-manuals"

PAGES = (
    "Welcome to the depot handbook. Drivers sign in at the gate office before each shift.",
    "Tyre pressures are checked every Monday morning by the workshop crew.",
    "Fuel cards are renewed each January; report a lost card to the finance desk.",
)
HTML = """<!doctype html><html><head><title>Depot wiki</title></head><body><main>
<h1>Depot wiki</h1>
<h2>Backups</h2><p>The dispatch database is copied to tape every night at two o'clock.</p>
<h2>Parking</h2><p>Visitors park in the yellow bays next to the canteen.</p>
</main></body></html>"""


def _collection(folder: Path, *, qrels: str, queries: list[dict[str, object]], yaml: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "collection.yaml").write_text(
        yaml
        or (
            "name: depot\ndata_root: data\nsources:\n"
            "  - {name: manuals, type: pdf, path: depot/pdf}\n"
            "  - {name: wiki, type: html, path: depot/wiki}\n"
        ),
        encoding="utf-8",
    )
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (folder / "qrels.tsv").write_text("query-id\tdocument\tpassage\tscore\n" + qrels, encoding="utf-8")
    return folder


def _depot(root: Path) -> Path:
    """A 3-page PDF and a 2-section HTML page under root/data/depot, written here."""
    pdf_dir, wiki = root / "data" / "depot" / "pdf", root / "data" / "depot" / "wiki"
    pdf_dir.mkdir(parents=True)
    wiki.mkdir(parents=True)
    pdf = canvas.Canvas(str(pdf_dir / "handbook.pdf"), pagesize=A4)
    for body in PAGES:
        pdf.drawString(72, 700, body)
        pdf.showPage()
    pdf.save()
    (wiki / "ops.html").write_text(HTML, encoding="utf-8")
    return root


def _chunk(source: str, path: str, *, page: int | None = None, headings: tuple[str, ...] = ()) -> Chunk:
    meta: dict[str, object] = {"source": source, "path": path, "page": page, "heading_path": list(headings)}
    return Chunk(
        id=f"{source}:{path}#{page}", document_id=f"{source}:{path}", text="t", position=0, metadata=meta
    )


class TestFormat:
    def test_loads_queries_evidence_and_tags(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Passages become page/section ids; documents are relevant through any of their passages."""
        monkeypatch.delenv("STANCHION_DATA_DIR", raising=False)
        _depot(tmp_path)
        folder = _collection(
            tmp_path / "coll",
            queries=[{"_id": "q1", "text": "tyres?", "tags": ["pdf"]}, {"_id": "q2", "text": "backup?"}],
            qrels="q1\tdepot/pdf/handbook.pdf\tpage:2\t1\nq2\tdepot/wiki/ops.html\tsection:Backups\t1\n",
        )
        coll = Collection.load(folder)
        assert coll.data_root == (tmp_path / "data").resolve()  # found from the folder upwards
        assert coll.passage_qrels() == {
            "q1": {"depot/pdf/handbook.pdf#page=2": 1},
            "q2": {"depot/wiki/ops.html#section=backups": 1},
        }
        assert coll.document_qrels()["q2"] == {"depot/wiki/ops.html": 1}
        assert coll.tags["q1"] == ("pdf",) and coll.tags["q2"] == ()

    @pytest.mark.parametrize(
        ("qrels", "message"),
        [
            ("q1\tdepot/pdf/handbook.pdf\tpage:0\t1\n", "is not page:N, section:HEADING or empty"),
            ("q1\tdepot/pdf/handbook.pdf\tline:3\t1\n", "is not page:N"),
            ("q9\tdepot/pdf/handbook.pdf\tpage:1\t1\n", "query 'q9' is not in queries.jsonl"),
            ("q1\tdepot/pdf/handbook.pdf\tpage:1\n", "tab-separated"),
        ],
    )
    def test_bad_qrels_name_the_line(self, tmp_path: Path, qrels: str, message: str) -> None:
        _depot(tmp_path)
        folder = _collection(tmp_path / "coll", queries=[{"_id": "q1", "text": "x"}], qrels=qrels)
        with pytest.raises(SpecError, match="line 2") as info:
            Collection.load(folder)
        assert message in str(info.value)

    def test_unknown_key_and_missing_root(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("STANCHION_DATA_DIR", raising=False)
        q = [{"_id": "q1", "text": "x"}]
        folder = _collection(tmp_path / "a", queries=q, qrels="", yaml="name: a\ndata_root: d\nsoruces: []\n")
        with pytest.raises(SpecError, match="unknown key 'soruces'"):
            Collection.load(folder)
        folder = _collection(tmp_path / "b", queries=q, qrels="", yaml="data_root: nowhere\nsources: []\n")
        with pytest.raises(SpecError, match="STANCHION_DATA_DIR"):
            Collection.load(folder)

    def test_data_dir_from_the_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        _depot(tmp_path)
        monkeypatch.setenv("STANCHION_DATA_DIR", str(tmp_path / "data"))
        yaml = "data_root: not/used\nsources:\n  - {name: manuals, path: depot/pdf}\n"
        folder = _collection(tmp_path / "coll", queries=[{"_id": "q1", "text": "x"}], qrels="", yaml=yaml)
        assert Collection.load(folder).data_root == tmp_path / "data"


class TestChunkMapping:
    paths: ClassVar[dict[str, str]] = {
        "manuals": "depot/pdf",
        "wiki": "depot/wiki",
        "one": "depot/pdf/handbook.pdf",
    }

    def test_document_and_passage_of_a_chunk(self) -> None:
        """A PDF chunk is its page; an HTML chunk its deepest heading; a one-file source is that file."""
        pdf = _chunk("manuals", "handbook.pdf", page=2)
        html = _chunk("wiki", "ops.html", headings=("Depot wiki", "Backups"))
        assert chunk_document(pdf, self.paths) == "depot/pdf/handbook.pdf"
        assert chunk_passage(pdf, "depot/pdf/handbook.pdf") == "depot/pdf/handbook.pdf#page=2"
        assert chunk_passage(html, "d.html") == "d.html#section=backups"
        assert chunk_document(_chunk("one", "handbook.pdf", page=1), self.paths) == "depot/pdf/handbook.pdf"
        assert chunk_passage(_chunk("wiki", "x.html"), "x.html") == "x.html"

    def test_rank_passages_keeps_the_best_rank(self) -> None:
        chunks = [
            _chunk("manuals", "handbook.pdf", page=3),
            _chunk("manuals", "handbook.pdf", page=2),
            _chunk("manuals", "handbook.pdf", page=3),
            _chunk("wiki", "ops.html", headings=("Depot wiki", "Parking")),
        ]
        assert rank_passages(chunks, self.paths) == [
            "depot/pdf/handbook.pdf#page=3",
            "depot/pdf/handbook.pdf#page=2",
            "depot/wiki/ops.html#section=parking",
        ]


class TestEndToEnd:
    def test_evidence_pages_are_mapped_and_counted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: SentenceTransformerEmbedder
    ) -> None:
        """Real loaders, chunking and index: the page and section that answer rank first.

        q3's judgment deliberately names page 3 while page 1 answers it, so hit@1 is 2/3, not 1:
        the mapping tells pages apart rather than crediting any chunk of the right file.
        """
        monkeypatch.delenv("STANCHION_DATA_DIR", raising=False)
        _depot(tmp_path)
        folder = _collection(
            tmp_path / "coll",
            queries=[
                {"_id": "q1", "text": "when are tyre pressures checked", "tags": ["pdf"]},
                {"_id": "q2", "text": "how often is the dispatch database copied to tape", "tags": ["html"]},
                {"_id": "q3", "text": "where do drivers sign in before a shift", "tags": ["pdf"]},
                {"_id": "q4", "text": "where do visitors park"},
            ],
            qrels=(
                "q1\tdepot/pdf/handbook.pdf\tpage:2\t1\n"
                "q2\tdepot/wiki/ops.html\tsection:Backups\t1\n"
                "q3\tdepot/pdf/handbook.pdf\tpage:3\t1\n"
                "q4\tdepot/wiki/ops.html\t\t1\n"
            ),
        )
        report = run_retrieval_eval(
            Collection.load(folder), Spec(), mode="bm25", cache_dir=tmp_path / "cache", embedder=embedder
        )
        assert report.queries == 4 and report.passage_queries == 3
        assert report.mrr_at_10 == 1.0  # every question finds its file first
        assert report.passage is not None
        assert report.passage["hit@1"] == pytest.approx(2 / 3)
        by_tag = report.passage_by_tag or {}
        assert (by_tag["html"]["hit@1"], by_tag["html"]["queries"]) == (1.0, 1.0)
        assert (by_tag["pdf"]["hit@1"], by_tag["pdf"]["queries"]) == (0.5, 2.0)

        monkeypatch.setenv("STANCHION_CACHE_DIR", str(tmp_path))  # the index above is reused
        result = CliRunner().invoke(cli_app, ["eval", "retrieval", "-d", str(folder), "-m", "bm25", "--json"])
        assert result.exit_code == 0, result.stderr
        out = json.loads(result.stdout)
        assert {"ndcg@10", "recall@100", "mrr@10", "queries", "build_seconds", "latency_ms"} < set(out)
        assert out["passage"]["queries"] == 3 and out["passage"]["hit@1"] == pytest.approx(0.6667)
        assert out["passage_by_tag"]["pdf"]["queries"] == 2

    def test_changed_ingestion_code_rereads_every_file(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder
    ) -> None:
        """An index built by other loader or chunking code forgets its files' signatures, so the next
        ingest reads them again; the same code leaves them be."""
        _depot(tmp_path)
        folder = _collection(tmp_path / "coll", queries=[{"_id": "q1", "text": "tyres"}], qrels="")
        coll = Collection.load(folder, data_root=tmp_path / "data")
        run_retrieval_eval(coll, Spec(), mode="bm25", cache_dir=tmp_path / "cache", embedder=embedder)
        spec = collection_spec(coll, Spec(), tmp_path / "cache")
        marker = spec.resolve(spec.index.path).with_suffix(".ingest-code")
        app = build(spec, embedder=embedder)
        try:
            assert marker.read_text().strip() == ingest_code_digest()
            _reread_if_code_changed(app, spec)
            assert set(app.store.units("manuals")) == {"handbook.pdf"}  # same code: kept
            marker.write_text("older-code\n")
            _reread_if_code_changed(app, spec)
            assert app.store.units("manuals") == {} and app.store.units("wiki") == {}
            assert marker.read_text().strip() == ingest_code_digest()
        finally:
            app.close()


class TestDebianCollection:
    """The project's own collection over ../shared/data/docs-debian: every judgment points somewhere real."""

    def test_qrels_point_at_pages_and_sections_that_exist(self, shared_data: Path) -> None:
        coll = Collection.load(DEBIAN, data_root=shared_data)
        assert len(coll.queries) >= 60
        assert sum("table" in coll.tags[q] for q in coll.queries) >= 10
        assert set(coll.evidence) == set(coll.queries)
        pages: dict[str, set[int]] = {}
        sections: dict[str, set[str]] = {}
        for items in coll.evidence.values():
            for e in items:
                assert (shared_data / e.document).is_file(), e.document
                if e.page is not None:
                    pages.setdefault(e.document, set()).add(e.page)
                if e.section is not None:
                    sections.setdefault(e.document, set()).add(heading_key(e.section))
        assert len({d.rsplit("/", 1)[-1] for d in pages}) == 4 and sections  # 4 PDFs and the HTML
        for document, wanted in pages.items():
            reader = PdfReader(shared_data / document)
            for page in wanted:
                assert page <= len(reader.pages), f"{document} has no page {page}"
                assert reader.pages[page - 1].extract_text().strip(), f"{document} page {page} has no text"
        for document, wanted in sections.items():
            (doc,) = load_html(shared_data / document, LoadContext(source="s", relpath=document))
            present = {heading_key(s.heading_path[-1]) for s in doc.sections if s.heading_path}
            assert wanted <= present, f"{document}: no section {sorted(wanted - present)}"
