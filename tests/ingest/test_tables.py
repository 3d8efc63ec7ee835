"""Delimited tables as one self-describing line per row."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.email import load_email
from stanchion.ingest.tables import table_as_text, table_delimiter


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
