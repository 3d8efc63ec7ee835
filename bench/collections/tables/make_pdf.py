"""Write docs/harbourline-annual-report-2017.pdf, the PDF document of the table collection.

An annual report as reportlab sets one: a page of prose, an unruled cash flow statement (labels
at the left with dot leaders, year columns right-aligned, group heading rows) and a ruled table
under a caption. The bytes are reproducible (``rl_config.invariant``), so the committed file is
what this script writes::

    python bench/collections/tables/make_pdf.py
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas
from reportlab.platypus import Table, TableStyle

rl_config.invariant = 1

FONT = "Helvetica"
BOLD = "Helvetica-Bold"
OUT = Path(__file__).parent / "docs" / "harbourline-annual-report-2017.pdf"

TITLE = "Harbourline Terminals N.V. - Annual Report 2017"
LETTER = [
    "Dear shareholders, 2017 was the year our Westhaven expansion came into service. Volumes at our "
    "three container terminals grew faster than the market, helped by two new weekly services from "
    "Asia and by the recovery of feeder traffic to the Baltic.",
    "We kept our capital expenditure programme on track. Most of it went to the new quay wall and "
    "the automated stacking cranes at Westhaven, and to the replacement of straddle carriers at "
    "Eastpier. The programme will be lower in the coming two years now that the expansion is built.",
    "The board proposes to raise the dividend in line with our policy of paying out about half of "
    "net profit. We refinanced part of our bank debt at lower interest rates and kept leverage "
    "within the range our lenders set.",
    "Our people worked more than two million hours without a lost-time injury at Northquay, a record "
    "for the group. I thank them, our customers and the port authority for a good year.",
]
CASH_TITLE = "Consolidated statement of cash flows"
CASH_UNIT = "(in EUR thousands)"
CASH_YEARS = ("2017", "2016")
CASH_ROWS = [
    ("Cash flows from operating activities", "", ""),
    ("Profit for the year", "41,870", "36,020"),
    ("Depreciation and amortisation", "29,340", "27,115"),
    ("Net cash from operating activities", "68,920", "60,455"),
    ("Cash flows from investing activities", "", ""),
    ("Purchases of property, plant and equipment", "(63,480)", "(48,210)"),
    ("Proceeds from sale of straddle carriers", "2,150", "940"),
    ("Net cash used in investing activities", "(61,330)", "(47,270)"),
    ("Cash flows from financing activities", "", ""),
    ("Dividends paid", "(18,600)", "(15,900)"),
    ("Repayment of bank loans", "(22,000)", "(9,500)"),
    ("Net cash used in financing activities", "(40,600)", "(25,400)"),
]
TERMINAL_CAPTION = "Table 4: Container terminals"
TERMINAL_ROWS = [
    ["Terminal", "Throughput 2017 (TEU)", "Throughput 2016 (TEU)", "Quay cranes", "Berth length (m)"],
    ["Westhaven", "1,480,000", "1,105,000", "14", "1,600"],
    ["Eastpier", "910,000", "874,000", "9", "1,150"],
    ["Northquay", "365,000", "341,000", "4", "620"],
]


def _paragraphs(pdf: canvas.Canvas, y: float, paragraphs: list[str], size: float = 10) -> float:
    pdf.setFont(FONT, size)
    for paragraph in paragraphs:
        for line in textwrap.wrap(paragraph, 88):
            pdf.drawString(72, y, line)
            y -= size * 1.4
        y -= size
    return y


def write(path: Path = OUT) -> Path:
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    pdf.setTitle(TITLE)
    # Page 1: the chair's letter, prose only.
    pdf.setFont(BOLD, 14)
    pdf.drawString(72, 790, TITLE)
    pdf.setFont(BOLD, 12)
    pdf.drawString(72, 760, "Letter from the chair")
    _paragraphs(pdf, 738, LETTER)
    pdf.showPage()
    # Page 2: an unruled statement, labels with dot leaders, years right-aligned.
    pdf.setFont(FONT, 10)
    pdf.drawString(72, 800, "The notes on pages 40 to 71 are an integral part of these statements.")
    pdf.setFont(BOLD, 12)
    pdf.drawString(72, 770, CASH_TITLE)
    pdf.setFont(FONT, 9)
    pdf.drawString(72, 750, CASH_UNIT)
    right = (440.0, 520.0)
    pdf.setFont(BOLD, 9)
    for x, year in zip(right, CASH_YEARS, strict=True):
        pdf.drawRightString(x, 750, year)
    y = 732.0
    for label, *values in CASH_ROWS:
        pdf.setFont(FONT if values[0] else BOLD, 9)
        shown = label
        if values[0]:
            dots = int((370 - 72 - stringWidth(label, FONT, 9)) / stringWidth(" .", FONT, 9))
            shown = label + " ." * max(dots, 0)
        pdf.drawString(72, y, shown)
        for x, value in zip(right, values, strict=True):
            if value:
                pdf.drawRightString(x, y, value)
        y -= 14
    _paragraphs(
        pdf, y - 20, ["Capital expenditure peaked in 2017 with the completion of the Westhaven quay."], 9
    )
    pdf.showPage()
    # Page 3: a ruled table under its caption.
    pdf.setFont(FONT, 10)
    pdf.drawString(
        72, 790, "Each terminal is run by its own operating company under a concession from the port."
    )
    pdf.setFont(BOLD, 11)
    pdf.drawString(72, 760, TERMINAL_CAPTION)
    table = Table(TERMINAL_ROWS, colWidths=[80, 105, 105, 65, 85])
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                ("FONTNAME", (0, 0), (-1, 0), BOLD),
                ("FONTSIZE", (0, 0), (-1, -1), 9),
            ]
        )
    )
    _, height = table.wrapOn(pdf, 460, 400)
    table.drawOn(pdf, 72, 750 - height)
    pdf.drawString(72, 720 - height, "Throughput counts twenty-foot equivalent units handled in the year.")
    pdf.showPage()
    pdf.save()
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
