"""Rows already split into cells (PDF tables) as self-describing lines, the format CSV rows get."""

from __future__ import annotations

from stanchion.ingest.tables import rows_as_text


def test_rows_name_their_values_by_column() -> None:
    """Without labels each row reads like a CSV row: every value named by its header cell."""
    rows = [["Port", "Country", "TEU"], ["Rotterdam", "NL", "14.5"], ["Antwerp", "", "12.0"]]
    assert rows_as_text(rows) == "Port: Rotterdam; Country: NL; TEU: 14.5.\nPort: Antwerp; TEU: 12.0."


def test_labelled_rows_lead_with_their_label() -> None:
    """A financial row keeps its label in front of the year columns it belongs to; a last
    label-only row, with no rows to head, is kept as a line of its own (a footnote)."""
    rows = [
        ["(in millions)", "2018", "2017"],
        ["Purchases of property, plant and equipment", "(1,577)", "(1,440)"],
        ["Investing activities", "", ""],
    ]
    assert rows_as_text(rows, labelled=True) == (
        "Purchases of property, plant and equipment \u2014 2018: (1,577); 2017: (1,440).\n"
        "Investing activities."
    )


def test_no_table_without_two_columns_and_a_data_row() -> None:
    """A single column or a lone header is not a table."""
    assert rows_as_text([["only"], ["one"]]) is None
    assert rows_as_text([["a", "b"]]) is None
