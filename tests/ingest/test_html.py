"""The HTML loader, on the Debian handbook and policy pages and on a small Confluence-style export."""

from __future__ import annotations

from pathlib import Path

import pytest

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.html import load_html
from stanchion.types import Document

CTX = LoadContext(source="wiki", relpath="page.html", access_groups=("staff",), metadata={"team": "ops"})


def _load(path: Path, ctx: LoadContext = CTX) -> Document:
    docs = list(load_html(path, ctx))
    assert len(docs) == 1
    return docs[0]


def _section(doc: Document, *path: str) -> str:
    matches = [s.text for s in doc.sections if s.heading_path == path]
    assert matches, f"no section {path}; have {[s.heading_path for s in doc.sections]}"
    return matches[0]


@pytest.fixture(scope="module")
def handbook(shared_data: Path) -> Path:
    return shared_data / "docs-debian" / "debian-handbook-en-html"


@pytest.fixture(scope="module")
def tables(fixtures: Path) -> Document:
    return _load(fixtures / "html" / "tables.html")


@pytest.fixture(scope="module")
def doc(fixtures: Path) -> Document:
    return _load(fixtures / "html" / "confluence_page.html")


class TestDebianHandbook:
    """DocBook/Publican pages: banner, docnav bars, toc blocks around the content."""

    def test_navigation_chrome_is_dropped(self, handbook: Path) -> None:
        """The ebook banner and the Prev/Home/Next bars are gone; the body stays."""
        doc = _load(handbook / "sect.apt-get.html")
        assert "Download the ebook" not in doc.text
        assert "Prev" not in doc.text.split()
        assert "The Debian Administrator's Handbook" not in doc.text  # the docnav "home" item
        assert "APT is a vast project, whose original plans included a graphical interface." in doc.text

    def test_tip_sidebars_are_content(self, handbook: Path) -> None:
        """A DocBook "sidebar" is a tip box, not navigation: few links, so it is kept."""
        doc = _load(handbook / "sect.apt-get.html")
        assert "TIP Incremental updates" in doc.text
        assert "APT can download “diff” files" in doc.text

    def test_heading_paths_follow_the_outline(self, handbook: Path) -> None:
        """Each h3 section carries its h2 parent; inline <code> in headings keeps its spacing."""
        doc = _load(handbook / "sect.apt-get.html")
        top = "6.2. aptitude, apt-get, and apt Commands"
        assert doc.title == top
        text = _section(doc, top, "6.2.1. Initialization")
        assert text.startswith("For any work with APT, the list of available packages needs to be updated")

    def test_table_rows_name_their_columns(self, handbook: Path) -> None:
        """Each row names its values by column, in a section named by the DocBook table title."""
        doc = _load(handbook / "sect.how-to-migrate.html")
        title = "Table 3.1. Matching operating system and architecture"
        rows = _section(doc, "3.2. How To Migrate", "3.2.4. Installing Debian", title).split("\n")
        assert rows[:2] == [
            "Operating System: DEC Unix (OSF/1); Architecture(s): alpha, mipsel.",
            "Operating System: HP Unix; Architecture(s): ia64, hppa.",
        ]
        assert len(rows) == 14
        assert doc.text.count(title) == 1  # the title names the table; it is not also a paragraph

    def test_callout_tables_stay_prose(self, handbook: Path) -> None:
        """A callout list laid out as a table (number image, explanation) reads as paragraphs."""
        doc = _load(handbook / "sect.selinux.html")
        assert "\n\nThe module must be identified by its name and version number." in doc.text
        assert "| The module" not in doc.text and ": The module" not in doc.text

    def test_chapter_toc_is_dropped(self, handbook: Path) -> None:
        """A chapter page's link-only table of contents is navigation."""
        doc = _load(handbook / "apt.html")
        assert doc.sections[0].heading_path == ("Chapter 6. Maintenance and Updates: The APT Tools",)
        assert doc.sections[0].text.startswith("What makes Debian so popular with administrators")

    def test_metadata(self, handbook: Path) -> None:
        """Keywords and canonical URL come from the head; spec metadata and ACL pass through."""
        doc = _load(handbook / "sect.apt-get.html")
        assert doc.metadata["url"] == "https://debian-handbook.info/browse/stable/sect.apt-get.html"
        assert "apt-get" in doc.metadata["keywords"]
        assert doc.metadata["team"] == "ops"
        assert doc.access_groups == ("staff",)
        assert doc.id == "wiki:page.html"


