"""The PDF loader, on real Debian manuals and on PDFs generated here with reportlab."""

from __future__ import annotations

from pathlib import Path

import pdf_samples
import pytest
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from stanchion.app import build
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.pdf import iter_pages, load_pdf
from stanchion.spec import IndexSpec, SourceSpec, Spec
from stanchion.types import Document

CTX = LoadContext(source="manuals", relpath="runbook.pdf")
HEADER = "ACME Corp Internal Runbook - Confidential"
BODIES = (
    "Restart the queue workers before draining the load balancer.",
    "Rotate credentials through the vault command line client.",
    "Escalate to the database team when replication lag exceeds a minute.",
    "Archive the incident notes in the shared drive afterwards.",
)


def _make_pdf(path: Path, bodies: tuple[str, ...] = BODIES, *, title: str = "Ops Runbook") -> Path:
    """A PDF with a running header and a "Page N of M" footer on every page."""
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setTitle(title)
    for number, body in enumerate(bodies, start=1):
        pdf.drawString(72, 800, HEADER)
        pdf.drawString(72, 700, body)
        pdf.drawString(72, 40, f"Page {number} of {len(bodies)}")
        pdf.showPage()
    pdf.save()
    return path


PORTS = (("Aalborg", "Bergen", "Cork"), ("Dundee", "Esbjerg", "Flushing"), ("Gdansk", "Hull", "Izmir"))


def _encrypt(source: Path, path: Path, user_password: str, algorithm: str) -> Path:
    """``source`` encrypted with pypdf's writer (AES needs the cryptography package)."""
    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm=algorithm)
    writer.write(path)
    return path


def _load(path: Path, max_pages: int | None = None) -> Document:
    [doc] = list(load_pdf(path, CTX, max_pages=max_pages))
    return doc


class TestGeneratedPdf:
    """A four-page PDF with running header and page-number footer."""

    def test_one_section_per_page(self, tmp_path: Path) -> None:
        """Pages become sections numbered from 1, holding only their body text."""
        doc = _load(_make_pdf(tmp_path / "runbook.pdf"))
        assert [s.page for s in doc.sections] == [1, 2, 3, 4]
        assert [s.text for s in doc.sections] == list(BODIES)

    def test_header_and_footer_are_stripped(self, tmp_path: Path) -> None:
        """The running header and "Page N of M" never reach the text."""
        doc = _load(_make_pdf(tmp_path / "runbook.pdf"))
        assert HEADER not in doc.text
        assert "Page" not in doc.text

    def test_metadata(self, tmp_path: Path) -> None:
        """Title from the info dictionary, page count, creation date; id from the context."""
        doc = _load(_make_pdf(tmp_path / "runbook.pdf"))
        assert doc.title == "Ops Runbook"
        assert doc.metadata["pages"] == 4
        assert doc.metadata["pages_without_text"] == 0
        assert str(doc.metadata["created"]).startswith("20")
        assert doc.id == "manuals:runbook.pdf"

    def test_title_falls_back_to_first_line(self, tmp_path: Path) -> None:
        """With no usable /Title, the first line of text is the title."""
        doc = _load(_make_pdf(tmp_path / "runbook.pdf", title=""))
        assert doc.title == BODIES[0]

    def test_max_pages(self, tmp_path: Path) -> None:
        """max_pages reads only the first pages; the page count still says how long the file is."""
        doc = _load(_make_pdf(tmp_path / "runbook.pdf"), max_pages=3)
        assert [s.page for s in doc.sections] == [1, 2, 3]
        assert HEADER not in doc.text
        assert doc.metadata["pages"] == 4

    @pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
    def test_empty_password_encryption_is_opened(self, tmp_path: Path, algorithm: str) -> None:
        """Owner-password-only encryption (a user password of "") is decrypted, AES included."""
        path = _encrypt(_make_pdf(tmp_path / "plain.pdf"), tmp_path / "locked.pdf", "", algorithm)
        doc = _load(path)
        assert [s.text for s in doc.sections] == list(BODIES)
        assert doc.title == "Ops Runbook"


