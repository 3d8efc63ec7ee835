"""``fetch_page``: a web page as clean text, for a model.

The page is fetched with a GET (redirects followed and each re-checked, see ``ssrf``), within the
tool's size and time limits, and cleaned exactly as ingested HTML is (``ingest/loaders/html.py``:
navigation, banners, scripts and other chrome removed, tables as ``column: value`` lines). The
model reads the title, the address it ended at and the text, cut to ``max_chars``; with
``links: true`` also the page's links, as absolute URLs. Options may restrict the hosts
(``allow_hosts``, ``deny_hosts``; deny wins) and name internal hosts it may read
(``private_hosts``).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag, XMLParsedAsHTMLWarning
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stanchion.errors import IngestError, ToolError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.html import load_html
from stanchion.request_context import RequestContext
from stanchion.retrieve.search import Retriever
from stanchion.tools.base import ToolResult, parse_arguments
from stanchion.tools.http_fetch import FetchFailed, LimitOptions, fetch, text_codec
from stanchion.tools.ssrf import DEFAULT_PORTS, Policy, Refused, canonical_host, host_matches, host_pattern
from stanchion.types import ToolSpec

__all__ = ["FetchPageOptions", "FetchPageTool", "build"]

_HTML = frozenset({"text/html", "application/xhtml+xml"})
_MAX_LINKS = 100


class FetchPageOptions(LimitOptions):
    """``tools.<name>.options`` of a ``fetch_page`` tool."""

    description: str = Field("", description="what the model is told the tool is for")
    allow_hosts: list[str] = Field(
        default_factory=list, description="only these hosts (exact or *.suffix); empty: any public host"
    )
    deny_hosts: list[str] = Field(default_factory=list, description="never these hosts (exact or *.suffix)")
    private_hosts: list[str] = Field(
        default_factory=list, description="exact hosts that may be internal (loopback, private addresses)"
    )
    ports: list[int] = Field(default_factory=list, description="ports besides 80 and 443")
    max_bytes: int = Field(2_000_000, ge=1, le=50_000_000, description="largest page read")
    max_chars: int = Field(20_000, ge=100, le=1_000_000, description="longest text shown to the model")

    @field_validator("allow_hosts", "deny_hosts")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        return [host_pattern(v) for v in values]

    @field_validator("private_hosts")
    @classmethod
    def _exact(cls, values: list[str]) -> list[str]:
        if wild := [v for v in values if v.startswith("*")]:
            raise ValueError(f"private hosts must be exact, not {', '.join(wild)}")
        return [canonical_host(v) for v in values]

    @field_validator("ports")
    @classmethod
    def _ports(cls, values: list[int]) -> list[int]:
        if bad := [p for p in values if not 1 <= p <= 65535]:
            raise ValueError(f"not a port: {bad}")
        return values


class FetchPageArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=4096, description="the page's http or https URL")
    links: bool = Field(False, description="also list the page's links")


class FetchPageTool:
    """Fetches one page for a model; see the module's docstring."""

    def __init__(
        self,
        options: FetchPageOptions,
        *,
        name: str = "fetch_page",
        clock: Callable[[], float] = time.monotonic,
        verify: Any = True,
    ) -> None:
        self.options = options
        self._clock = clock
        self._verify = verify
        self.policy = Policy(
            ports=frozenset({*DEFAULT_PORTS, *options.ports}), private_hosts=frozenset(options.private_hosts)
        )
        self.spec = ToolSpec(
            name,
            options.description
            or "Read a web page: returns its title and its readable text (navigation and scripts removed).",
            FetchPageArguments.model_json_schema(),
        )

    def call(self, arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        args = parse_arguments(self.spec.name, FetchPageArguments, arguments)
        try:
            try:
                url = httpx.URL(args.url)
            except httpx.InvalidURL as exc:
                raise Refused(f"invalid URL {args.url!r} ({exc})") from None
            fetched = fetch(
                "GET",
                url,
                policy=self.policy,
                limits=self.options,
                max_bytes=self.options.max_bytes,
                admit=self._admit,
                wanted=lambda media: not media or media in _HTML or media.startswith("text/"),
                accept="text/html, application/xhtml+xml, text/plain;q=0.8",
                clock=self._clock,
                verify=self._verify,
            )
        except (Refused, FetchFailed) as exc:
            raise ToolError(str(exc), tool=self.spec.name) from None
        where = str(fetched.url)
        if fetched.status >= 400:
            raise ToolError(
                f"{where} answered HTTP {fetched.status} {fetched.reason}".rstrip(), tool=self.spec.name
            )
        body = fetched.body
        if body is None or b"\x00" in body[:4096]:
            kind = fetched.media_type or "binary"
            raise ToolError(f"{where} is {kind}, not a web page (HTML or text)", tool=self.spec.name)
        if fetched.media_type in _HTML or (not fetched.media_type and body.lstrip()[:1] == b"<"):
            title, text = self._clean(body, fetched.charset, where)
        else:
            title, text = "", body.decode(text_codec(fetched.charset), errors="replace").strip()
        links = _links(body, fetched.url) if args.links and fetched.media_type != "text/plain" else []
        limit = self.options.max_chars
        shown = (
            text if len(text) <= limit else f"{text[:limit]}\n[truncated: {limit} of {len(text)} characters]"
        )
        content = f"{title}\n{where}\n\n{shown}" if title else f"{where}\n\n{shown}"
        if links:
            content += "\n\nLinks:\n" + "\n".join(
                f"- {label}: {href}" if label else f"- {href}" for label, href in links
            )
        data = {
            "url": where,
            "title": title,
            "text": text,
            "links": [{"text": t, "url": u} for t, u in links],
        }
        return ToolResult(content, data)

    def _admit(self, method: str, url: httpx.URL) -> Mapping[str, str]:
        """A hop's host against the allow- and deny-lists (no headers to add)."""
        try:
            host = canonical_host(url.host)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        if any(host_matches(p, host) for p in self.options.deny_hosts):
            raise Refused(f"{host} is on this tool's deny list")
        allowed = self.options.allow_hosts
        if allowed and not any(host_matches(p, host) for p in allowed):
            raise Refused(f"{host} is not on this tool's allow list ({', '.join(allowed)})")
        return {}

    def _clean(self, body: bytes, charset: str | None, where: str) -> tuple[str, str]:
        """Title and text, cleaned by the HTML loader (which reads files: the page is written to a
        private temporary folder first)."""
        if charset and text_codec(charset) != "utf-8":
            # The header's charset wins over a guess; a BOM tells the parser it is UTF-8 now.
            with contextlib.suppress(UnicodeDecodeError):
                body = b"\xef\xbb\xbf" + body.decode(text_codec(charset)).encode("utf-8")
        with tempfile.TemporaryDirectory(prefix="stanchion-page-") as folder:
            path = Path(folder) / "page.html"
            path.write_bytes(body)
            context = LoadContext(source="web", relpath=where, max_file_bytes=len(body) + 1)
            try:
                document = next(load_html(path, context))
            except IngestError as exc:
                raise ToolError(f"{where}: {exc.reason}", tool=self.spec.name) from None
        return document.title, document.text


def build(name: str, options: Mapping[str, Any], *, retriever: Callable[[], Retriever]) -> FetchPageTool:
    """The ``stanchion.tools`` entry point; bad options are a pydantic ValidationError, which the
    spec's loader reports under ``tools.<name>.options``."""
    return FetchPageTool(FetchPageOptions.model_validate(dict(options)), name=name)


def _links(body: bytes, base: httpx.URL) -> list[tuple[str, str]]:
    """The page's http(s) links as (text, absolute URL), first occurrence of each, at most 100."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(body, "lxml")
    found: dict[str, str] = {}
    for anchor in soup.find_all("a", href=True):
        if not isinstance(anchor, Tag):
            continue
        try:
            target = base.join(str(anchor["href"]).strip()).copy_with(fragment=None)
        except (httpx.InvalidURL, ValueError):
            continue
        if target.scheme in ("http", "https") and str(target) not in found:
            found[str(target)] = " ".join(anchor.get_text(" ").split())[:200]
        if len(found) >= _MAX_LINKS:
            break
    return [(text, href) for href, text in found.items()]
