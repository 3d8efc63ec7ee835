"""Tables (CSV and TSV files, HTML and PDF tables) as text that retrieval and answers can use.

A raw CSV is one long run of commas to a sentence splitter, an embedder and a reader alike: a
chunk or a quote holding ``LT-001,Rotterdam NL,Lyon FR,FTL,1480`` no longer says what 1480 is.
The same holds for an HTML or PDF table flattened cell by cell. Each row becomes one line that
names its values by column::

    lane_id: LT-001; origin: Rotterdam NL; destination: Lyon FR; mode: FTL; rate_eur: 1480.

and a row with a label (the first column of a financial statement, under a blank or unit
header cell) leads with it, after the group row above it if there is one::

    Investing activities / Purchases of property, plant and equipment — 2018: (1,577); 2017: (1,440).

so any row, wherever a chunk boundary falls and whichever row an answer quotes, carries its
headers and label. Several header rows (``2018`` over ``Q1 Q2``) are joined per column as
``2018 / Q1``. Empty values are left out; a row longer than the header names its extra values
``column N``. Stacked group rows ("Assets" over "Current assets") are joined; a label-only row
with no rows below it (a footnote) is kept as a line of its own.

Repeating the names in every row must not turn a small file into a huge text: a column name is
cut to ``MAX_NAME_CHARS`` in the row lines (the full header then leads the table once), and a
table whose lines would exceed ``BUDGET_FACTOR`` times its own text (plus ``BUDGET_FLOOR``) is
written flat instead, one `` | ``-joined line per row.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import PurePath

__all__ = ["is_row_line", "rows_as_text", "table_as_text", "table_delimiter"]

_BY_SUFFIX = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_BY_TYPE = {"text/csv": ",", "text/tab-separated-values": "\t", "text/tsv": "\t"}
_SENTENCE_END = ".!?"
LABEL_SEPARATOR = " \u2014 "  # between a row's label and its named values
LEVEL_SEPARATOR = " / "  # between header levels, and between a group row and a label
# A row longer than this is cut into several lines, each with the row's label, so a chunk
# boundary inside a very wide row still leaves every piece its label (256 MiniLM tokens ~ 900).
MAX_LINE_CHARS = 600
# A column name longer than this is cut in the row lines (a sentence in a <th> repeated per row).
MAX_NAME_CHARS = 80
# A table's lines may hold this many times its own text (each cell counted with one separator),
# plus a floor for small tables; past it the table is written flat. Names of up to ~40 characters
# over one-digit values stay within it.
BUDGET_FACTOR = 20
BUDGET_FLOOR = 20_000
# A row line is never tested longer than this: a line that long cannot be kept whole in a chunk
# anyway, and testing it at every cut of a long line of prose would be quadratic.
MAX_ROW_LINE_CHARS = 4 * MAX_LINE_CHARS
# A corner cell that gives the unit of the figures ("(in millions)", "$ thousands") names no column.
_UNIT = re.compile(
    r"\(.*\)|.{0,24}\b(thousands|millions|billions|000s)\b.{0,24}|[$\u20ac\u00a3]|(?-i:[A-Z]{3})",
    re.IGNORECASE,
)


# A line rows_as_text writes: "name: value; name: value..." or "label — name: value...".
_ROW_LINE = re.compile(
    r"[^:;\n]{1,120}: [^;\n]*(?:; [^:;\n]{1,120}: [^;\n]*)+|[^\n]{1,300}?\u2014 [^:;\n]{1,120}: [^\n]*"
)


def is_row_line(line: str) -> bool:
    """Whether ``line`` reads as a table row written by ``rows_as_text`` (a chunker keeps it whole).

    A line longer than ``MAX_ROW_LINE_CHARS`` never does (it is chunked like prose)."""
    line = line.strip()
    return len(line) <= MAX_ROW_LINE_CHARS and _ROW_LINE.fullmatch(line) is not None


def table_delimiter(filename: str, content_type: str = "") -> str | None:
    """The delimiter a file's name or MIME type declares, or None for anything else."""
    by_type = _BY_TYPE.get(content_type.split(";")[0].strip().lower())
    return by_type or _BY_SUFFIX.get(PurePath(filename).suffix.lower())


def table_as_text(text: str, delimiter: str) -> str | None:
    """The table's rows as ``column: value; ...`` lines, or None when ``text`` is no table
    (fewer than two columns in its first row, no data row, or not parseable as delimited text)."""
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error:
        return None
    return rows_as_text(rows, spanned_headers=False)


