"""HTML loader for wiki and Confluence exports and generated documentation (Sphinx, DocBook).

Page chrome goes first (navigation, banners, breadcrumbs, sidebars, footers, scripts, forms), then
the main content is walked in document order: headings open sections, a data table becomes one
self-contained ``column: value; ...`` line per row (see ``stanchion.ingest.tables``) in a section
named by its caption, a layout table the prose in its cells, list items "- item" lines (ordered lists "1. item"), and ``pre`` blocks keep
their line breaks and indentation.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag, XMLParsedAsHTMLWarning
from bs4.element import NavigableString, PreformattedString

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.text import SectionBuilder, check_size
from stanchion.ingest.normalize import normalize_text
from stanchion.ingest.tables import BUDGET_FACTOR, BUDGET_FLOOR, rows_as_text
from stanchion.types import Document, MetaValue

log = logging.getLogger(__name__)

_LOOKS_LIKE_HTML = re.compile(
    rb"<(!doctype\s+html|html|head|body|title|div|p|h[1-6]|table|article|section|main|ul|span)[\s>/]",
    re.IGNORECASE,
)
_DROP_TAGS = [
    "script", "style", "noscript", "template", "form", "nav", "aside", "iframe", "svg", "canvas",
    "button", "input", "select", "textarea", "object", "embed",
]  # fmt: skip
# Class/id tokens that always mark chrome (Sphinx, DocBook/Publican, Confluence, common themes).
_CHROME = re.compile(
    r"(^|[-_])(nav|navbar|navheader|navfooter|docnav|navigation|breadcrumbs?|breadcrumb-section"
    r"|sphinxsidebar(wrapper)?|footer|masthead|banner|skip(-to)?-(content|link|nav)|edit-?(this-)?page"
    r"|page-metadata|related|searchbox|headerlink|cookie-?(banner|notice)|share-?buttons|pagination)([-_]|$)",
    re.IGNORECASE,
)
# Tokens that are chrome only when the block is mostly links: a DocBook "sidebar" is a tip box.
_MAYBE_CHROME = re.compile(r"(^|[-_])(sidebar|toc|menu|header)([-_]|$)", re.IGNORECASE)
_CHROME_ROLES = frozenset({"navigation", "banner", "contentinfo", "search"})
_CHROME_LINK_TEXT = re.compile(
    r"^\s*(skip to (main )?content|jump to (navigation|search)|edit (this page|on github|page)"
    r"|back to top|permalink)\s*$",
    re.IGNORECASE,
)
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BLOCKS = frozenset({
    "p", "div", "section", "article", "main", "header", "footer", "blockquote", "dl", "dt", "dd",
    "figure", "figcaption", "address", "center", "hr", "body", "details", "summary", "caption",
})  # fmt: skip
_WS = re.compile(r"[ \t\r\n\f\v]+")
# Meta tags worth keeping, by name or property, and the metadata key each becomes.
_META = {
    "description": "description",
    "author": "author",
    "last-modified": "modified",
    "dcterms.modified": "modified",
    "article:modified_time": "modified",
    "revised": "modified",
    "ajs-space-key": "space_key",
    "confluence-space-key": "space_key",
    "ajs-space-name": "space",
    "confluence-space-name": "space",
    "ajs-page-id": "page_id",
}
_BREADCRUMBS = "#breadcrumbs, .breadcrumbs, ol.breadcrumb, ul.breadcrumb, nav[aria-label=breadcrumb]"
_CONFLUENCE_INFO = re.compile(
    r"created by (?P<created_by>.+?)(?:, last modified(?: by (?P<modified_by>.+?))? on (?P<modified>.+))?$",
    re.IGNORECASE,
)


# Deeper nesting is refused: pages are walked recursively, and removing chrome looks at each
# element's descendants, so a page of thousands of nested <div>s (a few kilobytes) would take hours.
MAX_DEPTH = 256


def load_html(path: Path, ctx: LoadContext) -> Iterator[Document]:
    """One Document per HTML page, one Section per heading; page chrome removed."""
    check_size(path, ctx)
    data = path.read_bytes()
    _sniff(data, path)
    with warnings.catch_warnings():
        # Advisory only: XHTML parsed as HTML is what we want; short files are not URLs here.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(data, "lxml")
    if _deeper_than(soup, MAX_DEPTH):
        raise IngestError(path, f"elements nested more than {MAX_DEPTH} levels deep")
    meta = _metadata(soup)
    body = soup.body or soup
    _strip_chrome(body)
    root = _content_root(body)
    renderer = _Renderer()
    renderer.render(root)
    builder = renderer.finish()
    sections = builder.sections()
    if not sections:
        raise IngestError(path, "no text content after removing page chrome")
    title = _title(soup, root, meta)
    meta["title"] = title
    log.debug("ingest.html.loaded", extra={"path": str(path), "root": root.name, "sections": len(sections)})
    yield Document(
        id=ctx.doc_id(),
        text=builder.document_text(),
        title=title,
        source=ctx.source,
        path=ctx.relpath,
        metadata={**ctx.metadata, **meta},
        access_groups=ctx.access_groups,
        sections=tuple(sections),
    )


def _sniff(data: bytes, path: Path) -> None:
    """Reject empty, binary and non-HTML files before parsing: lxml accepts anything."""
    if not data.strip():
        raise IngestError(path, "empty file")
    head = data[:8192]
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff"))
    if b"\x00" in head and not utf16:
        raise IngestError(path, "binary file, not HTML")
    if not utf16 and not _LOOKS_LIKE_HTML.search(head):
        raise IngestError(path, "not an HTML file (no HTML tags near the start)")


def _text(node: Tag) -> str:
    """Visible text with collapsed whitespace; block boundaries inside become spaces, inline ones nothing."""
    parts: list[str] = []
    for item in node.descendants:
        if isinstance(item, Tag):
            if item.name in _BLOCKS or item.name in ("br", "li", "td", "th", "tr"):
                parts.append(" ")
        elif isinstance(item, NavigableString) and not isinstance(item, PreformattedString):
            parts.append(str(item))
    return _WS.sub(" ", "".join(parts)).strip()


def _metadata(soup: BeautifulSoup) -> dict[str, MetaValue]:
    """Cheap page facts: meta tags, language, canonical URL, Confluence breadcrumbs and page info."""
    meta: dict[str, MetaValue] = {}
    for tag in soup.find_all("meta"):
        name = str(tag.get("name") or tag.get("property") or tag.get("http-equiv") or "").lower()
        content = normalize_text(str(tag.get("content") or ""))
        if not content:
            continue
        if name in _META:
            meta.setdefault(_META[name], content)
        elif name == "keywords":
            meta["keywords"] = [k.strip() for k in content.split(",") if k.strip()]
    html = soup.find("html")
    if isinstance(html, Tag) and html.get("lang"):
        meta["lang"] = str(html.get("lang"))
    canonical = soup.find("link", rel="canonical")
    if isinstance(canonical, Tag) and canonical.get("href"):
        meta["url"] = str(canonical.get("href"))
    crumbs = soup.select_one(_BREADCRUMBS)
    if crumbs is not None:
        trail = [_text(li) for li in crumbs.find_all("li")]
        if trail := [t for t in trail if t]:
            meta["breadcrumbs"] = trail
    info = soup.select_one(".page-metadata")
    if info is not None and (found := _CONFLUENCE_INFO.search(_text(info))):
        for key, value in found.groupdict().items():
            if value:
                meta.setdefault(key, value.strip())  # a machine-readable meta tag wins over prose
    return meta


def _is_chrome(tag: Tag) -> bool:
    if tag.name in ("header", "footer") and tag.find_parent(("article", "main")) is None:
        return True  # an article's own header holds its title; the site's does not
    if str(tag.get("role") or "") in _CHROME_ROLES:
        return True
    if tag.has_attr("hidden") or re.search(r"display\s*:\s*none", str(tag.get("style") or "")):
        return True
    tokens = [*(tag.get("class") or []), str(tag.get("id") or "")]
    if any(_CHROME.search(t) for t in tokens if t):
        return True
    if any(_MAYBE_CHROME.search(t) for t in tokens if t):
        text = _text(tag)
        links = sum(len(_text(a)) for a in tag.find_all("a"))
        return not text or links >= 0.5 * len(text)
    if tag.name == "a":
        return bool(_CHROME_LINK_TEXT.match(tag.get_text()))
    return False


def _strip_chrome(body: Tag) -> None:
    for tag in body.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in body.find_all(True):
        # A tag inside an already removed one is decomposed with it; skip it.
        if not tag.decomposed and _is_chrome(tag):
            tag.decompose()


def _deeper_than(root: Tag, limit: int) -> bool:
    """Whether any element lies more than ``limit`` levels below ``root`` (one pass, no recursion)."""
    stack = [(root, 0)]
    while stack:
        tag, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in tag.contents if isinstance(child, Tag))
    return False


def _content_root(body: Tag) -> Tag:
    """The main content when the page marks it (Confluence #main-content, HTML5 main, Sphinx role=main)."""
    for selector in ("#main-content", "main", "[role=main]", "article", "#content", ".document"):
        found = body.select(selector)
        if len(found) == 1 and _text(found[0]):
            return found[0]
    return body


def _title(soup: BeautifulSoup, root: Tag, meta: dict[str, MetaValue]) -> str:
    """<title>, minus a site suffix the first h1 shows to be one; Confluence's "Space : Page" split."""
    title = normalize_text(soup.title.get_text()) if soup.title else ""
    h1 = root.find("h1") or soup.find("h1")
    heading = normalize_text(_text(h1)) if isinstance(h1, Tag) else ""
    if heading and (not title or title.startswith(heading)):
        title = heading
    confluence = "space_key" in meta or "breadcrumbs" in meta or soup.select_one("#main-content")
    if confluence and " : " in title:
        space, _, page = title.partition(" : ")
        meta.setdefault("space", space.strip())
        title = page.strip()
    return title


class _Renderer:
    """Walks the content tree in document order, feeding a SectionBuilder."""

    def __init__(self) -> None:
        self._builder = SectionBuilder()
        self._inline: list[str] = []
        self._prefix = ""
        self._list_depth = 0
        self._headings: list[tuple[int, str]] = []  # the builder's heading stack, as it stands

    def _heading(self, level: int, title: str) -> None:
        if not normalize_text(title):
            return  # the builder ignores it too
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, title))
        self._builder.heading(level, title)

    def finish(self) -> SectionBuilder:
        self._flush()
        return self._builder

    def _flush(self) -> None:
        lines = (_WS.sub(" ", line).strip() for line in "".join(self._inline).split("\n"))
        text = "\n".join(line for line in lines if line)
        self._inline = []
        if text:
            self._builder.block(self._prefix + text, tight=self._list_depth > 0)
            self._prefix = ""

    def render(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if not isinstance(child, PreformattedString):  # comments, CDATA, doctype
                    # Source line breaks are just whitespace in HTML; only <br> breaks a line.
                    self._inline.append(_WS.sub(" ", str(child)))
            elif isinstance(child, Tag):
                self._element(child)

    def _element(self, tag: Tag) -> None:
        name = tag.name
        if name in _HEADINGS:
            self._flush()
            self._heading(int(name[1]), _text(tag))
        elif name == "pre":
            self._flush()
            self._builder.code(tag.get_text(), tight=self._list_depth > 0)  # indentation and all
        elif name == "table":
            self._table(tag)
        elif _is_table_title(tag):
            pass  # named with its table, see _table
        elif name in ("ul", "ol", "menu"):
            self._list(tag, ordered=name == "ol")
        elif name == "li":  # a stray item outside a list
            self._flush()
            self._prefix = "- "
            self.render(tag)
            self._flush()
        elif name == "br":
            self._inline.append("\n")
        elif name == "img":
            pass  # alt text of icons and callout numbers is noise more often than content
        elif name in _BLOCKS:
            self._flush()
            self.render(tag)
            self._flush()
        else:
            self.render(tag)

    def _table(self, table: Tag, context: str = "") -> None:
        """A data table as one self-contained line per row, in a section named by its caption
        (under the heading it sits in); a layout table as the prose in its cells.

        Nested tables come after their table's rows, each as a table of its own named by the row
        it sat in. ``context`` names a nested table that has no caption.
        """
        self._flush()
        caption = _caption(table) or context
        layout = _is_layout(table)
        nested: list[tuple[Tag, str]] = []
        if not layout:
            for inner in table.find_all("table"):
                if inner.find_parent("table") is table:
                    row = inner.find_parent("tr")
                    first = _cells(row)[0] if isinstance(row, Tag) and _cells(row) else None
                    name = _text(first) if first is not None and inner not in first.descendants else ""
                    nested.append((inner.extract(), name))
        text = None if layout else _table_text(table)
        if text is None:
            if not layout and caption:
                self._builder.block(caption)
            for row in _own_rows(table):
                for cell in _cells(row):
                    self._flush()
                    self.render(cell)
                    self._flush()
        elif caption and self._headings and normalize_text(caption) != normalize_text(self._headings[-1][1]):
            around = self._headings[-1]
            self._heading(around[0] + 1, caption)
            self._builder.block(text)
            self._heading(*around)
        else:
            above = caption if caption and not self._headings else ""
            self._builder.block(f"{above}\n{text}" if above else text)
        for inner, name in nested:
            self._table(inner, name)

    def _list(self, tag: Tag, *, ordered: bool) -> None:
        self._flush()
        self._list_depth += 1
        number = int(str(tag.get("start") or "1")) if str(tag.get("start") or "1").isdigit() else 1
        for child in tag.children:
            if isinstance(child, Tag) and child.name == "li":
                self._prefix = f"{number}. " if ordered else "- "
                number += 1
                self.render(child)
                self._flush()
                self._prefix = ""
            elif isinstance(child, Tag):
                self._element(child)
        self._list_depth -= 1


def _own_rows(table: Tag) -> list[Tag]:
    """The table's own rows (not a nested table's), footer rows last as they are shown."""
    rows = [tr for tr in table.find_all("tr") if tr.find_parent("table") is table]
    return sorted(rows, key=lambda tr: tr.find_parent("tfoot") is not None)


def _cells(row: Tag) -> list[Tag]:
    return row.find_all(("td", "th"), recursive=False)


def _span(cell: Tag, name: str, limit: int) -> int:
    """A colspan or rowspan, 1 unless it is a plain number ("²" and 5,000 digits are not)."""
    value = str(cell.get(name) or "1").strip()
    return max(1, min(int(value), limit)) if value.isascii() and value.isdigit() and len(value) <= 4 else 1


def _is_layout(table: Tag) -> bool:
    """A table used to lay out a page (callout lists, index columns, a bordered note), not data.

    A header cell anywhere makes it data. Without one, a table of one row or one column, one that
    holds lists, code or other tables in its cells, or one with at most two filled cells per row
    and long prose in them lays out prose.
    """
    if str(table.get("role") or "").lower() in ("presentation", "none"):
        return True
    rows = _own_rows(table)
    if table.find("thead") is not None or any(c.name == "th" for row in rows for c in _cells(row)):
        return False
    texts = [[_text(cell) for cell in _cells(row)] for row in rows]
    texts = [row for row in texts if any(row)]
    if len(texts) < 2 or max(len(row) for row in texts) < 2:
        return True
    if any(cell.find(_LAYOUT_CONTENT) is not None for row in rows for cell in _cells(row)):
        return True
    filled = [[t for t in row if t] for row in texts]
    longest = sum(max(len(t) for t in row) for row in filled) / len(filled)
    return max(len(row) for row in filled) <= 2 and longest >= _LAYOUT_PROSE_CHARS


_LAYOUT_CONTENT = ["ul", "ol", "pre", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"]
_LAYOUT_PROSE_CHARS = 100  # a cell this long on average is prose, not a value
_NUMBER = re.compile(r"[(\-\u2212+]?[$\u20ac\u00a3]?\d[\d,.' ]*%?\)?")
_MAX_SPAN = 1000  # colspan/rowspan beyond this is a typo or an attack, not a layout
# Spans may repeat a table's cells this many times over (each cell counted as its text plus one),
# plus a floor; a table whose expansion would exceed it (rowspans over empty rows) reads as prose.
_GRID_FACTOR = 10
_GRID_FLOOR = 10_000


_GridCell = tuple[str, str, bool]  # text where shown, text in its first column only, is <th>


def _grid(table: Tag) -> tuple[list[list[str]], list[list[str]], list[list[bool]], list[bool]] | None:
    """The table with spans expanded: each cell's text where it is shown (a colspan repeats it in
    every column it covers, a rowspan in every row), the same with colspan repeats blank (a body
    value belongs to one column), whether each cell is a header cell, and whether each row is in
    ``thead``. None when the spans would repeat the table's text more than ``_GRID_FACTOR`` times.

    A cell past the table's width (a row already full of cells and rowspans from above, which a
    browser shows as an extra column) takes one extra column."""
    grid: list[list[_GridCell]] = []
    in_head: list[bool] = []
    below: dict[int, tuple[_GridCell, int]] = {}  # column -> (cell, rows it still covers)
    rows = _own_rows(table)
    cells = [[(cell, _text(cell)) for cell in _cells(tr)] for tr in rows]
    budget = _GRID_FACTOR * sum(len(text) + 1 for row in cells for _, text in row) + _GRID_FLOOR
    # As wide as its widest row of cells: spans cannot make a 30-byte row a thousand columns wide.
    width = max((len(row) for row in cells), default=0)
    for r, tr in enumerate(rows):
        row: list[_GridCell] = []
        for cell, text in cells[r]:
            _carry(row, below)
            rowspan = _span(cell, "rowspan", len(rows) - r)
            for k in range(max(1, min(_span(cell, "colspan", _MAX_SPAN), width - len(row)))):
                placed = (text, text if k == 0 else "", cell.name == "th")
                if rowspan > 1:
                    below[len(row)] = (placed, rowspan - 1)
                row.append(placed)
        _carry(row, below)
        budget -= sum(len(c[0]) + 1 for c in row)
        if budget < 0:
            return None
        grid.append(row)
        in_head.append(tr.find_parent("thead") is not None)
    full = [[c[0] for c in row] for row in grid]
    single = [[c[1] for c in row] for row in grid]
    is_th = [[c[2] for c in row] for row in grid]
    return full, single, is_th, in_head


def _carry(row: list[_GridCell], below: dict[int, tuple[_GridCell, int]]) -> None:
    """Fill the columns that cells of rows above still span."""
    while len(row) in below:
        cell, left = below.pop(len(row))
        if left > 1:
            below[len(row)] = (cell, left - 1)
        row.append(cell)


def _header_rows(full: list[list[str]], is_th: list[list[bool]], in_head: list[bool], table: Tag) -> int:
    """How many leading rows are headers: thead rows, else rows of header cells only, else a
    first row that reads as one (bold, or words over columns of numbers) in a table with no <th>."""
    count = 0
    while count < len(full) and in_head[count]:
        count += 1
    if count:
        return count
    while count < len(full) and all(th for th, text in zip(is_th[count], full[count], strict=True) if text):
        if len(full[count]) > 1 and len(set(full[count])) == 1:
            break  # one header cell across the table titles the rows below it (an infobox group)
        count += 1
    if count or any(any(row) for row in is_th) or len(full) < 2:
        return count
    first = _own_rows(table)[0]
    names = full[0][1:]
    if not names or not all(0 < len(name) <= 60 for name in names):
        return 0
    bold = all(
        _text(cell) == " ".join(_text(b) for b in cell.find_all(("b", "strong")))
        for cell in _cells(first)
        if _text(cell)
    )
    numbers_below = any(_NUMBER.fullmatch(value) for row in full[1:] for value in row[1:])
    return int(bold or (numbers_below and not any(_NUMBER.fullmatch(name) for name in names)))


def _table_text(table: Tag) -> str | None:
    """The table as one ``column: value; ...`` line per data row (see ``stanchion.ingest.tables``),
    or None when it is no table of values."""
    grid = _grid(table)
    if grid is None or not grid[0]:
        return None
    full, single, is_th, in_head = grid
    heads = _header_rows(full, is_th, in_head, table)
    body = range(heads, len(full))
    labelled: bool | None = None
    if heads == 0:
        # A header cell leading every row names it ("Version | 1.2"); so does the key column of a
        # two-column key/value table.
        row_heads = all(is_th[r] and is_th[r][0] for r in body)
        labelled = row_heads or max(len(row) for row in full) == 2
    rows = [full[r] if r < heads else single[r] for r in range(len(full))]
    # The budget is the table's own text, not the text its spans repeat.
    own = sum(len(_text(cell)) + 1 for tr in _own_rows(table) for cell in _cells(tr))
    budget = BUDGET_FACTOR * own + BUDGET_FLOOR
    return rows_as_text(rows, header_rows=heads, labelled=labelled, spanned_headers=False, budget=budget)


def _caption(table: Tag) -> str:
    """What names the table: its <caption>, a DocBook title ("Table 3.1. ..."), or its summary."""
    caption = table.find("caption")
    if isinstance(caption, Tag) and caption.find_parent("table") is table and (text := _text(caption)):
        return text
    for parent in table.parents:
        if parent.name == "table" or parent.name == "body":
            break
        title = parent.find(class_="title", recursive=False)
        if isinstance(title, Tag) and _is_table_title(title):
            return _text(title)
    return " ".join(str(table.get("summary") or "").split())


def _is_table_title(tag: Tag) -> bool:
    """A DocBook table title: class "title" inside a ``div.table`` or ``div.informaltable``."""
    classes = list(tag.get("class") or [])
    parent = tag.parent
    return (
        "title" in classes
        and isinstance(parent, Tag)
        and bool({"table", "informaltable"} & set(parent.get("class") or []))
        and parent.find("table") is not None
    )
