"""PDF loader: one Section per page, running headers and footers removed, outline as heading path.

Text comes from PDFium (``pypdfium2``): it keeps the spaces between words that are set apart by
kerning alone, where pypdf ran them together ("ofthepackageshouldbe"), and reads ~5x faster;
``bench/pdf_extractors.py`` compares the extractors. Tables found on a page (``pdf_tables``) are
written as one ``label — column: value; ...`` line per row in place of their raw lines. PDFs
encrypted with an empty user password open as they are (PDFium decrypts RC4 and AES itself);
one that needs a password is an ``IngestError`` naming what to do.

PDFium is not thread-safe, not even across documents: every call into it holds ``_PDFIUM``.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from stanchion.errors import IngestError
from stanchion.ingest.clean import strip_repeated_lines
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.text import check_size
from stanchion.ingest.normalize import normalize_text
from stanchion.ingest.pdf_tables import PageTable, Segment, find_tables, has_cell_gaps
from stanchion.types import Document, MetaValue, Section

log = logging.getLogger(__name__)

_PDFIUM = threading.RLock()
# Odd/even running headers (book title left, chapter right) each sit on about half the pages, so
# the share is lower than strip_repeated_lines' default; only page-edge lines are ever candidates.
_HEADER_SHARE = 0.3
_PAGE_NUMBER = re.compile(
    r"^(?=\S)(page\s+)?(\d+|(xc|xl|l?x{0,3})(ix|iv|v?i{0,3}))(\s*(/|of)\s*\d+)?$",
    re.IGNORECASE,
)
# PDFium marks a word hyphenated at a line end with \x02 and joins its halves.
_RUN_LOOKAHEAD = 8  # runs ahead of the current one where a character's centre is looked for
_SOFT_HYPHEN = re.compile(r"\x02(\r?\n)?")
_PDF_DATE = re.compile(r"^D:(\d{4})(\d\d)?(\d\d)?(\d\d)?(\d\d)?(\d\d)?([Zz+\-])?(\d\d)?'?(\d\d)?")
_PASSWORD_HELP = (
    "encrypted PDF that needs a password to open: save a copy without the password "
    "(e.g. qpdf --decrypt --password=PASSWORD in.pdf out.pdf) and ingest that"
)


@dataclass(frozen=True, slots=True)
class PdfPage:
    """One page's text (tables already as row lines), 1-based ``number``; ``failed`` if unreadable."""

    number: int
    text: str
    tables: int = 0
    failed: bool = False