def rows_as_text(
    rows: Sequence[Sequence[str]],
    *,
    header_rows: int = 1,
    labelled: bool | None = None,
    spanned_headers: bool = True,
    budget: int | None = None,
) -> str | None:
    """A table's rows (cells as text, header rows first) as one self-contained line per data row.

    ``labelled``: the first column holds row labels rather than values (None: it does when its
    header cells are blank or give a unit, "(in millions)", as in most financial statements). ``spanned_headers``: a blank cell in
    an upper header row continues the cell to its left (a PDF's merged "2018" over "Q1 Q2"); pass
    False when spans are already expanded (HTML) or impossible (CSV). With no header row, values
    are joined by `` | ``, after the label when ``labelled``.

    ``budget``: the most characters the lines may take (None: ``BUDGET_FACTOR`` times the rows'
    own text plus ``BUDGET_FLOOR``); past it every row is written flat, its cells joined by `` | ``.

    Returns None when the rows are no table: fewer than two columns in the first row, or no data
    row with a value.
    """
    cleaned = [[" ".join(str(cell).split()) for cell in row] for row in rows]
    cleaned = [row for row in cleaned if any(row)]
    header_rows = max(0, min(header_rows, len(cleaned)))
    if len(cleaned) <= header_rows or len(cleaned[0]) < 2:
        return None
    head, body = cleaned[:header_rows], cleaned[header_rows:]
    width = max(len(row) for row in cleaned)
    names = _column_names(head, width, spanned=spanned_headers)
    if labelled is None:
        labelled = bool(head) and all(not row[0] or _UNIT.fullmatch(row[0]) for row in head)
    if budget is None:
        budget = BUDGET_FACTOR * sum(len(cell) + 1 for row in cleaned for cell in row) + BUDGET_FLOOR
    lines: list[str] = []
    if any(len(name) > MAX_NAME_CHARS for name in names):
        lines.extend(_flat(head))  # the full names once, as the row lines cut them
    names = [_cut(name) for name in names]
    names = [name if name not in names[:i] else f"{name} ({i + 1})" for i, name in enumerate(names)]
    size = sum(len(line) + 1 for line in lines)
    group = ""
    stacked = False  # the row above was a label with no values too
    for row in body:
        label = row[0] if labelled else ""
        values = [(names[i], value) for i, value in enumerate(row) if value and (i > 0 or not labelled)]
        if not values:
            # A label with no values heads the rows below it, after the one right above it.
            group = group + LEVEL_SEPARATOR + label if stacked and group else label
            stacked = True
            continue
        stacked = False
        if group:
            label = group + LEVEL_SEPARATOR + label if label else group
        written = _row_lines(label, values, named=bool(head))
        size += sum(len(line) + 1 for line in written)
        if size > budget:
            lines = _flat(cleaned)
            break
        lines.extend(written)
    else:
        if stacked and group:  # no rows below it: a footnote ("Figures for 2019 are unaudited")
            lines.append(group if group[-1] in _SENTENCE_END else group + ".")
    return "\n".join(lines) if lines else None


def _cut(name: str) -> str:
    """A column name as the row lines repeat it: at most ``MAX_NAME_CHARS``."""
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1].rstrip() + "\u2026"


def _flat(rows: list[list[str]]) -> list[str]:
    """Rows as plain lines, their filled cells joined by `` | ``."""
    return [" | ".join(cell for cell in row if cell) for row in rows if any(row)]


def _column_names(head: list[list[str]], width: int, *, spanned: bool) -> list[str]:
    """One name per column: its header cells top to bottom, blanks and repeats made unique."""
    levels: list[list[str]] = []
    for depth, row in enumerate(head):
        cells = row + [""] * (width - len(row))
        if spanned and depth < len(head) - 1:
            below = head[depth + 1] + [""] * (width - len(head[depth + 1]))
            for i in range(1, width):
                if not cells[i] and below[i] and cells[i - 1]:
                    cells[i] = cells[i - 1]
        levels.append(cells)
    names: list[str] = []
    for i in range(width):
        parts: list[str] = []
        for cells in levels:
            if cells[i] and (not parts or parts[-1] != cells[i]):
                parts.append(cells[i])
        name = LEVEL_SEPARATOR.join(parts) or f"column {i + 1}"
        names.append(name if name not in names else f"{name} ({i + 1})")
    return names


def _row_lines(label: str, values: list[tuple[str, str]], *, named: bool) -> list[str]:
    """The row as a line (several, each with the label, when it is very long)."""
    pairs = [f"{name}: {value}" if named else value for name, value in values]
    joiner = "; " if named else " | "
    lead = label + (LABEL_SEPARATOR if named else ": ") if label else ""
    lines: list[str] = []
    current: list[str] = []
    for pair in pairs:
        if current and len(lead) + len(joiner.join([*current, pair])) > MAX_LINE_CHARS:
            lines.append(lead + joiner.join(current))
            current = []
        current.append(pair)
    lines.append(lead + joiner.join(current))
    return [line if line[-1] in _SENTENCE_END else line + "." for line in lines]
