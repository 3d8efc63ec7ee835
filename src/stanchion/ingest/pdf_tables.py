"""Tables on a PDF page, found from the positions of its text, as lines that name every value.

A PDF has no table structure, only text placed on a page. A table shows as lines of *cells*:
pieces of text on one baseline separated by gaps wider than any space between words, whose
left/right extents line up from line to line. That holds for ruled tables and for the unruled,
whitespace-aligned statements of annual reports alike, so no ruling lines are needed::

    Consolidated Statements of Cash Flows
    (in millions)                                        2018       2017
    Cash flows from investing activities:
    Purchases of property, plant and equipment . . .   (1,577)    (1,440)

becomes (``rows_as_text``, the format CSV rows get)::

    Consolidated Statements of Cash Flows (in millions)
    Cash flows from investing activities / Purchases of property, plant and equipment — 2018: (1,577); 2017: (1,440).

A run of such lines is a table when it has a header row (its value cells are words or years,
not amounts), at least two rows below it, and short value cells (two columns of prose are not
a table). A row with a label and no values heads the rows under it ("Cash flows from investing
activities:"). The caption is the short line just above the table. The first column holds row
labels when its cells are words and most other cells are numbers.

This module is geometry only (no PDF library): the loader hands it ``Segment``s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from stanchion.ingest.tables import rows_as_text

__all__ = ["PageTable", "Segment", "find_tables", "has_cell_gaps"]

# A gap wider than this many line heights separates cells; word spaces are ~0.25-0.5 of one.
_CELL_GAP = 1.0
# Lines further apart than this many line heights do not belong to one table.
_ROW_GAP = 2.6
_PITCH = 1.8  # a line further below than this many row pitches starts something else
_MIN_DATA_ROWS = 2
_MAX_VALUE_WORDS = 6  # a header cell with more words is a sentence
_MEAN_VALUE_WORDS = 3.5  # in prose side by side, every column averages more words a cell
_CAPTION_CHARS = 120
_CAPTION_LINES = 2
_CURRENCY = ("$", "€", "£", "¥", "US$", "EUR", "USD")
_LEADERS = re.compile(r"\s*(?:\.\s*){4,}")
_AMOUNT = re.compile(
    r"^[$€£¥]?\s*[(\-\u2013\u2212]?\s*[$€£¥]?\s*\d[\d,.\s]*%?\s*\)?[%*]?$|^[$€£¥]?\s*[\-\u2013\u2014]$"
)
# A corner cell that says what the figures count: "(in millions)", "EUR thousands".
_UNIT = re.compile(r"^\(.*\)$|\b(thousands|millions|billions|000s|percent)\b|[$€£¥%]", re.IGNORECASE)
_YEAR = re.compile(r"^(?:FY\s?)?(?:19|20)\d\d[a-z]?$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of text on one line, in PDF points (origin at the bottom left)."""

    x0: float
    bottom: float
    x1: float
    top: float
    text: str

    @property
    def height(self) -> float:
        return max(self.top - self.bottom, 1.0)


@dataclass(slots=True)
class _Line:
    cells: list[Segment] = field(default_factory=list)  # runs joined across word-sized gaps
    parts: list[Segment] = field(default_factory=list)  # the runs as the page has them

    @property
    def top(self) -> float:
        return max(c.top for c in self.cells)

    @property
    def bottom(self) -> float:
        return min(c.bottom for c in self.cells)

    @property
    def height(self) -> float:
        return max(c.height for c in self.cells)


@dataclass(frozen=True, slots=True)
class PageTable:
    """One table found on a page: where it lies and its rows as text."""

    top: float
    bottom: float
    caption: str
    header: list[str]
    rows: list[list[str]]
    labelled: bool

    def text(self) -> str:
        body = rows_as_text([self.header, *self.rows], labelled=self.labelled) or ""
        return f"{self.caption}\n{body}" if self.caption else body


def has_cell_gaps(segments: list[Segment]) -> bool:
    """Whether the page holds a run of three or more lines of cells whose columns line up.

    Positions alone (texts may be blank), so the loader reads segment texts only for such pages.
    """
    lines = _lines([Segment(s.x0, s.bottom, s.x1, s.top, s.text or "x") for s in segments])
    return any(True for _ in _blocks(lines))


def find_tables(segments: list[Segment]) -> list[PageTable]:
    """The tables among a page's text segments, top to bottom."""
    lines = _lines(segments)
    tables = [_table(lines, start, end, columns) for start, end, columns in _blocks(lines)]
    return [table for table in tables if table is not None]


