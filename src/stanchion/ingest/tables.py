"""Delimited tables (CSV, TSV) as text that retrieval and answers can use.

A raw CSV is one long run of commas to a sentence splitter, an embedder and a reader alike: a
chunk or a quote holding ``LT-001,Rotterdam NL,Lyon FR,FTL,1480`` no longer says what 1480 is.
Each row becomes one line that names its values by column::

    lane_id: LT-001; origin: Rotterdam NL; destination: Lyon FR; mode: FTL; rate_eur: 1480.

so any row, wherever a chunk boundary falls and whichever row an answer quotes, carries its
header. Empty values are left out; a row longer than the header names its extra values
``column N``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import PurePath

__all__ = ["rows_as_text", "table_as_text", "table_delimiter"]

_BY_SUFFIX = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_BY_TYPE = {"text/csv": ",", "text/tab-separated-values": "\t", "text/tsv": "\t"}
_SENTENCE_END = ".!?"


def table_delimiter(filename: str, content_type: str = "") -> str | None:
    """The delimiter a file's name or MIME type declares, or None for anything else."""
    by_type = _BY_TYPE.get(content_type.split(";")[0].strip().lower())
    return by_type or _BY_SUFFIX.get(PurePath(filename).suffix.lower())


def table_as_text(text: str, delimiter: str) -> str | None:
    """The table's rows as ``column: value; ...`` lines, or None when ``text`` is no table
    (fewer than two columns in its first row, no data row, or not parseable as delimited text)."""
    try:
        rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text), delimiter=delimiter)]
    except csv.Error:
        return None
    return rows_as_text(rows)


def rows_as_text(rows: Sequence[Sequence[str]], *, labelled: bool = False) -> str | None:
    """Rows already split into cells (the first row the header) as ``column: value; ...`` lines.

    The parsed CSV above and tables found in other formats (PDF pages) share this. ``labelled``
    says the first column holds row labels, as in a financial statement: each line then reads
    ``label — column: value; ...``. None when there are fewer than two columns or no data row.
    """
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2 or len(rows[0]) < 2:
        return None
    header = _column_names(list(rows[0]))
    lines = []
    for row in rows[1:]:
        names = header + [f"column {i + 1}" for i in range(len(header), len(row))]
        label = " ".join(row[0].split()) if labelled else ""
        cells = zip(names[1:], row[1:], strict=False) if labelled else zip(names, row, strict=False)
        pairs = [f"{name}: {' '.join(value.split())}" for name, value in cells if value.strip()]
        if not pairs:
            continue
        line = "; ".join(pairs)
        line = f"{label} \u2014 {line}" if label else line
        lines.append(line if line[-1] in _SENTENCE_END else line + ".")
    return "\n".join(lines) if lines else None


def _column_names(first: list[str]) -> list[str]:
    """The header's cells, with blanks and repeats made unique so every value keeps a name."""
    names: list[str] = []
    for i, cell in enumerate(first):
        name = " ".join(cell.split()) or f"column {i + 1}"
        names.append(name if name not in names else f"{name} ({i + 1})")
    return names