def load_pdf(
    path: Path,
    ctx: LoadContext,
    *,
    max_pages: int | None = None,
    strip_boilerplate: bool | None = None,
    tables: bool = True,
) -> Iterator[Document]:
    """One Document per PDF with one Section per page that has text (``page`` is 1-based).

    ``max_pages`` reads only the first pages (previews, tests). ``strip_boilerplate`` (the spec's
    ``cleaning.strip_boilerplate``) removes running headers, footers and bare page numbers.
    ``tables`` writes tables as one self-describing line per row. Pages with no text layer are
    counted in ``metadata["pages_without_text"]``; a file with none at all is an error, since it
    needs OCR first.
    """
    check_size(path, ctx)
    started = time.perf_counter()
    with _open(path) as pdf:
        total = _page_count(pdf, path)
        count = total if max_pages is None else min(total, max_pages)
        pages = list(_pages(pdf, path, count, tables=tables))
        outline = _outline(pdf, path)
        info = _info(pdf)
    raw = [page.text for page in pages]
    if ctx.strip_boilerplate if strip_boilerplate is None else strip_boilerplate:
        raw = [_drop_page_numbers(page) for page in strip_repeated_lines(raw, min_share=_HEADER_SHARE)]
    texts = [normalize_text(page) for page in raw]
    if not any(texts):
        raise IngestError(path, "no extractable text (scanned PDF? run OCR first)")

    sections = tuple(
        Section(text=text, page=number, heading_path=_heading_at(outline, number, text))
        for number, text in enumerate(texts, start=1)
        if text
    )
    title = _title(info, sections)
    meta: dict[str, MetaValue] = {
        "title": title,
        "pages": total,
        "pages_without_text": sum(1 for t in texts if not t),
        **{k: v for k, v in info.items() if k != "title"},
    }
    if count < total:
        meta["pages_loaded"] = count
    failed = sum(1 for page in pages if page.failed)
    if failed:
        meta["pages_failed"] = failed
    found = sum(page.tables for page in pages)
    if found:
        meta["tables"] = found
    log.info(
        "ingest.pdf.loaded",
        extra={
            "path": str(path),
            "pages": count,
            "tables": found,
            "seconds": round(time.perf_counter() - started, 3),
        },
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


class _Pdf:
    """An open PDFium document, closed under the lock on exit (never by a finalizer elsewhere)."""

    def __init__(self, doc: pdfium.PdfDocument) -> None:
        self.doc = doc

    def __enter__(self) -> pdfium.PdfDocument:
        return self.doc

    def __exit__(self, *exc: object) -> None:
        with _PDFIUM:
            self.doc.close()


def _open(path: Path) -> _Pdf:
    """Open a PDF; one encrypted with an empty user password (common) opens as it is."""
    with path.open("rb") as fh:
        if not fh.read(1024).lstrip().startswith(b"%PDF-"):
            raise IngestError(path, "not a PDF file (no %PDF- header)")
    with _PDFIUM:
        try:
            return _Pdf(pdfium.PdfDocument(path, password=""))
        except pdfium.PdfiumError as exc:
            if exc.err_code == pdfium_c.FPDF_ERR_PASSWORD:
                raise IngestError(path, _PASSWORD_HELP) from exc
            if exc.err_code == pdfium_c.FPDF_ERR_SECURITY:
                raise IngestError(path, f"encrypted PDF with an unsupported security handler: {exc}") from exc
            raise IngestError(path, f"corrupt PDF: {exc}") from exc


def _page_count(pdf: pdfium.PdfDocument, path: Path) -> int:
    with _PDFIUM:
        count = len(pdf)
    if count == 0:
        raise IngestError(path, "PDF has no pages")
    return count


def iter_pages(path: Path, *, max_pages: int | None = None, tables: bool = True) -> Iterator[PdfPage]:
    """A PDF's pages one at a time, as PDFium reads them (tables as row lines, running headers
    not yet stripped): nothing of a page is kept once it is yielded. Raises ``IngestError`` as
    ``load_pdf`` does for a file that cannot be opened."""
    with _open(path) as pdf:
        count = _page_count(pdf, path)
        yield from _pages(pdf, path, count if max_pages is None else min(count, max_pages), tables=tables)


def _pages(pdf: pdfium.PdfDocument, path: Path, count: int, *, tables: bool) -> Iterator[PdfPage]:
    """The first ``count`` pages, one at a time.

    A page PDFium cannot read comes back empty with ``failed`` set: one damaged page should not
    cost the other pages of a long manual.
    """
    for index in range(count):
        with _PDFIUM:
            try:
                page = _read_page(pdf, index, tables=tables)
            except pdfium.PdfiumError as exc:
                log.warning(
                    "ingest.pdf.page_failed", extra={"path": str(path), "page": index + 1, "error": str(exc)}
                )
                page = PdfPage(index + 1, "", failed=True)
        yield page


def _read_page(pdf: pdfium.PdfDocument, index: int, *, tables: bool) -> PdfPage:
    """Called with ``_PDFIUM`` held."""
    page = pdf[index]
    textpage = page.get_textpage()
    try:
        text = textpage.get_text_bounded()
        found = _tables(textpage) if tables else []
        if found:
            text = _with_tables(page, textpage, text, found)
        return PdfPage(index + 1, _SOFT_HYPHEN.sub("", text), tables=len(found))
    finally:
        textpage.close()
        page.close()


def _with_tables(
    page: pdfium.PdfPage, textpage: pdfium.PdfTextPage, text: str, found: list[PageTable]
) -> str:
    """The page's text with each table's lines replaced by its row lines.

    A table's lines are found in the page text as PDFium reads the table's area, so everything
    else keeps PDFium's order (a footer stays last, where header stripping looks). Where they
    are not found verbatim, the page is rebuilt from the areas between the tables.
    """
    left, bottom, right, top = page.get_bbox()
    parts: list[str] = []
    at = 0
    for table in found:
        raw = textpage.get_text_bounded(left, table.bottom, right, table.top)
        start = text.find(raw, at) if raw.strip() else -1
        if start < 0:
            return _by_areas(textpage, (left, bottom, right, top), found)
        parts.extend([_without_caption(text[at:start], table), table.text()])
        at = start + len(raw)
    parts.append(text[at:])
    return "\n".join(part.strip("\r\n") for part in parts if part.strip())


def _by_areas(
    textpage: pdfium.PdfTextPage, box: tuple[float, float, float, float], found: list[PageTable]
) -> str:
    """The text of the areas above, between and below the tables, with each table's row lines."""
    left, bottom, right, top = box
    parts: list[str] = []
    for table in found:
        parts.extend(
            [_without_caption(textpage.get_text_bounded(left, table.top, right, top), table), table.text()]
        )
        top = table.bottom
    parts.append(textpage.get_text_bounded(left, bottom, right, top))
    return "\n".join(part.strip("\r\n") for part in parts if part.strip())


def _without_caption(before: str, table: PageTable) -> str:
    """``before`` less its last lines when they are the table's caption, which opens the table's text."""
    lines = before.rstrip().splitlines()
    while table.caption and lines and lines[-1].strip() and lines[-1].strip() in table.caption:
        lines.pop()
    return "\n".join(lines)


def _tables(textpage: pdfium.PdfTextPage) -> list[PageTable]:
    """Tables on the page; texts of the text runs are read only where positions suggest cells."""
    boxes = [textpage.get_rect(i) for i in range(textpage.count_rects())]
    if not has_cell_gaps([Segment(x0, y0, x1, y1, "") for x0, y0, x1, y1 in boxes]):
        return []
    texts = _run_texts(textpage, boxes)
    segments = [Segment(x0, y0, x1, y1, text) for (x0, y0, x1, y1), text in zip(boxes, texts, strict=True)]
    return find_tables(segments)


def _run_texts(textpage: pdfium.PdfTextPage, boxes: list[tuple[float, float, float, float]]) -> list[str]:
    """The text of each run, in one pass over the page's characters. Asking PDFium for each run's
    text by its box (``get_text_bounded``) scans the whole page per run: quadratic, 49 s on a dense
    page of 16,000 numbers. The runs come in character order, so each character's centre is looked
    for in the current run and the few after it; a space PDFium generated (no box) joins the run
    it follows."""
    text = textpage.get_text_range()
    runs: list[list[str]] = [[] for _ in boxes]
    at = 0
    for index in range(min(len(text), textpage.count_chars())):
        char = text[index]
        x0, y0, x1, y1 = textpage.get_charbox(index)
        if x1 <= x0 and y1 <= y0:
            if char == " " and at < len(runs) and runs[at]:
                runs[at].append(char)
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for run in range(at, min(at + _RUN_LOOKAHEAD, len(boxes))):
            left, bottom, right, top = boxes[run]
            if left <= cx <= right and bottom <= cy <= top:
                at = run
                runs[run].append(char)
                break
    # PDFium's soft hyphen is U+FFFE in a character range, \x02 in bounded text (_SOFT_HYPHEN).
    return ["".join(chars).replace("\ufffe", "\x02") for chars in runs]


def _drop_page_numbers(page: str) -> str:
    """Remove a bare page number ("12", "xii", "Page 3 of 9") on the first or last line of a page."""
    lines = page.strip().split("\n")
    if lines and _PAGE_NUMBER.match(lines[-1].strip()):
        lines.pop()
    if lines and _PAGE_NUMBER.match(lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines)


def _outline(pdf: pdfium.PdfDocument, path: Path) -> tuple[list[int], list[tuple[str, ...]]]:
    """Bookmarks as (start pages, heading paths), sorted by page; empty when the file has none."""
    entries: list[tuple[int, tuple[str, ...]]] = []
    trail: list[str] = []
    with _PDFIUM:
        try:
            for item in pdf.get_toc():
                title = normalize_text(item.get_title() or "")
                del trail[item.level :]
                trail.extend([""] * (item.level - len(trail)))
                trail.append(title)
                dest = item.get_dest()
                page = dest.get_index() if dest is not None else None
                if page is not None and page >= 0 and title:
                    entries.append((page + 1, tuple(t for t in trail if t)))
        except pdfium.PdfiumError as exc:
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


def _title(info: dict[str, MetaValue], sections: tuple[Section, ...]) -> str:
    title = str(info.get("title", ""))
    if title and not title.lower().startswith(("untitled", "microsoft word -")):
        return title
    first_line = sections[0].text.split("\n", 1)[0] if sections else ""
    return first_line[:200]


def _info(pdf: pdfium.PdfDocument) -> dict[str, MetaValue]:
    """Title, author and dates from the document information dictionary, when they parse."""
    with _PDFIUM:
        try:
            info = pdf.get_metadata_dict(skip_empty=True)
        except pdfium.PdfiumError:
            return {}
    out: dict[str, MetaValue] = {}
    for key, name in (("title", "Title"), ("author", "Author")):
        value = normalize_text(info.get(name, ""))
        if value:
            out[key] = value
    for key, name in (("created", "CreationDate"), ("modified", "ModDate")):
        when = _pdf_date(info.get(name, ""))
        if when is not None:
            out[key] = when.isoformat()
    return out


def _pdf_date(text: str) -> datetime | None:
    """A PDF date string (``D:20221217024144-00'00'``) as a datetime; None when it does not parse."""
    match = _PDF_DATE.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, sign, off_h, off_m = match.groups()
    zone = None
    if sign in ("Z", "z"):
        zone = UTC
    elif sign in ("+", "-"):
        offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0))
        zone = timezone(-offset if sign == "-" else offset)
    try:
        return datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=zone,
        )
    except ValueError:
        return None  # a malformed date; the text is what matters