def _blocks(lines: list[_Line]) -> Iterator[tuple[int, int, list[tuple[float, float]]]]:
    """(start, end, columns) of each run of lines whose cells line up in columns."""
    start = 0
    while start < len(lines):
        end = _block_end(lines, start)
        # Cut the run short from below until its cells fit columns (a heading or caption under a
        # table can look like one more row).
        while end - start >= _MIN_DATA_ROWS + 1:
            multi = [line for line in lines[start:end] if len(line.cells) >= 2]
            if len(multi) < _MIN_DATA_ROWS + 1:
                break
            # A header's cells may touch (a ruled table's wide titles): columns come from the
            # rows under it when there are enough of them.
            columns = _columns(multi[1:] if len(multi) > _MIN_DATA_ROWS else multi)
            if columns is not None and len(lines[end - 1].cells) >= 2:
                yield start, end, columns
                break
            end -= 1
        start = max(end, start + 1)


def _lines(segments: list[Segment]) -> list[_Line]:
    """Segments grouped into lines (top to bottom), cells merged across word-sized gaps."""
    lines: list[_Line] = []
    for seg in sorted(segments, key=lambda s: (-s.top, s.x0)):
        if not seg.text.strip():
            continue
        middle = (seg.top + seg.bottom) / 2
        line = next((ln for ln in reversed(lines[-3:]) if ln.bottom <= middle <= ln.top), None)
        if line is None:
            lines.append(_Line([seg]))
        else:
            line.cells.append(seg)
    for line in lines:
        line.parts = _cells(sorted(line.cells, key=lambda s: s.x0), merge=False)
        line.cells = _cells(sorted(line.cells, key=lambda s: s.x0))
    return [line for line in lines if line.cells]


def _cells(parts: list[Segment], *, merge: bool = True) -> list[Segment]:
    """Neighbouring segments closer than a cell gap joined; dot leaders split a label from its value."""
    merged: list[Segment] = []
    for seg in parts:
        prev = merged[-1] if merged else None
        close = prev is not None and seg.x0 - prev.x1 < _CELL_GAP * max(prev.height, seg.height)
        if prev is not None and ((merge and close) or prev.text.strip() in _CURRENCY):
            # A currency sign set apart from its amount ("$      1,577") belongs to it.
            joiner = "" if prev.text.endswith((" ", "-", "/")) else " "
            merged[-1] = Segment(
                prev.x0,
                min(prev.bottom, seg.bottom),
                seg.x1,
                max(prev.top, seg.top),
                prev.text + joiner + seg.text,
            )
        else:
            merged.append(seg)
    cells: list[Segment] = []
    for seg in merged:
        pieces = [p.strip() for p in _LEADERS.split(seg.text)]
        pieces = [p for p in pieces if p]
        if len(pieces) <= 1:
            if pieces:
                cells.append(Segment(seg.x0, seg.bottom, seg.x1, seg.top, pieces[0]))
            continue
        # Leaders inside one run: place the pieces by their share of the characters.
        per_char = (seg.x1 - seg.x0) / max(len(seg.text), 1)
        at = 0
        for piece in pieces:
            begin = seg.text.index(piece, at)
            at = begin + len(piece)
            cells.append(
                Segment(seg.x0 + begin * per_char, seg.bottom, seg.x0 + at * per_char, seg.top, piece)
            )
    return cells


def _block_end(lines: list[_Line], start: int) -> int:
    """End of the run of table-like lines from ``start``: multi-cell lines, and single-cell lines
    (group headings, wrapped cells) that lead into a multi-cell line, all close together."""
    if len(lines[start].cells) < 2:
        return start + 1
    end = start + 1
    pitch = 0.0  # the smallest top-to-top distance so far: rows of a table are evenly spaced
    while end < len(lines):
        line, prev = lines[end], lines[end - 1]
        step = prev.top - line.top
        if prev.bottom - line.top > _ROW_GAP * max(prev.height, line.height) or (
            pitch and step > _PITCH * pitch
        ):
            break
        pitch = min(pitch, step) if pitch else step
        if len(line.cells) >= 2:
            end += 1
            continue
        if end + 1 < len(lines) and len(lines[end + 1].cells) >= 2:
            end += 1  # a group heading at the left, or a cell wrapped onto a line of its own
            continue
        break
    while end > start and len(lines[end - 1].cells) < 2:
        end -= 1  # a block ends on a row
    return end