class TestBadPdfs:
    """Scanned, corrupt, encrypted and non-PDF files fail with a reason a summary can show."""

    def test_image_only(self, tmp_path: Path) -> None:
        """Pages with graphics but no text layer need OCR."""
        path = tmp_path / "scan.pdf"
        pdf = canvas.Canvas(str(path), pagesize=A4)
        for _ in range(2):
            pdf.rect(72, 72, 400, 600, fill=1)
            pdf.showPage()
        pdf.save()
        with pytest.raises(IngestError, match=r"no extractable text \(scanned PDF\? run OCR first\)"):
            _load(path)

    def test_truncated(self, tmp_path: Path) -> None:
        """A PDF cut short is reported as corrupt."""
        data = _make_pdf(tmp_path / "full.pdf").read_bytes()
        path = tmp_path / "truncated.pdf"
        path.write_bytes(data[: len(data) // 3])
        with pytest.raises(IngestError, match="corrupt PDF"):
            _load(path)

    @pytest.mark.parametrize("algorithm", ["RC4-128", "AES-256"])
    def test_password_protected(self, tmp_path: Path, algorithm: str) -> None:
        """A user password cannot be guessed: the error names the file and how to get it read."""
        path = _encrypt(_make_pdf(tmp_path / "plain.pdf"), tmp_path / "secret.pdf", "secret", algorithm)
        with pytest.raises(IngestError, match="encrypted PDF that needs a password") as caught:
            _load(path)
        assert caught.value.path == str(path)
        assert "qpdf --decrypt" in caught.value.reason and str(path) in str(caught.value)

    def test_not_a_pdf(self, tmp_path: Path) -> None:
        """A file without the %PDF- header is refused before the PDF library sees it."""
        path = tmp_path / "fake.pdf"
        path.write_text("<html>not a pdf</html>")
        with pytest.raises(IngestError, match="not a PDF file"):
            _load(path)

    def test_too_large(self, tmp_path: Path) -> None:
        """The size limit applies before parsing."""
        path = _make_pdf(tmp_path / "runbook.pdf")
        ctx = LoadContext(source="manuals", relpath="runbook.pdf", max_file_bytes=512)
        with pytest.raises(IngestError, match="file too large"):
            list(load_pdf(path, ctx))


@pytest.fixture(scope="module")
def manual(shared_data: Path) -> Document:
    return _load(shared_data / "docs-debian" / "pdf" / "developers-reference.pdf", max_pages=25)


class TestRealManual:
    """The Debian Developer's Reference (LaTeX/Sphinx PDF with bookmarks), first 25 pages."""

    def test_pages_and_running_header(self, manual: Document) -> None:
        """Sections carry page numbers; the "Release 12.18" running header is gone from every page."""
        pages = [s.page or 0 for s in manual.sections]
        assert pages == sorted(pages) and pages[-1] == 25
        assert "Debian Developer’s Reference, Release 12.18" not in manual.text
        assert manual.title == "Debian Developer's Reference"
        assert manual.metadata["pages"] == 114

    def test_bookmarks_give_heading_paths(self, manual: Document) -> None:
        """The outline supplies the heading path of the section in force at the top of each page."""
        page = next(s for s in manual.sections if "CHAPTER\nTHREE" in s.text)
        assert page.heading_path == ("Debian Developer's Duties",)
        later = next(s for s in manual.sections if s.text.startswith("3.1.3 Manage release-critical bugs"))
        assert later.heading_path[-1] == "Manage release-critical bugs"


class TestWordBoundaries:
    """Words set apart by kerning alone keep their spaces (pypdf ran them together)."""

    def test_real_manual_page_keeps_its_spaces(self, shared_data: Path) -> None:
        """Debian Policy page 31, set by xdvipdfmx: pypdf gave "ofthepackageshouldbebrieflyexplained"."""
        path = shared_data / "docs-debian" / "pdf" / "debian-policy.pdf"
        assert "ofthepackageshouldbe" in PdfReader(path).pages[30].extract_text()  # the old defect
        page = next(s for s in _load(path, max_pages=31).sections if s.page == 31)
        assert "of the package should be briefly explained in this file" in page.text
        assert "allows the package building tools to discover which version" in page.text
        words = page.text.split()
        assert not [w for w in words if len(w) > 25 and w.isalpha()], "run-together words"

    def test_generated_justified_lines(self, tmp_path: Path) -> None:
        """TeX-style lines (words in one TJ array, gaps by kerning) come out word for word."""
        doc = _load(pdf_samples.justified(tmp_path / "justified.pdf"))
        assert doc.text.split() == pdf_samples.JUSTIFIED.split()

    def test_two_columns_read_left_then_right(self, tmp_path: Path) -> None:
        """Side-by-side prose is read column by column, and is not mistaken for a table."""
        doc = _load(pdf_samples.two_columns(tmp_path / "columns.pdf"))
        flat = " ".join(doc.text.split())
        assert flat == f"{pdf_samples.LEFT_COLUMN} {pdf_samples.RIGHT_COLUMN}"
        assert "tables" not in doc.metadata


class TestTables:
    """Tables become one line per row that carries its column headers and row label."""

    def test_ruled_table(self, tmp_path: Path) -> None:
        """A gridded table: each row names its cells; caption and surrounding prose stay in order."""
        doc = _load(pdf_samples.ruled_table(tmp_path / "ruled.pdf"))
        lines = doc.text.split("\n")
        caption = lines.index(pdf_samples.RULED_CAPTION)
        assert lines[caption + 1 : caption + 4] == [
            "Terminal: Maasvlakte II; Operator: APM Terminals; Throughput (TEU): 2,700,000; Cranes: 14.",
            "Terminal: Euromax; Operator: Hutchison Ports; Throughput (TEU): 2,300,000; Cranes: 12.",
            "Terminal: Amazonehaven; Operator: ECT Delta; Throughput (TEU): 1,900,000; Cranes: 11.",
        ]
        assert lines[0].startswith("The port's terminals") and lines[-1].startswith("Throughput counts")
        assert doc.metadata["tables"] == 1

    @pytest.mark.parametrize("leaders", [True, False])
    def test_unruled_financial_statement(self, tmp_path: Path, leaders: bool) -> None:
        """Whitespace-aligned year columns: each amount keeps its year, its row label, the group
        heading above it and the statement's caption; the dot leaders are gone."""
        doc = _load(pdf_samples.cash_flows(tmp_path / "cash.pdf", leaders=leaders))
        lines = doc.text.split("\n")
        assert "Consolidated Statements of Cash Flows (in millions)" in lines
        assert (
            "Cash flows from investing activities / Purchases of property, plant and equipment"
            " \u2014 2018: (1,577); 2017: (1,440)." in lines
        )
        assert (
            "Cash flows from investing activities / Proceeds from sale of investments \u2014 2018: 1,034; 2017: 892."
            in lines
        )
        assert ". . ." not in doc.text
        assert lines[-1] == "Capital expenditure rose as the group expanded its fulfilment network."

    def test_two_line_header_and_currency_signs(self, tmp_path: Path) -> None:
        """A spanning "Year Ended December 31," joins the caption; a "$" set apart joins its amount."""
        doc = _load(pdf_samples.income_statement(tmp_path / "income.pdf"))
        assert doc.text.split("\n") == [
            "Consolidated Statements of Operations Year Ended December 31, (in millions, except per share data)",
            "Net sales \u2014 2018: $ 232,887; 2017: $ 177,866.",
            "Operating income \u2014 2018: 12,421; 2017: 4,106.",
            "Net income \u2014 2018: $ 10,073; 2017: $ 3,033.",
            "Diluted earnings per share \u2014 2018: $ 20.14; 2017: $ 6.15.",
        ]

    def test_running_header_and_footer_go_on_table_pages(self, tmp_path: Path) -> None:
        """A footer drawn before the table stays at the page edge, where header stripping finds it."""
        path = tmp_path / "report.pdf"
        pdf = canvas.Canvas(str(path), pagesize=A4)
        for number in range(1, 4):
            pdf.setFont("Helvetica", 9)
            pdf.drawString(72, 40, f"Page {number} of 3")
            pdf.drawString(72, 800, HEADER)
            pdf.drawString(72, 700, "Port")
            pdf.drawRightString(400, 700, "Calls")
            for row in range(3):
                pdf.drawString(72, 686 - 14 * row, PORTS[number - 1][row])
                pdf.drawRightString(400, 686 - 14 * row, f"{number},{row}00")
            pdf.drawString(72, 600, BODIES[number])
            pdf.showPage()
        pdf.save()
        doc = _load(path)
        assert [s.text.split("\n") for s in doc.sections] == [
            [*(f"{PORTS[n][row]} \u2014 Calls: {n + 1},{row}00." for row in range(3)), BODIES[n + 1]]
            for n in range(3)
        ]
        assert HEADER not in doc.text and "Page" not in doc.text

    def test_tables_off_gives_the_raw_lines(self, tmp_path: Path) -> None:
        """``tables=False`` keeps PDFium's own text of the page."""
        path = pdf_samples.cash_flows(tmp_path / "cash.pdf", leaders=False)
        [doc] = list(load_pdf(path, CTX, tables=False))
        assert "Purchases of property, plant and equipment (1,577) (1,440)" in doc.text
        assert "tables" not in doc.metadata

    def test_real_manual_table(self, shared_data: Path) -> None:
        """Debian Reference's table of kernel error levels (page 109): rows keep their headers."""
        path = shared_data / "docs-debian" / "pdf" / "debian-reference.en.pdf"
        page = next(s for s in _load(path, max_pages=109).sections if s.page == 109)
        assert "error level value: 3; error level name: KERN_ERR; meaning: error conditions." in page.text


class TestEncryptedInARun:
    """A PDF that needs a password fails alone; the rest of the run is ingested."""

    def test_run_continues(self, tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
        corpus = tmp_path / "docs"
        corpus.mkdir()
        _encrypt(_make_pdf(tmp_path / "a.pdf"), corpus / "locked.pdf", "secret", "AES-256")
        _encrypt(_make_pdf(tmp_path / "b.pdf"), corpus / "open.pdf", "", "AES-256")
        spec = Spec(
            index=IndexSpec(path=str(tmp_path / "index.db")),
            sources=[SourceSpec(name="manuals", path=str(corpus))],
            base_dir=tmp_path,
        )
        summary = build(spec, embedder=embedder).pipeline.run()
        assert [(Path(f.path).name, "needs a password" in f.reason) for f in summary.failed] == [
            ("locked.pdf", True)
        ]
        assert summary.documents == 1


class TestIterPages:
    """Pages one at a time, for callers that stream."""

    def test_pages_come_one_by_one(self, tmp_path: Path) -> None:
        """Each page with its number and text (headers still there); max_pages stops early."""
        pages = iter_pages(_make_pdf(tmp_path / "runbook.pdf"), max_pages=3)
        first = next(pages)
        assert first.number == 1 and BODIES[0] in first.text and HEADER in first.text
        assert [p.number for p in pages] == [2, 3]

    def test_a_locked_file_fails_on_the_first_page(self, tmp_path: Path) -> None:
        path = _encrypt(_make_pdf(tmp_path / "plain.pdf"), tmp_path / "secret.pdf", "secret", "AES-256")
        with pytest.raises(IngestError, match="needs a password"):
            next(iter_pages(path))