class TestDebianPolicy:
    """Sphinx pages: related-navigation bars, a sidebar with search, headerlink pilcrows."""

    def test_sphinx_chrome_and_heading_path(self, shared_data: Path) -> None:
        """Sidebar, search box and footer are gone; h1 > h2 > h3 nest into the heading path."""
        doc = _load(shared_data / "docs-debian" / "debian-policy" / "policy-html" / "ch-binary.html")
        for chrome in ("Quick search", "Show Source", "Previous topic", "Created using", "¶"):
            assert chrome not in doc.text
        assert doc.title == "3. Binary packages"
        text = _section(
            doc,
            "3. Binary packages",
            "3.2. The version of a package",
            "3.2.1. Version numbers based on dates",
        )
        assert "96May01" in text
        # Source line breaks inside a paragraph are whitespace, not structure.
        assert "package management system, called dpkg." in doc.text

    def test_docbook_tables_become_rows_under_their_titles(self, shared_data: Path) -> None:
        """The debconf specification's tables: rows with their column names, wrapped cells on one
        line, each table a section named by its title under the section it sits in."""
        doc = _load(shared_data / "docs-debian" / "debian-policy" / "debconf_specification.html")
        codes = _section(doc, "5. Communication with the frontend", "Table 2. Numeric status codes").split(
            "\n"
        )
        assert codes[0] == "Range: 0; Description: success."
        assert "Range: 30-99; Description: command-specific return codes." in codes
        types = _section(doc, "3. Templates", "3.1. Template information", "Table 1. Available data types")
        assert 'Type: boolean; Description: Holds "true" or "false".' in types.split("\n")


class TestConfluenceExport:
    """A hand-written page in Confluence's export layout."""

    def test_chrome_is_dropped(self, doc: Document) -> None:
        """Breadcrumbs, page metadata line, footer, skip link, script and style never reach the text."""
        for chrome in ("Skip to content", "Operations", "Created by", "Document generated", "Atlassian"):
            assert chrome not in doc.text
        assert "tracking-snippet" not in doc.text
        assert "display: none" not in doc.text

    def test_title_and_space(self, doc: Document) -> None:
        """ "Space : Page" titles are split; meta tags and breadcrumbs become metadata."""
        assert doc.title == "Deploy Runbook"
        assert doc.metadata["space"] == "Platform Team"
        assert doc.metadata["space_key"] == "PLAT"
        assert doc.metadata["breadcrumbs"] == ["Platform Team", "Operations"]
        assert doc.metadata["modified"] == "2024-03-05T10:12:00Z"
        assert doc.metadata["created_by"] == "Alice Example"

    def test_sections(self, doc: Document) -> None:
        """Intro text, then one section per heading with its path."""
        paths = [s.heading_path for s in doc.sections]
        assert paths == [(), ("Prerequisites",), ("Prerequisites", "Environments"), ("Steps",)]

    def test_table_list_code(self, doc: Document) -> None:
        """Tables as rows, lists as items, code and <br> keep their line breaks."""
        assert _section(doc, "Prerequisites", "Environments").split("\n") == [
            "Environment: staging; Cluster: k8s-stg-1; Approver: any engineer.",
            "Environment: production; Cluster: k8s-prd-2; Approver: on-call lead.",
        ]
        assert "- VPN connected\n- Member of the deployers group" in _section(doc, "Prerequisites")
        steps = _section(doc, "Steps")
        assert "1. Tag the release.\n2. Run the pipeline." in steps
        assert "kubectl rollout status deploy/payments\nkubectl get pods -l app=payments" in steps
        assert "Rollback takes\nabout five minutes." in steps


