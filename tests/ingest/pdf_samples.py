"""PDFs written with reportlab whose right text is known: the hard cases for PDF text extraction.

Used by the PDF loader's tests and by ``bench/pdf_extractors.py``:

- ``justified``: TeX-style justified lines where words are separate strings moved apart by
  kerning offsets (``[(word) -200 (word)] TJ``) with no space character, as LaTeX and Sphinx
  PDFs are set; pypdf runs such words together ("ofthepackageshouldbe").
- ``two_columns``: two columns of prose side by side; the left one must be read first.
- ``ruled_table``: a gridded table under a caption.
- ``cash_flows``: an unruled, whitespace-aligned financial statement as annual reports set them,
  with a group heading row, dot leaders and right-aligned year columns.
- ``income_statement``: a two-line header ("Year Ended December 31," over the years) and
  currency signs set apart from their amounts, as US filings print them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas
from reportlab.platypus import Table, TableStyle

rl_config.invariant = 1  # reproducible bytes

FONT = "Helvetica"

JUSTIFIED = (
    "Every source package must include the changelog file, which explains changes in the version "
    "of the package briefly. This includes modifications made in the package compared to the "
    "upstream one as well as other changes and updates to the package. The archive uses a "
    "mechanism called pinning so that provisions applicable to stable releases keep business "
    "opportunities open for every maintainer who uploads security fixes through the proposed "
    "updates queue after review by the release team."
)
LEFT_COLUMN = (
    "Left column first. The harbour authority publishes tide tables every morning before the "
    "pilots board the inbound vessels, and the berth planners read them to assign quays."
)
RIGHT_COLUMN = (
    "Right column second. Customs officers inspect sealed containers at the bonded warehouse "
    "and release them once the manifest matches the declared cargo and duties are paid."
)
RULED_CAPTION = "Table 3: Container terminals by annual throughput"
RULED_ROWS = [
    ["Terminal", "Operator", "Throughput (TEU)", "Cranes"],
    ["Maasvlakte II", "APM Terminals", "2,700,000", "14"],
    ["Euromax", "Hutchison Ports", "2,300,000", "12"],
    ["Amazonehaven", "ECT Delta", "1,900,000", "11"],
]
CASH_TITLE = "Consolidated Statements of Cash Flows"
CASH_ROWS = [
    # label, 2018, 2017; a row without values is a group heading
    ("Cash flows from investing activities:", "", ""),
    ("Purchases of property, plant and equipment", "(1,577)", "(1,440)"),
    ("Acquisitions, net of cash acquired", "(3,230)", "(324)"),
    ("Proceeds from sale of investments", "1,034", "892"),
    ("Net cash used in investing activities", "(3,773)", "(872)"),
]


def _tj_line(pdf: canvas.Canvas, x: float, y: float, words: list[str], gap: int, size: float) -> None:
    """One line as a TJ array: the words as separate strings, ``gap`` thousandths of an em apart."""
    text = pdf.beginText(x, y)
    text.setFont(FONT, size)
    pdf.drawText(text)
    escaped = [w.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for w in words]
    pdf._code.append(
        f"BT /F1 {size} Tf 1 0 0 1 {x} {y} Tm [" + f" -{gap} ".join(f"({w})" for w in escaped) + "] TJ ET"
    )


def justified(path: Path, *, gap: int = 200, size: float = 10) -> Path:
    """``JUSTIFIED`` set in lines of at most 70 characters, word gaps made by kerning only."""
    pdf = canvas.Canvas(str(path), pagesize=A4)
    y = 780.0
    for line in textwrap.wrap(JUSTIFIED, 70):
        _tj_line(pdf, 72, y, line.split(), gap, size)
        y -= size * 1.4
    pdf.showPage()
    pdf.save()
    return path


def two_columns(path: Path, *, size: float = 10) -> Path:
    """``LEFT_COLUMN`` at the left, ``RIGHT_COLUMN`` beside it at the same heights."""
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setFont(FONT, size)
    for x, body in ((72.0, LEFT_COLUMN), (320.0, RIGHT_COLUMN)):
        y = 760.0
        for line in textwrap.wrap(body, 40):
            pdf.drawString(x, y, line)
            y -= size * 1.4
    pdf.showPage()
    pdf.save()
    return path


def ruled_table(path: Path) -> Path:
    """A sentence, ``RULED_CAPTION`` and a gridded table of ``RULED_ROWS``."""
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setFont(FONT, 10)
    pdf.drawString(72, 790, "The port's terminals differ in size; the largest are listed below.")
    pdf.setFont("Helvetica-Bold", 11)
    pdf.drawString(72, 760, RULED_CAPTION)
    table = Table(RULED_ROWS, colWidths=[110, 120, 110, 60])
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("FONTSIZE", (0, 0), (-1, -1), 10),
            ]
        )
    )
    _, height = table.wrapOn(pdf, 400, 400)
    table.drawOn(pdf, 72, 750 - height)
    pdf.drawString(72, 720 - height, "Throughput counts twenty-foot equivalent units handled in the year.")
    pdf.showPage()
    pdf.save()
    return path


def cash_flows(path: Path, *, leaders: bool = True) -> Path:
    """``CASH_TITLE`` over an unruled statement: labels at the left, 2018 and 2017 right-aligned."""
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setFont(FONT, 10)
    pdf.drawString(72, 800, "The notes on pages 60 to 92 are an integral part of these statements.")
    pdf.setFont("Helvetica-Bold", 12)
    pdf.drawString(72, 770, CASH_TITLE)
    pdf.setFont(FONT, 9)
    pdf.drawString(72, 750, "(in millions)")
    right = (440.0, 520.0)
    pdf.setFont("Helvetica-Bold", 9)
    for x, year in zip(right, ("2018", "2017"), strict=True):
        pdf.drawRightString(x, 750, year)
    pdf.setFont(FONT, 9)
    y = 732.0
    for label, *values in CASH_ROWS:
        shown = label
        if leaders and values[0]:
            width = stringWidth(label, FONT, 9)
            dots = int((370 - 72 - width) / stringWidth(" .", FONT, 9))
            shown = label + " ." * max(dots, 0)
        pdf.drawString(72, y, shown)
        for x, value in zip(right, values, strict=True):
            if value:
                pdf.drawRightString(x, y, value)
        y -= 14
    pdf.drawString(72, y - 20, "Capital expenditure rose as the group expanded its fulfilment network.")
    pdf.showPage()
    pdf.save()
    return path


INCOME_TITLE = "Consolidated Statements of Operations"
INCOME_ROWS = [
    ("Net sales", "$", "232,887", "$", "177,866"),
    ("Operating income", "", "12,421", "", "4,106"),
    ("Net income", "$", "10,073", "$", "3,033"),
    ("Diluted earnings per share", "$", "20.14", "$", "6.15"),
]


def income_statement(path: Path) -> Path:
    """``INCOME_TITLE``, "Year Ended December 31," over 2018 and 2017, "$" apart from the amounts."""
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setFont("Helvetica-Bold", 12)
    pdf.drawString(72, 790, INCOME_TITLE)
    pdf.setFont(FONT, 9)
    pdf.drawCentredString(470, 770, "Year Ended December 31,")
    pdf.drawString(72, 756, "(in millions, except per share data)")
    right = (440.0, 520.0)
    for x, year in zip(right, ("2018", "2017"), strict=True):
        pdf.drawRightString(x, 756, year)
    y = 740.0
    for label, sign_a, a, sign_b, b in INCOME_ROWS:
        pdf.drawString(72, y, label)
        for x, sign, value in ((right[0], sign_a, a), (right[1], sign_b, b)):
            if sign:
                pdf.drawString(x - 60, y, sign)
            pdf.drawRightString(x, y, value)
        y -= 14
    pdf.showPage()
    pdf.save()
    return path
