"""PDF loader: one Section per page, running headers and footers removed, outline as heading path."""

from __future__ import annotations

import bisect
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

from stanchion.errors import IngestError
from stanchion.ingest.clean import strip_repeated_lines
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.text import check_size
from stanchion.ingest.normalize import normalize_text
from stanchion.types import Document, MetaValue, Section

log = logging.getLogger(__name__)

# Odd/even running headers (book title left, chapter right) each sit on about half the pages, so
# the share is lower than strip_repeated_lines' default; only page-edge lines are ever candidates.
_HEADER_SHARE = 0.3
_PAGE_NUMBER = re.compile(
    r"^(?=\S)(page\s+)?(\d+|(xc|xl|l?x{0,3})(ix|iv|v?i{0,3}))(\s*(/|of)\s*\d+)?$",
    re.IGNORECASE,
)
# Errors pypdf raises from inside a damaged file besides its own: it parses untrusted structure.
_PARSE_ERRORS = (PyPdfError, ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError)


def load_pdf(
    path: Path, ctx: LoadContext, *, max_pages: int | None = None, strip_boilerplate: bool | None = None
) -> Iterator[Document]:
    """One Document per PDF with one Section per page that has text (``page`` is 1-based).

    ``max_pages`` reads only the first pages (previews, tests). ``strip_boilerplate`` (the spec's
    ``cleaning.strip_boilerplate``) removes running headers, footers and bare page numbers. Pages
    with no text layer are counted in ``metadata["pages_without_text"]``; a file with none at all
    is an error, since it needs OCR first.
    """
    check_size(path, ctx)
    started = time.perf_counter()
    reader = _open(path)
    total = _page_count(reader, path)
    count = total if max_pages is None else min(total, max_pages)
    raw: list[str] = []
    failed = 0
    for index in range(count):
        try:
            raw.append(reader.pages[index].extract_text() or "")
        except _PARSE_ERRORS as exc:
            # One damaged page should not cost the other pages of a long manual.
            failed += 1
            raw.append("")
            log.warning(
                "ingest.pdf.page_failed", extra={"path": str(path), "page": index + 1, "error": str(exc)}
            )
    if ctx.strip_boilerplate if strip_boilerplate is None else strip_boilerplate:
        raw = [_drop_page_numbers(page) for page in strip_repeated_lines(raw, min_share=_HEADER_SHARE)]
    texts = [normalize_text(page) for page in raw]
    if not any(texts):
        raise IngestError(path, "no extractable text (scanned PDF? run OCR first)")

    outline = _outline(reader, path)
    sections = tuple(
        Section(text=text, page=number, heading_path=_heading_at(outline, number, text))
        for number, text in enumerate(texts, start=1)
        if text
    )
    title = _title(reader, sections)
    meta: dict[str, MetaValue] = {
        "title": title,
        "pages": total,
        "pages_without_text": sum(1 for t in texts if not t),
        **_info(reader),
    }
    if count < total:
        meta["pages_loaded"] = count
    if failed:
        meta["pages_failed"] = failed
    log.info(
        "ingest.pdf.loaded",
        extra={"path": str(path), "pages": count, "seconds": round(time.perf_counter() - started, 3)},
    )
    yield Document(
        id=ctx.doc_id(),
        text="\n\n".join(s.text for s in sections),
        title=title,
        source=ctx.source,
        path=ctx.relpath,
        metadata={**ctx.metadata, **meta},
        access_groups=ctx.access_groups,
        sections=sections,
    )


def _open(path: Path) -> PdfReader:
    """Open and, for PDFs encrypted with an empty user password (common), decrypt."""
    with path.open("rb") as fh:
        if not fh.read(1024).lstrip().startswith(b"%PDF-"):
            raise IngestError(path, "not a PDF file (no %PDF- header)")
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError(path, "encrypted PDF (a password is required)")
    except DependencyError as exc:
        # AES-encrypted files need the optional 'cryptography' package.
        raise IngestError(path, f"encrypted PDF that cannot be decrypted here: {exc}") from exc
    except FileNotDecryptedError as exc:
        raise IngestError(path, "encrypted PDF (a password is required)") from exc
    except _PARSE_ERRORS as exc:
        raise IngestError(path, f"corrupt PDF: {exc}") from exc
    return reader