class TestTables:
    """Data tables become one self-contained line per row; layout tables stay prose."""

    def test_header_levels_and_the_caption(self, tables: Document) -> None:
        """colspan/rowspan headers join per column; the caption names the table under its
        heading; a row header and a footer row are rows like the others; prose after the table
        is back under the heading."""
        rows = _section(tables, "Quarterly revenue", "Revenue by region (EUR thousands)").split("\n")
        assert rows == [
            "Region: EMEA; 2018 / Q1: 1,200; 2018 / Q2: 1,350; 2017 / Q1: 1,010; 2017 / Q2: 1,090.",
            "Region: Americas; 2018 / Q1: 980; 2018 / Q2: 1,020; 2017 / Q1: 870; 2017 / Q2: 905.",
            "Region: Total; 2018 / Q1: 2,180; 2018 / Q2: 2,370; 2017 / Q1: 1,880; 2017 / Q2: 1,995.",
        ]
        assert _section(tables, "Quarterly revenue") == "Revenue is booked when the invoice is sent."

    def test_statement_rows_carry_label_and_group(self, tables: Document) -> None:
        """A unit in the corner makes the first column labels; a spanning group row prefixes them."""
        assert _section(tables, "Cash flow").split("\n") == [
            "Investing activities / Purchases of property, plant and equipment \u2014 2018: (1,577); 2017: (1,440).",
            "Investing activities / Proceeds from sale of equipment \u2014 2018: 35; 2017: 12.",
        ]

    def test_first_row_headers_row_headers_and_rowspans(self, tables: Document) -> None:
        """<th> in the first row (no thead) are the header; a rowspan value repeats in each row;
        a vertical table of <th> keys reads "key: value", under its spanning group rows (an infobox); bold
        first-row cells over numbers are a header too."""
        assert _section(tables, "Settings").split("\n") == [
            "Setting: max_connections; Default: 100; Notes: Per worker.",
            "Setting: timeout; Default: 30 s; Notes: Reads.",
            "Setting: timeout; Default: 120 s; Notes: Uploads.",
        ]
        assert _section(tables, "Owners") == "Service: payments-api.\nOwner: Alice Example."
        assert _section(tables, "Service card").split("\n") == [
            "General / Founded: 2019.",
            "General / Language: Go.",
            "Operations / On call: #payments-oncall.",
        ]
        assert (
            _section(tables, "Prices")
            == "Plan: Starter; Monthly: $29; Seats: 5.\nPlan: Team; Monthly: $99; Seats: 25."
        )

    def test_layout_table_is_prose(self, tables: Document) -> None:
        """Icon cell plus a paragraph per row: two paragraphs, no cell separators."""
        text = _section(tables, "Layout")
        assert text.startswith("Never restart the primary database during business hours:")
        assert "\n\nAnnounce maintenance windows" in text
        assert "|" not in text and ";" not in text

    def test_nested_table_follows_named_by_its_row(self, tables: Document) -> None:
        """A table inside a cell is a table of its own, after the outer rows, named by its row."""
        assert _section(tables, "Regions") == "Region: EMEA.\nRegion: Americas; Datacenters: see the US page."
        assert _section(tables, "Regions", "EMEA") == "Site: Frankfurt; Racks: 42.\nSite: Dublin; Racks: 18."

    def test_spans_cannot_widen_a_table_past_its_cells(self, tmp_path: Path) -> None:
        """colspan=1000 on every row of a two-column table fills its two columns, not a thousand;
        the cell after it, past the table's width, is kept as one extra column."""
        rows = "".join(f'<tr><td colspan="1000">a{i}</td><td>b{i}</td></tr>' for i in range(2000))
        path = tmp_path / "wide.html"
        path.write_text(
            f"<html><body><h1>Wide</h1><table><tr><th>k</th><th>v</th></tr>{rows}</table></body></html>"
        )
        lines = _section(_load(path), "Wide").split("\n")
        assert len(lines) == 2000
        assert lines[7] == "k: a7; column 3: b7."

    def test_spans_that_would_repeat_the_table_many_times_leave_its_cells(self, tmp_path: Path) -> None:
        """Rowspans over empty rows would grow as N*N: past the budget the cells are read as
        prose, each once, and nothing is lost."""
        n = 200
        path = tmp_path / "spans.html"
        path.write_text(
            "<html><body><h1>Spans</h1><table><tr><td></td>"
            + "".join(f"<td>c{i}</td>" for i in range(n))
            + "</tr><tr>"
            + "".join(f"<td rowspan={n}>value{i}</td>" for i in range(n))
            + "</tr>"
            + "<tr></tr>" * (n - 1)
            + "</table></body></html>"
        )
        words = _section(_load(path), "Spans").split()
        assert words.count("value7") == 1 and "value199" in words and "c199" in words
        assert len(words) == 2 * n

    @pytest.mark.parametrize("span", ["\u00b2", "9" * 5000, "-2", " 3 "])
    def test_an_odd_span_is_one_column(self, tmp_path: Path, span: str) -> None:
        """A span that is no plain number of at most four digits counts as 1 (and " 3 " as 3)."""
        path = tmp_path / "odd.html"
        path.write_text(
            "<html><body><h1>Odd</h1><table><tr><th>k</th><th>v</th><th>w</th></tr>"
            f'<tr><td colspan="{span}">a</td><td>b</td><td>c</td></tr></table></body></html>',
            encoding="utf-8",
        )
        expected = "k: a; v: b; w: c." if span.strip() != "3" else "k: a; column 4: b; column 5: c."
        assert _section(_load(path), "Odd") == expected


class TestBadInput:
    """Files that are not usable HTML fail with a short reason."""

    def test_empty(self, tmp_path: Path) -> None:
        """A file of whitespace is empty."""
        path = tmp_path / "empty.html"
        path.write_text("  \n")
        with pytest.raises(IngestError, match="empty file"):
            _load(path)

    def test_binary(self, tmp_path: Path) -> None:
        """NUL bytes mean a binary file, whatever the extension."""
        path = tmp_path / "image.html"
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
        with pytest.raises(IngestError, match="binary file"):
            _load(path)

    def test_not_html(self, tmp_path: Path) -> None:
        """Plain prose with no tags is rejected rather than indexed as a page."""
        path = tmp_path / "notes.html"
        path.write_text("just some notes, no markup at all\n")
        with pytest.raises(IngestError, match="not an HTML file"):
            _load(path)

    def test_only_chrome(self, tmp_path: Path) -> None:
        """A page that is all navigation has no content."""
        path = tmp_path / "nav.html"
        path.write_text("<html><body><nav><a href='/'>Home</a></nav><footer>(c) 2024</footer></body></html>")
        with pytest.raises(IngestError, match="no text content"):
            _load(path)

    def test_too_large(self, fixtures: Path) -> None:
        """The size limit applies before parsing."""
        ctx = LoadContext(source="wiki", relpath="page.html", max_file_bytes=100)
        with pytest.raises(IngestError, match="file too large"):
            _load(fixtures / "html" / "confluence_page.html", ctx)
