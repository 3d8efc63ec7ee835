"""Write the sample corpus's PDF: src/stanchion/sample/policies/employee-handbook.pdf.

A fictional "Kestrel Freight Employee Handbook (excerpt)", five pages, with a running header and a
"Page N of M" footer on every page: the boilerplate the PDF cleaner has to strip.

    python bench/make_sample_pdf.py [--out PATH]

Needs reportlab (in the ``dev`` extra). The output is byte-for-byte reproducible: reportlab's
invariant mode fixes the creation date and document id, so rerunning it changes nothing in git.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import LETTER
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import inch
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    ListFlowable,
    ListItem,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

rl_config.invariant = 1  # fixed creation date and document id: reruns give identical bytes

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "stanchion" / "sample" / "policies" / "employee-handbook.pdf"

HEADER = "Kestrel Freight \u2014 Employee Handbook \u2014 Confidential"
TITLE = "Kestrel Freight Employee Handbook (excerpt)"

_base = getSampleStyleSheet()
STYLES = {
    "title": ParagraphStyle(
        "KFTitle", parent=_base["Title"], fontName="Helvetica-Bold", fontSize=20, leading=24
    ),
    "subtitle": ParagraphStyle(
        "KFSub",
        parent=_base["Normal"],
        alignment=TA_CENTER,
        fontSize=10,
        leading=14,
        textColor=colors.HexColor("#555555"),
    ),
    "h1": ParagraphStyle(
        "KFH1",
        parent=_base["Heading1"],
        fontName="Helvetica-Bold",
        fontSize=15,
        leading=19,
        spaceBefore=10,
        spaceAfter=6,
        textColor=colors.HexColor("#1F3A5F"),
        keepWithNext=1,
    ),
    "h2": ParagraphStyle(
        "KFH2",
        parent=_base["Heading2"],
        fontName="Helvetica-Bold",
        fontSize=11.5,
        leading=15,
        keepWithNext=1,
        spaceBefore=8,
        spaceAfter=4,
    ),
    "body": ParagraphStyle(
        "KFBody", parent=_base["BodyText"], fontName="Helvetica", fontSize=10, leading=14, spaceAfter=6
    ),
    "cell": ParagraphStyle(
        "KFCell", parent=_base["BodyText"], fontName="Helvetica", fontSize=9, leading=11.5
    ),
    "cellb": ParagraphStyle(
        "KFCellB", parent=_base["BodyText"], fontName="Helvetica-Bold", fontSize=9, leading=11.5
    ),
}


def p(text: str, style: str = "body") -> Paragraph:
    return Paragraph(text, STYLES[style])


def bullets(items: list[str]) -> ListFlowable:
    return ListFlowable(
        [ListItem(p(t), leftIndent=12) for t in items],
        bulletType="bullet",
        start="\u2022",
        leftIndent=14,
        bulletFontSize=8,
    )


def table(rows: list[list[str]], widths: list[float]) -> Table:
    data = [[p(c, "cellb" if i == 0 else "cell") for c in row] for i, row in enumerate(rows)]
    t = Table(data, colWidths=[w * inch for w in widths], repeatRows=1)
    t.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#DCE6F0")),
                ("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#8899AA")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 3),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
            ]
        )
    )
    return t


def story() -> list[Flowable]:
    s: list[Flowable] = [
        p(TITLE, "title"),
        p(
            "Version 2026.1 | Effective January 1, 2026 | Owner: People Team (Grace Whitfield, Chief "
            "People Officer)",
            "subtitle",
        ),
        Spacer(1, 14),
        p("1. About this handbook", "h1"),
        p(
            "This excerpt contains the sections of the Kestrel Freight Employee Handbook that employees "
            "ask about most: "
            "time off and leave, expenses, the code of conduct and remote work. It applies to all "
            "employees of Kestrel "
            "Freight, Inc. in the United States. Employees of Kestrel Freight B.V. in Rotterdam receive a "
            "Dutch supplement; "
            "where Dutch law gives more, Dutch law applies."
        ),
        p(
            "If this handbook and a team page on the wiki disagree, this handbook wins. Policies change; "
            "the People Team "
            "announces every change by email to all-staff and publishes a new version of the handbook "
            "within 30 days. "
            "Questions go to #hr-questions on Slack or to your HR Business Partner (Nadia Haddad for "
            "Engineering, Finance "
            "and Operations)."
        ),
        p("2. Time off and leave", "h1"),
        p("2.1 Paid time off (PTO)", "h2"),
        p(
            "Every full-time employee receives <b>25 days of paid time off</b> per calendar year, accrued "
            "monthly "
            "(about 2.08 days per month). Part-time employees accrue pro rata. Request PTO in PeopleHub at "
            "least two weeks "
            "in advance for absences of three days or more."
        ),
        p(
            "Up to <b>5 unused PTO days carry over</b> into the next calendar year and must be used by "
            "<b>March 31</b>; "
            "carried-over days not used by then expire. Days above the carry-over limit are forfeited on "
            "December 31. "
            "Unused PTO is paid out when you leave the company, as required by state law."
        ),
        p("2.2 Public holidays", "h2"),
        p(
            "US employees have 10 paid company holidays per year, published in PeopleHub each November. "
            "Hub staff who work "
            "on a company holiday receive holiday pay at 1.5 times their normal rate plus a replacement "
            "day off."
        ),
        p("2.3 Sick leave", "h2"),
        p(
            "You have <b>10 paid sick days</b> per year, separate from PTO, for your own illness or to "
            "care for a family "
            "member. A doctor's note is needed only after three consecutive sick days."
        ),
        p("2.4 Parental leave", "h2"),
        p(
            "From January 1, 2026, every parent \u2014 birth, adoptive or foster, regardless of gender "
            "\u2014 receives "
            "<b>16 weeks (80 working days) of fully paid parental leave</b>. This replaces the previous "
            "policy of 10 weeks. "
            "The details:"
        ),
        bullets(
            [
                "You are eligible after 90 days of employment.",
                "The leave can be taken in up to three blocks within 12 months of the child's birth or "
                "placement.",
                "Birthing parents may also take up to 2 weeks of paid pre-natal leave before the due date. "
                "Pre-natal leave "
                "does not reduce the 16 weeks.",
                "Employees who were still on parental leave on January 1, 2026 were topped up to 16 weeks "
                "in total.",
                "Tell your manager and submit the request in PeopleHub at least 8 weeks before the leave "
                "starts, where "
                "possible.",
                "After parental leave you may work 80% of your hours at full pay for the first four weeks "
                "back "
                "(phased return). You return to the same role or an equivalent one.",
            ]
        ),
        p("2.5 Other leave", "h2"),
        table(
            [
                ["Leave type", "Entitlement", "Paid", "How to request"],
                [
                    "Paid time off",
                    "25 days per year; up to 5 days carry over (use by March 31)",
                    "Yes",
                    "PeopleHub, 2 weeks ahead",
                ],
                ["Sick leave", "10 days per year", "Yes", "Tell your manager the same day"],
                [
                    "Parental leave",
                    "16 weeks (80 working days), up to 3 blocks within 12 months",
                    "Yes, 100%",
                    "PeopleHub, 8 weeks ahead",
                ],
                [
                    "Bereavement",
                    "5 days (immediate family), 2 days (extended family)",
                    "Yes",
                    "Tell your manager",
                ],
                ["Jury duty", "As required by the court", "Yes, up to 20 days", "Send the summons to HR"],
                ["Volunteering", "2 days per year", "Yes", "PeopleHub"],
            ],
            [1.25, 2.55, 1.0, 1.7],
        ),
        p("3. Expenses and approvals", "h1"),
        p(
            "The full rules are in the Expense Policy on the People &amp; Finance wiki (owner: Owen Park, "
            "Finance Operations "
            "Manager). In short: submit every expense in <b>Ledgerline</b> within <b>30 days</b>, attach "
            "an itemised receipt "
            "for anything over <b>$25</b>, and expect reimbursement within 10 business days with the next "
            "payroll run."
        ),
        p("3.1 Approval limits", "h2"),
        p(
            "Approval depends on the total amount of a single expense or purchase, including tax and "
            "shipping. Each level "
            "includes the ones below it."
        ),
        table(
            [
                ["Amount", "Approver"],
                ["Up to $500", "Your direct manager"],
                ["$500.01 to $5,000", "Your department director"],
                ["Above $5,000 up to $25,000", "The Chief Financial Officer (Priya Raman)"],
                ["Above $25,000", "The CFO and the Chief Executive Officer (Daniel Okafor), jointly"],
            ],
            [2.2, 4.3],
        ),
        Spacer(1, 6),
        p(
            "Splitting one purchase into several smaller expenses to stay under a limit is not allowed; "
            "split purchases "
            "are rejected and reported to the CFO. Software and subscriptions are always bought through IT "
            "procurement, "
            "whatever the amount."
        ),
        p("3.2 Corporate cards", "h2"),
        p(
            "Corporate cards are issued to directors and above and to employees who travel more than four "
            "times a year. "
            "The standard limit is $10,000 per month. Card spending follows the same approval limits and "
            "receipt rules."
        ),
        p("3.3 Travel", "h2"),
        p(
            "Book travel through TripDesk at least 14 days before departure. Hotel limits are $225 per "
            "night in the US "
            "($300 in New York City and San Francisco) and EUR 180 in Europe; the meal per diem is $75 per "
            "day in the US "
            "and EUR 65 in Europe. See the Travel Policy for flights, ground transport and exceptions."
        ),
        p("4. Code of conduct", "h1"),
        p(
            "We move other people's goods, and our customers trust us with their business. Everyone at "
            "Kestrel Freight "
            "\u2014 employees, contractors and temporary hub staff \u2014 is expected to act honestly, "
            "safely and "
            "respectfully."
        ),
        p("4.1 Respect and safety", "h2"),
        bullets(
            [
                "Harassment, discrimination and bullying are not tolerated, in person, in Slack or "
                "anywhere else.",
                "Safety comes before speed. On a hub floor or in a yard, wear a hi-vis vest and safety "
                "shoes, and never "
                "walk in a marked forklift lane.",
                "Do not work under the influence of alcohol or drugs. Do not drive a company vehicle after "
                "drinking any "
                "alcohol.",
            ]
        ),
        p("4.2 Gifts and conflicts of interest", "h2"),
        p(
            "You may accept gifts or hospitality from carriers, vendors or customers worth up to <b>$100 "
            "per year</b> "
            "from any one company. Anything worth more must be politely declined or reported to Legal, who "
            "decides "
            "whether it can be kept. Never accept cash or gift cards."
        ),
        p(
            "Disclose any possible conflict of interest \u2014 for example a family member working for a "
            "carrier we "
            "use \u2014 in PeopleHub when it arises and in the annual disclosure, due every year by "
            "<b>March 31</b>."
        ),
        p("4.3 Speaking up", "h2"),
        p(
            "If you see something that breaks this code or the law, tell your manager, your HR Business "
            "Partner or Legal. "
            "You can also report anonymously to the ethics hotline at 1-800-555-0199 or "
            "ethics@kestrelfreight.com, "
            "which is run by an independent provider. Kestrel Freight does not tolerate retaliation "
            "against anyone who "
            "raises a concern in good faith."
        ),
        PageBreak(),
        p("5. Remote and hybrid work", "h1"),
        p(
            "Kestrel Freight is a hybrid company. Hub and yard roles are on site. Office roles are hybrid "
            "unless the role "
            "was approved as fully remote."
        ),
        p("5.1 Anchor days", "h2"),
        p(
            "Office-assigned employees work from their office on two anchor days a week, <b>Tuesday and "
            "Thursday</b>. "
            "Teams may agree extra office days, but not fewer. Core collaboration hours are 10:00 to 15:00 "
            "local time "
            "on every working day, wherever you work."
        ),
        p("5.2 Fully remote roles", "h2"),
        p(
            "A role can be fully remote when the department director and the People Team both approve it. "
            "Fully remote "
            "employees travel to their team's office at least once per quarter; the trip is a business "
            "expense."
        ),
        p("5.3 Home office", "h2"),
        p(
            "Hybrid and remote employees can claim a <b>$600 one-time home office stipend</b> for "
            "equipment and "
            "<b>$50 per month</b> towards internet costs, both in Ledgerline under \u201cHome "
            "office\u201d. Equipment "
            "bought with the stipend is yours to keep; company laptops remain company property."
        ),
        p("5.4 Working from another country", "h2"),
        KeepTogether(
            [
                p(
                    "You may work from another country for up to <b>20 working days per year</b>, with "
                    "your manager's approval "
                    "and a notice to the People Team at least two weeks in advance, so that tax and "
                    "immigration rules can be "
                    "checked. Always use the company VPN outside the office, and never work with "
                    "Restricted data (customer "
                    "personal data, payment data) from a public network."
                ),
            ]
        ),
        p("6. Acknowledgement", "h1"),
        p(
            "By continuing your employment after January 1, 2026 you acknowledge this version of the "
            "handbook. The "
            "complete handbook, including sections on payroll, benefits, performance reviews and leaving "
            "the company, "
            "is available in PeopleHub."
        ),
    ]
    return s


def build(out: Path) -> int:
    """Build the PDF twice: the first pass counts pages so the footer can say "Page N of M"."""
    out.parent.mkdir(parents=True, exist_ok=True)
    total = {"pages": 0, "seen": 0}

    def decorate(canvas: Any, doc: Any) -> None:
        page = canvas.getPageNumber()
        total["seen"] = page
        width, height = LETTER
        canvas.saveState()
        canvas.setFont("Helvetica", 8.5)
        canvas.setFillColor(colors.HexColor("#555555"))
        canvas.drawCentredString(width / 2, height - 0.5 * inch, HEADER)
        canvas.setStrokeColor(colors.HexColor("#AAAAAA"))
        canvas.line(0.9 * inch, height - 0.56 * inch, width - 0.9 * inch, height - 0.56 * inch)
        canvas.line(0.9 * inch, 0.66 * inch, width - 0.9 * inch, 0.66 * inch)
        canvas.drawCentredString(width / 2, 0.5 * inch, f"Page {page} of {total['pages'] or '?'}")
        canvas.restoreState()

    for _ in range(2):
        doc = SimpleDocTemplate(
            str(out),
            pagesize=LETTER,
            leftMargin=0.9 * inch,
            rightMargin=0.9 * inch,
            topMargin=0.8 * inch,
            bottomMargin=0.85 * inch,
            title=TITLE,
            author="Kestrel Freight People Team",
            subject="Employee handbook excerpt (sample corpus)",
            creator="stanchion bench/make_sample_pdf.py",
            invariant=1,
        )
        doc.build(story(), onFirstPage=decorate, onLaterPages=decorate)
        total["pages"] = total["seen"]
    return total["pages"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    pages = build(args.out)
    print(f"wrote {args.out} ({pages} pages, {args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
