"""The plain-text and Markdown loaders: structure, front matter, encodings and bad files."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.text import load_markdown, load_text
from stanchion.types import Document

CTX = LoadContext(source="notes", relpath="doc.txt", access_groups=("eng",))


def _text(path: Path, ctx: LoadContext = CTX) -> Document:
    [doc] = list(load_text(path, ctx))
    return doc


def _write(tmp_path: Path, data: bytes, name: str = "doc.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


class TestMarkdown:
    """Headings, front matter, fenced code and link syntax."""

    @pytest.fixture
    def doc(self, fixtures: Path) -> Document:
        [doc] = list(load_markdown(fixtures / "text" / "runbook.md", CTX))
        return doc

    def test_front_matter_becomes_metadata(self, doc: Document) -> None:
        """YAML front matter is parsed with safe_load; dates and lists stay JSON-friendly."""
        assert doc.title == "Incident Runbook"
        assert doc.metadata["owner"] == "sre-team"
        assert doc.metadata["tags"] == ["oncall", "incidents"]
        assert doc.metadata["reviewed"] == "2024-02-01"
        assert "owner:" not in doc.text

    def test_heading_paths(self, doc: Document) -> None:
        """ATX and setext headings nest; a '#' inside fenced code is not a heading."""
        assert [s.heading_path for s in doc.sections] == [
            (),
            ("Paging",),
            ("Paging", "Escalation"),
            ("Paging", "Severity levels"),
            ("Postmortems",),
        ]
        escalation = doc.sections[2].text
        assert "- Page the secondary after 15 minutes\n- Open an incident channel" in escalation
        assert "# not a heading: this is a shell comment\noncall page --secondary" in escalation

    def test_links_reduced_to_text(self, doc: Document) -> None:
        """Link targets are dropped, link text kept."""
        assert doc.sections[0].text == "Intro paragraph before any heading, with a link to the wiki."

    def test_title_falls_back_to_first_h1(self, tmp_path: Path) -> None:
        """Without front matter the first h1 is the title; a leading '---' rule is kept as text."""
        path = _write(tmp_path, b"---\n\nNot front matter.\n\n# Real Title\n\nBody.\n", "x.md")
        [doc] = list(load_markdown(path, CTX))
        assert doc.title == "Real Title"
        assert "Not front matter." in doc.text


class TestPlainText:
    """reST-style underlined headings become sections; everything else is paragraphs."""

    def test_underlined_headings(self, fixtures: Path) -> None:
        """Adornment characters give levels in order of first use, as in reStructuredText."""
        doc = _text(fixtures / "text" / "manual.txt")
        assert doc.title == "Widget Manual"
        assert [s.heading_path for s in doc.sections] == [
            ("Widget Manual",),
            ("Widget Manual", "1. Installation"),
            ("Widget Manual", "1. Installation", "1.1. Requirements"),
            ("Widget Manual", "2. Usage"),
        ]
        assert doc.sections[2].text == "A machine with 2 GB of memory."
        assert doc.id == "notes:doc.txt"
        assert doc.access_groups == ("eng",)

    def test_debian_policy_text(self, shared_data: Path) -> None:
        """The 480 kB policy.txt loads with its chapter/section structure."""
        doc = _text(shared_data / "docs-debian" / "debian-policy" / "policy.txt")
        paths = {s.heading_path for s in doc.sections}
        # The book title and the chapters share the "*" underline, so they are siblings.
        assert ("1. About this manual", "1.3. Authors and Maintainers", "1.3.1. Early history") in paths
        assert doc.title == "Debian Policy Manual"


class TestEncodings:
    """The decoding policy: BOMs, UTF-8, damaged UTF-8 and legacy 8-bit files."""

    def test_utf8_bom(self, tmp_path: Path) -> None:
        """A UTF-8 BOM is stripped."""
        doc = _text(_write(tmp_path, codecs.BOM_UTF8 + "Grüße aus Köln\n".encode()))
        assert doc.text == "Grüße aus Köln"
        assert doc.metadata["encoding"] == "utf-8"

    def test_utf16_bom(self, tmp_path: Path) -> None:
        """UTF-16 with a BOM decodes, although it is full of NUL bytes."""
        doc = _text(_write(tmp_path, "Notes in UTF-16: naïve café\n".encode("utf-16")))
        assert doc.text == "Notes in UTF-16: naïve café"

    def test_bom_less_utf16(self, tmp_path: Path) -> None:
        """NULs in every other byte are UTF-16 text, not a binary file."""
        doc = _text(_write(tmp_path, "plain ascii written as utf-16le\n".encode("utf-16-le")))
        assert doc.text == "plain ascii written as utf-16le"
        assert doc.metadata["encoding"] == "utf-16-le"

    def test_legacy_latin1(self, tmp_path: Path) -> None:
        """Bytes with no valid UTF-8 sequence are Windows-1252, and the metadata says so."""
        doc = _text(_write(tmp_path, "Café “quoted” – Résumé\n".encode("cp1252")))
        assert doc.text == "Café “quoted” – Résumé"
        assert doc.metadata["encoding"] == "cp1252"

    def test_damaged_utf8(self, tmp_path: Path) -> None:
        """Mostly-UTF-8 with a stray byte keeps the UTF-8 text and counts the replacement."""
        data = "Zürich and Genève are fine; ".encode() + b"\xff" + b" this byte was not.\n"
        doc = _text(_write(tmp_path, data))
        assert doc.text.startswith("Zürich and Genève are fine; \ufffd this byte")
        assert doc.metadata["encoding"] == "utf-8"
        assert doc.metadata["encoding_errors"] == 1


class TestBadFiles:
    """Files that cannot be text fail with the documented reasons."""

    def test_empty(self, tmp_path: Path) -> None:
        """Zero bytes, or only whitespace, is an empty file."""
        for data in (b"", b" \n\t\n"):
            with pytest.raises(IngestError, match=r": empty file$"):
                _text(_write(tmp_path, data))

    def test_binary_junk(self, tmp_path: Path) -> None:
        """NUL bytes that are not UTF-16, or many control characters, mean binary."""
        with pytest.raises(IngestError, match="binary file, not text"):
            _text(_write(tmp_path, b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)) * 4))
        with pytest.raises(IngestError, match="binary file, not text"):
            _text(_write(tmp_path, bytes(range(1, 32)) * 20))

    def test_too_large(self, tmp_path: Path) -> None:
        """A file over ctx.max_file_bytes is refused before it is read."""
        ctx = LoadContext(source="notes", relpath="big.txt", max_file_bytes=1024)
        path = _write(tmp_path, b"word " * 1000)
        with pytest.raises(IngestError, match=r"file too large \(0\.0 MB > limit 0\.0 MB\)"):
            _text(path, ctx)

    def test_markdown_of_only_front_matter(self, tmp_path: Path) -> None:
        """Front matter with no body has no text to index."""
        path = _write(tmp_path, b"---\ntitle: x\n---\n", "x.md")
        with pytest.raises(IngestError, match="no text content"):
            list(load_markdown(path, CTX))
