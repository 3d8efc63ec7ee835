"""Tables found from text positions alone (no PDF needed): what is a table and what is not."""

from __future__ import annotations

from stanchion.ingest.pdf_tables import Segment, find_tables, has_cell_gaps

HEIGHT = 9.0


def _row(y: float, *cells: tuple[float, str]) -> list[Segment]:
    """Cells of one line at baseline ``y``, each (left x, text), about 5 points per character."""
    return [Segment(x, y, x + 5 * len(text), y + HEIGHT, text) for x, text in cells if text]


def _page(*rows: list[Segment]) -> list[Segment]:
    return [seg for row in rows for seg in row]


class TestFinancialStatement:
    """Label column at the left, right-aligned year columns."""

    PAGE = _page(
        _row(800, (72, "Segment results")),
        _row(786, (72, "(in millions)"), (400, "2018"), (470, "2017")),
        _row(772, (72, "Revenue")),
        _row(758, (72, "Online stores"), (390, "122,987"), (460, "108,354")),
        _row(744, (72, "Physical stores"), (395, "17,224"), (465, "5,798")),
        _row(730, (72, "Operating expenses"), (390, "(12,421)"), (460, "(4,106)")),
    )

    def test_rows_carry_caption_years_label_and_group(self) -> None:
        """A value-less row ("Revenue") heads the rows under it; the caption gains the unit."""
        [table] = find_tables(self.PAGE)
        assert table.labelled
        assert table.text().split("\n") == [
            "Segment results (in millions)",
            "Revenue / Online stores \u2014 2018: 122,987; 2017: 108,354.",
            "Revenue / Physical stores \u2014 2018: 17,224; 2017: 5,798.",
            "Revenue / Operating expenses \u2014 2018: (12,421); 2017: (4,106).",
        ]
        assert table.top == 786 + HEIGHT and table.bottom == 730

    def test_positions_alone_flag_the_page(self) -> None:
        """The cheap pre-check needs no text."""
        assert has_cell_gaps([Segment(s.x0, s.bottom, s.x1, s.top, "") for s in self.PAGE])


class TestNotTables:
    """Layouts with gaps between pieces of text that are not tables."""

    def test_table_of_contents(self) -> None:
        """Entries with dot leaders and page numbers have no header row: no table."""
        page = _page(
            *(
                _row(800 - 14 * i, (72, f"{i}.1 Section title {i} . . . . . . . . ."), (500, str(3 * i)))
                for i in range(1, 7)
            )
        )
        assert find_tables(page) == []

    def test_two_columns_of_prose(self) -> None:
        """Two columns of running text side by side are prose."""
        left = "the harbour authority publishes tide tables every morning before"
        right = "customs officers inspect sealed containers at the bonded warehouse"
        page = _page(*(_row(800 - 14 * i, (72, left), (340, right)) for i in range(6)))
        assert find_tables(page) == []

    def test_plain_paragraph(self) -> None:
        """Lines of one run each have no cells at all."""
        page = _page(
            *(_row(800 - 14 * i, (72, "one line of a paragraph of ordinary prose")) for i in range(8))
        )
        assert not has_cell_gaps(page) and find_tables(page) == []


class TestTextTables:
    """Tables of words (no amounts) name each cell by its column."""

    def test_wrapped_cells_join_their_row(self) -> None:
        """A line whose first cell is empty continues the row above (a cell wrapped)."""
        page = _page(
            _row(800, (72, "package"), (200, "size"), (300, "description")),
            _row(786, (72, "mc"), (200, "1482"), (300, "A text-mode full-screen")),
            _row(772, (300, "file manager")),
            _row(758, (72, "sudo"), (200, "5990"), (300, "Limited root privileges")),
        )
        [table] = find_tables(page)
        assert not table.labelled
        assert table.text().split("\n") == [
            "package: mc; size: 1482; description: A text-mode full-screen file manager.",
            "package: sudo; size: 5990; description: Limited root privileges.",
        ]

    def test_words_close_together_stay_one_cell(self) -> None:
        """Runs closer than a line height (a change of font mid-cell) join into one cell."""
        page = _page(
            _row(800, (72, "Directory"), (250, "Description")),
            _row(786, (72, "bin"), (250, "Essential"), (250 + 5 * 9 + 3, "command binaries")),
            _row(772, (72, "boot"), (250, "Static files of the boot loader")),
        )
        [table] = find_tables(page)
        assert "Directory: bin; Description: Essential command binaries." in table.text()

    def test_touching_header_cells_split_by_the_columns_below(self) -> None:
        """Wide titles of a ruled table nearly touch; the body's columns still name each value."""
        page = _page(
            [
                Segment(78, 736, 115, 745, "Terminal"),
                Segment(158, 736, 262, 745, "Throughput 2017 (TEU)"),
                Segment(263, 736, 367, 745, "Throughput 2016 (TEU)"),
                Segment(368, 736, 420, 745, "Cranes"),
            ],
            _row(719, (78, "Westhaven"), (159, "1,480,000"), (264, "1,105,000"), (369, "14")),
            _row(700, (79, "Eastpier"), (158, "910,000"), (263, "874,000"), (368, "9")),
            _row(682, (79, "Northquay"), (158, "365,000"), (263, "341,000"), (368, "4")),
        )
        [table] = find_tables(page)
        assert table.text().split("\n")[0] == (
            "Westhaven \u2014 Throughput 2017 (TEU): 1,480,000; Throughput 2016 (TEU): 1,105,000; Cranes: 14."
        )

    def test_a_row_with_only_its_first_cell_is_kept(self) -> None:
        """In a table of words, a row with one filled cell is a row, not a heading to drop."""
        page = _page(
            _row(800, (72, "Directory"), (250, "Description")),
            _row(786, (72, "bin"), (250, "Essential command binaries")),
            _row(772, (72, "lost+found")),
            _row(758, (72, "boot"), (250, "Static files of the boot loader")),
        )
        [table] = find_tables(page)
        assert "Directory: lost+found." in table.text().split("\n")