def _page_count(reader: PdfReader, path: Path) -> int:
    try:
        count = len(reader.pages)
    except FileNotDecryptedError as exc:
        raise IngestError(path, "encrypted PDF (a password is required)") from exc
    except _PARSE_ERRORS as exc:
        raise IngestError(path, f"corrupt PDF: {exc}") from exc
    if count == 0:
        raise IngestError(path, "PDF has no pages")
    return count


def _drop_page_numbers(page: str) -> str:
    """Remove a bare page number ("12", "xii", "Page 3 of 9") on the first or last line of a page."""
    lines = page.strip().split("\n")
    if lines and _PAGE_NUMBER.match(lines[-1].strip()):
        lines.pop()
    if lines and _PAGE_NUMBER.match(lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines)


def _outline(reader: PdfReader, path: Path) -> tuple[list[int], list[tuple[str, ...]]]:
    """Bookmarks as (start pages, heading paths), sorted by page; empty when the file has none."""
    entries: list[tuple[int, tuple[str, ...]]] = []

    def walk(items: list[Any], parents: tuple[str, ...]) -> None:
        last: tuple[str, ...] = parents
        for item in items:
            if isinstance(item, list):
                walk(item, last)  # a nested list holds the children of the entry before it
                continue
            title = normalize_text(str(item.title or ""))
            page = reader.get_destination_page_number(item)
            last = (*parents, title) if title else parents
            if page is not None and page >= 0 and title:
                entries.append((page + 1, last))

    try:
        walk(list(reader.outline), ())
    except _PARSE_ERRORS as exc:
        # A broken outline is cosmetic: pages still load, only without heading paths.
        log.warning("ingest.pdf.outline_failed", extra={"path": str(path), "error": str(exc)})
        return [], []
    entries.sort(key=lambda e: e[0])  # stable: entries on one page keep their reading order
    return [p for p, _ in entries], [h for _, h in entries]


def _heading_at(outline: tuple[list[int], list[tuple[str, ...]]], page: int, text: str) -> tuple[str, ...]:
    """The bookmark path in force at the top of ``page``.

    That is a bookmark starting on this page whose title opens the page text (chapters start on a
    fresh page), else the last one starting on an earlier page. Titles compare without spaces:
    some PDFs lose the spaces between words in extraction.
    """
    starts, paths = outline
    lo, hi = bisect.bisect_left(starts, page), bisect.bisect_right(starts, page)
    top = _squash(text[:300])
    for at in range(lo, hi):
        if _squash(paths[at][-1]) in top:
            return paths[at]
    if lo > 0:
        return paths[lo - 1]
    return paths[lo] if lo < hi else ()


def _squash(text: str) -> str:
    return "".join(text.split()).casefold()


def _title(reader: PdfReader, sections: tuple[Section, ...]) -> str:
    try:
        info = reader.metadata
        title = normalize_text(str(info.title or "")) if info is not None else ""
    except _PARSE_ERRORS:
        title = ""
    if title and not title.lower().startswith(("untitled", "microsoft word -")):
        return title
    first_line = sections[0].text.split("\n", 1)[0] if sections else ""
    return first_line[:200]


def _info(reader: PdfReader) -> dict[str, MetaValue]:
    """Author and dates from the document information dictionary, when they parse."""
    out: dict[str, MetaValue] = {}
    try:
        info = reader.metadata
        if info is None:
            return out
        if info.author:
            out["author"] = normalize_text(str(info.author))
        for key, attr in (("created", "creation_date"), ("modified", "modification_date")):
            try:
                value = getattr(info, attr)
            except ValueError:
                continue  # a malformed date string; the text is what matters
            if value is not None:
                out[key] = value.isoformat()
    except _PARSE_ERRORS:
        pass
    return out
