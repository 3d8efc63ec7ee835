"""The PDF loader, on real Debian manuals and on PDFs generated here with reportlab."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.pdf import load_pdf
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

    def test_empty_password_encryption_is_opened(self, tmp_path: Path) -> None:
        """Owner-password-only encryption (a user password of "") is decrypted transparently."""
        writer = PdfWriter(clone_from=PdfReader(_make_pdf(tmp_path / "plain.pdf")))
        writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
        path = tmp_path / "locked.pdf"
        writer.write(path)
        assert _load(path).sections[0].text == BODIES[0]


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

    def test_password_protected(self, tmp_path: Path) -> None:
        """A user password cannot be guessed: the file is reported as encrypted."""
        writer = PdfWriter(clone_from=PdfReader(_make_pdf(tmp_path / "plain.pdf")))
        writer.encrypt(user_password="secret", algorithm="RC4-128")
        buf = io.BytesIO()
        writer.write(buf)
        path = tmp_path / "secret.pdf"
        path.write_bytes(buf.getvalue())
        with pytest.raises(IngestError, match="encrypted PDF"):
            _load(path)

    def test_not_a_pdf(self, tmp_path: Path) -> None:
        """A file without the %PDF- header is refused before pypdf sees it."""
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
