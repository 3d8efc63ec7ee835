"""Delimited tables as one self-describing line per row."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from stanchion.ingest.chunk import ChunkingOptions, chunk_document
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.email import load_email
from stanchion.ingest.loaders.html import load_html
from stanchion.ingest.tables import (
    BUDGET_FACTOR,
    BUDGET_FLOOR,
    MAX_LINE_CHARS,
    MAX_NAME_CHARS,
    MAX_ROW_LINE_CHARS,
    is_row_line,
    rows_as_text,
    table_as_text,
    table_delimiter,
)
from stanchion.ingest.tokens import tokenizer_for
from stanchion.types import Document


def test_each_row_names_its_values_by_column() -> None:
    text = 'lane,origin,rate_eur\r\nLT-001,Rotterdam NL,1480\r\nLT-002,"Milano, IT",1920\r\n'
    assert table_as_text(text, ",") == (
        "lane: LT-001; origin: Rotterdam NL; rate_eur: 1480.\nlane: LT-002; origin: Milano, IT; rate_eur: 1920."
    )


def test_blank_values_rows_and_header_cells_are_handled() -> None:
    text = "name\t\tname\nAda\tengineer\tLovelace\n\t\t\nBob\t\t\tlate value!\n"
    assert table_as_text(text, "\t").split("\n") == [
        "name: Ada; column 2: engineer; name (3): Lovelace.",
        "name: Bob; column 4: late value!",  # its own end mark kept, no period added
    ]


def test_a_multi_line_cell_becomes_one_line() -> None:
    assert (
        table_as_text('topic,note\nrefunds,"paid in\n  five days"\n', ",")
        == "topic: refunds; note: paid in five days."
    )


def test_a_blank_corner_makes_the_first_column_row_labels() -> None:
    """A CSV exported with its index column (blank corner) reads as labelled rows."""
    assert table_as_text(",2018,2017\nRevenue,100,90\n", ",") == "Revenue \u2014 2018: 100; 2017: 90."


class TestRowsAsText:
    """Rows already split into cells (HTML, PDF): header levels, labels, groups, wide rows."""

    def test_header_levels_join_per_column(self) -> None:
        """A PDF loses colspans: a blank upper header cell continues the one to its left."""
        rows = [["", "2018", "", "2017", ""], ["", "Q1", "Q2", "Q1", "Q2"], ["Sales", "10", "11", "8", "9"]]
        assert rows_as_text(rows, header_rows=2) == (
            "Sales \u2014 2018 / Q1: 10; 2018 / Q2: 11; 2017 / Q1: 8; 2017 / Q2: 9."
        )

    def test_expanded_spans_are_not_filled_again(self) -> None:
        """With spans already expanded (HTML), a blank upper cell stays blank."""
        rows = [
            ["Item", "Revenue", "Revenue", ""],
            ["Item", "2018", "2017", "Notes"],
            ["Tea", "5", "4", "new"],
        ]
        assert rows_as_text(rows, header_rows=2, spanned_headers=False) == (
            "Item: Tea; Revenue / 2018: 5; Revenue / 2017: 4; Notes: new."
        )

    def test_a_group_row_prefixes_the_labels_below_it(self) -> None:
        """Sub-heading rows of a statement (a label, no values) name the rows that follow."""
        rows = [
            ["", "2018"],
            ["Investing activities", ""],
            ["Purchases of property, plant and equipment", "(1,577)"],
            ["Financing activities", ""],
            ["Dividends paid", "(4,000)"],
        ]
        assert rows_as_text(rows) == (
            "Investing activities / Purchases of property, plant and equipment \u2014 2018: (1,577).\n"
            "Financing activities / Dividends paid \u2014 2018: (4,000)."
        )

    def test_stacked_group_rows_are_joined_and_a_last_one_is_kept(self) -> None:
        """Two group rows in a row both name the rows below; a label-only row at the end (a
        footnote) has no rows to head and is kept as a line of its own, in CSV as in HTML/PDF."""
        rows = [
            ["", "2019"],
            ["Assets", ""],
            ["Current assets", ""],
            ["Cash", "10"],
            ["Non-current assets", ""],
            ["Goodwill", "5"],
            ["Figures for 2019 are unaudited", ""],
        ]
        assert rows_as_text(rows) == (
            "Assets / Current assets / Cash \u2014 2019: 10.\n"
            "Non-current assets / Goodwill \u2014 2019: 5.\n"
            "Figures for 2019 are unaudited."
        )
        assert (
            table_as_text(",2019\nRevenue,10\nUnaudited.,\n", ",") == "Revenue \u2014 2019: 10.\nUnaudited."
        )

    def test_a_long_column_name_is_cut_in_the_rows_and_given_once_in_full(self) -> None:
        """A sentence in a header cell is not repeated in every row: cut there, whole above them."""
        long = " ".join(f"word{i}" for i in range(100))
        lines = str(rows_as_text([[long, "b"], ["1", "2"], ["3", "4"]])).split("\n")
        assert lines[0] == f"{long} | b"
        cut = long[: MAX_NAME_CHARS - 1].rstrip() + "\u2026"
        assert lines[1:] == [f"{cut}: 1; b: 2.", f"{cut}: 3; b: 4."]

    def test_past_the_budget_rows_are_written_flat(self) -> None:
        """Lines that would exceed the budget (names repeated over many rows) give way to the
        cells of each row joined by bars: every value kept, the text no longer than the table."""
        rows = [["name", "value"], *([f"n{i}", f"v{i}"] for i in range(5))]
        assert rows_as_text(rows, budget=40) == "name | value\nn0 | v0\nn1 | v1\nn2 | v2\nn3 | v3\nn4 | v4"
        assert rows_as_text(rows, budget=1000) == "\n".join(f"name: n{i}; value: v{i}." for i in range(5))
        # By default the budget is BUDGET_FACTOR times the cells' text: ten 80-character names over
        # 3,000 rows of one-digit values would be ~42 times the table.
        head = [f"{'measured quantity number ' * 3}{i}"[:MAX_NAME_CHARS] for i in range(10)]
        table = [head, *(["1"] * 10 for _ in range(3000))]
        own = sum(len(cell) + 1 for row in table for cell in row)
        text = str(rows_as_text(table))
        assert BUDGET_FACTOR * own + BUDGET_FLOOR < len(str(rows_as_text(table[:2]))) * 3000
        assert len(text) < 2 * own and text.split("\n")[1] == " | ".join(["1"] * 10)

    def test_a_line_too_long_to_keep_whole_is_no_row(self) -> None:
        """A chunker tests lines around every cut: past MAX_ROW_LINE_CHARS a line is prose."""
        assert is_row_line("a: 1; b: 2.")
        assert not is_row_line("a: 1; b: " + "x" * MAX_ROW_LINE_CHARS)

    def test_a_very_wide_row_is_cut_into_lines_that_keep_its_label(self) -> None:
        """Every piece of a row too long for one chunk still says which row it is."""
        header = ["", *(f"month {i}" for i in range(60))]
        lines = str(rows_as_text([header, ["Widgets", *(str(1000 + i) for i in range(60))]])).split("\n")
        assert len(lines) > 1
        assert all(
            line.startswith("Widgets \u2014 month ") and len(line) <= MAX_LINE_CHARS + 20 for line in lines
        )
        assert "month 59: 1059." in lines[-1]

    def test_without_a_header_values_are_joined_by_bars(self) -> None:
        """No header row: the cells as they are, after the label when there is one."""
        assert rows_as_text([["a", "b"], ["c", "d"]], header_rows=0) == "a | b.\nc | d."
        assert rows_as_text([["Owner", "Alice"]], header_rows=0, labelled=True) == "Owner: Alice."


@pytest.mark.parametrize("text", ["just one line, of prose", "a,b\n", "", "single\ncolumn\n", '"a,b\nc,d'])
def test_what_is_no_table_is_refused(text: str) -> None:
    assert table_as_text(text, ",") is None


@pytest.mark.parametrize(
    ("filename", "content_type", "expected"),
    [
        ("rates.csv", "text/plain", ","),
        ("RATES.TSV", "", "\t"),
        ("export", "text/csv; charset=utf-8", ","),
        ("notes.txt", "text/plain", None),
    ],
)
def test_the_delimiter_comes_from_the_name_or_the_type(
    filename: str, content_type: str, expected: str | None
) -> None:
    assert table_delimiter(filename, content_type) == expected


def test_a_mailed_csv_attachment_is_indexed_row_by_row() -> None:
    mail = resources.files("stanchion") / "sample" / "mail" / "carrier-rate-update.eml"
    (doc,) = load_email(Path(str(mail)), LoadContext(source="mail", relpath="carrier-rate-update.eml"))
    (table,) = [s for s in doc.sections if s.metadata.get("attachment") == "lumiere-rates-2026.csv"]
    rows = table.text.split("\n")
    assert len(rows) == 6
    assert rows[0] == (
        "lane_id: LT-001; origin: Rotterdam NL; destination: Lyon FR; mode: FTL; rate_eur: 1480; "
        "previous_rate_eur: 1395; change_pct: 6.1; transit_days: 2; effective_from: 2026-02-01."
    )


class TestTableChunks:
    """A long table chunks by rows: every line of every chunk is a whole row with its names."""

    def test_every_chunk_line_is_a_whole_row(self) -> None:
        """With the default overlap no chunk starts with the tail of a row."""
        years = [str(y) for y in range(2019, 2014, -1)]
        rows = [["(EUR millions)", *years]]
        rows += [
            [f"Line item number {i} of the statement", *(f"({i * 7 + j:,})" for j in range(5))]
            for i in range(60)
        ]
        text = str(rows_as_text(rows))
        tok = tokenizer_for("all-MiniLM-L6-v2")
        chunks = chunk_document(Document(id="d", text=text), ChunkingOptions(size=128, overlap=32), tok)
        assert len(chunks) > 5
        lines = text.split("\n")
        for chunk in chunks:
            assert tok.count(chunk.text) <= 128
            for line in chunk.text.split("\n"):
                assert line in lines and is_row_line(line)
                assert line.startswith("Line item number ") and "2019: " in line

    def test_semantic_cuts_fall_between_rows(self) -> None:
        """Sentences inside a row ("Answer: Yes. This allows ...") are never cut apart."""
        rows = [["Question", "Answer"]]
        rows += [
            [f"Setting {i} of the directory?", f"Yes. This allows the usual command {i}. Then more."]
            for i in range(8)
        ]
        text = str(rows_as_text(rows))
        rng = np.random.default_rng(0)

        def embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
            vectors = rng.normal(size=(len(texts), 8)).astype(np.float32)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        options = ChunkingOptions(
            strategy="semantic", size=128, overlap=16, min_size=0, semantic_threshold=0.99
        )
        chunks = chunk_document(
            Document(id="d", text=text), options, tokenizer_for("all-MiniLM-L6-v2"), embed
        )
        assert len(chunks) == 8  # every row is its own topic here, and stays whole
        assert [c.text for c in chunks] == text.split("\n")

    def test_prose_keeps_its_overlap(self) -> None:
        """Text that is no table keeps the overlap: each chunk starts inside the one before."""
        text = " ".join(f"Sentence number {i} talks about retrieval and ranking." for i in range(60))
        tok = tokenizer_for("all-MiniLM-L6-v2")
        chunks = chunk_document(Document(id="d", text=text), ChunkingOptions(size=64, overlap=16), tok)
        assert len(chunks) > 3
        for before, after in itertools.pairwise(chunks):
            assert text.find(after.text) < text.find(before.text) + len(before.text)


def test_the_readme_example_is_what_the_html_loader_writes(tmp_path: Path) -> None:
    """The README's table example (Sources and cleaning, Tables) is the loader's real output."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Tables.**") :]
    html = section[section.index("```html\n") + 8 : section.index("```\n", section.index("```html"))]
    after = section[section.index("```text\n") + 8 :]
    expected = after[: after.index("```")].strip()
    page = tmp_path / "example.html"
    page.write_text(f"<html><body><h1>Cash flows</h1>{html}</body></html>", encoding="utf-8")
    (doc,) = load_html(page, LoadContext(source="wiki", relpath="example.html"))
    assert doc.sections[0].text == expected
