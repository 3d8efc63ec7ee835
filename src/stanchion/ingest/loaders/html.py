"""HTML loader for wiki and Confluence exports and generated documentation (Sphinx, DocBook).

Page chrome goes first (navigation, banners, breadcrumbs, sidebars, footers, scripts, forms), then
the main content is walked in document order: headings open sections, tables become
"cell | cell" rows, list items "- item" lines (ordered lists "1. item"), and ``pre`` blocks keep
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
            self._builder.heading(int(name[1]), _text(tag))
        elif name == "pre":
            self._flush()
            self._builder.code(tag.get_text(), tight=self._list_depth > 0)  # indentation and all
        elif name == "table":
            self._flush()
            self._builder.block(_table(tag))
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


def _table(table: Tag) -> str:
    """Rows as "cell | cell" lines, header rows (thead, or all-th rows) first, caption on top."""
    head: list[str] = []
    body: list[str] = []
    for row in table.find_all("tr"):
        if row.find_parent("table") is not table:
            continue  # a nested table's row; its text already shows in the enclosing cell
        cells = row.find_all(("td", "th"), recursive=False)
        texts = [_text(cell) for cell in cells]
        if not any(texts):
            continue
        line = " | ".join(texts)
        is_head = row.find_parent("thead") is not None or all(c.name == "th" for c in cells)
        (head if is_head else body).append(line)
    caption = table.find("caption")
    lines = ([_text(caption)] if isinstance(caption, Tag) and _text(caption) else []) + head + body
    return "\n".join(lines)