def _columns(rows: list[_Line]) -> list[tuple[float, float]] | None:
    """Column extents: the union of overlapping cell extents; None when a row puts two cells in one."""
    spans = sorted((c.x0, c.x1) for row in rows for c in row.cells)
    columns: list[list[float]] = []
    for x0, x1 in spans:
        if columns and x0 <= columns[-1][1]:
            columns[-1][1] = max(columns[-1][1], x1)
        else:
            columns.append([x0, x1])
    for row in rows:
        used = [_column_of(columns, c) for c in row.cells]
        if len(set(used)) < len(used):
            return None
    return [(a, b) for a, b in columns]


def _column_of(columns: list[list[float]] | list[tuple[float, float]], cell: Segment) -> int:
    middle = (cell.x0 + cell.x1) / 2
    for index, (x0, x1) in enumerate(columns):
        if x0 <= middle <= x1 or x0 <= cell.x0 <= x1:
            return index
    return min(range(len(columns)), key=lambda i: abs((columns[i][0] + columns[i][1]) / 2 - middle))


def _is_amount(text: str) -> bool:
    return bool(_AMOUNT.match(text.strip()))


def _prose(body: list[list[str]], width: int) -> bool:
    """Columns of running text side by side: every column averages several words a cell."""
    for index in range(width):
        cells = [row[index] for row in body if row[index]]
        if cells and sum(len(c.split()) for c in cells) <= _MEAN_VALUE_WORDS * len(cells):
            return False
    return True


def _numeric_column(cells: list[str]) -> bool:
    filled = [c for c in cells if c]
    return bool(filled) and sum(_is_amount(c) for c in filled) >= 0.6 * len(filled)


def _table(lines: list[_Line], start: int, end: int, columns: list[tuple[float, float]]) -> PageTable | None:
    block = lines[start:end]
    if len(columns) < 2:
        return None
    grid: list[list[str]] = []
    for line in block:
        row = [""] * len(columns)
        for cell in line.parts:
            index = _column_of(columns, cell)
            row[index] = f"{row[index]} {cell.text}".strip()
        grid.append(row)
    header, body = grid[0], grid[1:]
    values = [cell for row in body for cell in row[1:] if cell]
    if not values or _prose(body, len(columns)):
        return None
    if any(len(cell.split()) > _MAX_VALUE_WORDS or cell.endswith(".") for cell in header):
        return None  # a header names columns; a sentence does not
    if any(_is_amount(cell) and not _YEAR.match(cell) for cell in header[1:] if cell):
        return None  # no header row (a table of contents: its first "header" is a page number)
    if sum(1 for cell in header[1:] if cell) < len(columns) - 1 - len(columns) // 3:
        return None  # most columns need a name
    labels = [row[0] for row in body if row[0]]
    labelled = sum(_is_amount(x) for x in labels) <= len(labels) / 4 and all(
        _numeric_column([row[index] for row in body]) for index in range(1, len(columns))
    )
    rows: list[list[str]] = []
    for row in body:
        if labelled and not any(row[1:]):
            # A label without values heads the rows below it (rows_as_text prefixes them).
            rows.append([row[0].rstrip(":").rstrip(), *row[1:]])
            continue
        if not labelled and not row[0] and rows:
            # A row with an empty first cell continues the one above (its cells wrapped).
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], row, strict=True)]
            continue
        rows.append(row)
    if sum(1 for row in rows if any(row[1:])) < _MIN_DATA_ROWS:
        return None
    caption = _caption(lines, start)
    if labelled and _UNIT.search(header[0]):
        caption = f"{caption} {header[0]}".strip()  # "(in millions)" says what the numbers count
    return PageTable(
        top=block[0].top,
        bottom=block[-1].bottom,
        caption=caption,
        header=header,
        rows=rows,
        labelled=labelled,
    )


def _caption(lines: list[_Line], start: int) -> str:
    """The short single-cell lines right above the table (a title, and a spanning header such as
    "Year ended December 31,"), at most ``_CAPTION_LINES``, top to bottom."""
    found: list[str] = []
    below = lines[start]
    for above in reversed(lines[max(0, start - _CAPTION_LINES) : start]):
        if len(above.cells) != 1 or above.bottom - below.top > _ROW_GAP * max(above.height, below.height):
            break
        text = above.cells[0].text.strip()
        if len(text) > _CAPTION_CHARS or text.endswith("."):
            break
        found.append(text)
        below = above
    return " ".join(reversed(found))
