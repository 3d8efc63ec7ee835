"""The ``fetch_page`` tool against a live loopback server (allow-listed with ``private_hosts``):
pages cleaned as the HTML loader cleans them, links, charsets, host allow- and deny-lists,
statuses, sizes, options and the CLI. SSRF refusals are in test_ssrf.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.tools.test_http_server import LoopbackServer, serving
from typer.testing import CliRunner

from stanchion.cli import app as cli
from stanchion.errors import SpecError, ToolError
from stanchion.request_context import RequestContext
from stanchion.spec import parse_spec
from stanchion.tools.fetch_page import FetchPageOptions, FetchPageTool
from stanchion.tools.registry import build_tool

CTX = RequestContext("default", "ann", frozenset())


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with serving() as live:
        yield live


@pytest.fixture(autouse=True)
def _clear(server: LoopbackServer) -> None:
    server.requests.clear()


def tool(server: LoopbackServer, **options: Any) -> FetchPageTool:
    chosen = {"ports": [server.port], "private_hosts": ["127.0.0.1"], **options}
    return FetchPageTool(FetchPageOptions.model_validate(chosen))


class TestPages:
    def test_clean_text(self, server: LoopbackServer) -> None:
        """Title and readable text; navigation, scripts and footer are gone, as in ingestion."""
        result = tool(server).call({"url": server.url("/page")}, CTX)
        assert result.data["title"] == "Refund policy"
        assert "Refunds are issued within 14 days of a return." in result.data["text"]
        for chrome in ("tracking", "Copyright", "About"):
            assert chrome not in result.content
        assert result.content.startswith(f"Refund policy\n{server.url('/page')}\n\n")
        assert result.data["links"] == []

    def test_links_on_request(self, server: LoopbackServer) -> None:
        """links: true lists the page's links as absolute URLs, fragments dropped."""
        result = tool(server).call({"url": server.url("/page"), "links": True}, CTX)
        urls = [link["url"] for link in result.data["links"]]
        assert server.url("/returns") in urls and "https://example.org/terms" in urls
        assert "- Start a return: " + server.url("/returns") in result.content

    def test_header_charset(self, server: LoopbackServer) -> None:
        """A page in the charset its header names is decoded by it."""
        result = tool(server).call({"url": server.url("/latin1")}, CTX)
        assert result.data["title"] == "Café" and "Crème brûlée" in result.data["text"]

    def test_plain_text(self, server: LoopbackServer) -> None:
        """A text/plain page comes back as it is."""
        assert tool(server).call({"url": server.url("/text")}, CTX).data["text"] == "plain words, café"

    def test_binary_refused(self, server: LoopbackServer) -> None:
        """An image is not a page."""
        with pytest.raises(ToolError, match="image/png, not a web page"):
            tool(server).call({"url": server.url("/binary")}, CTX)

    def test_error_status(self, server: LoopbackServer) -> None:
        """A 404 or 500 page is an error the model reads, with the status."""
        with pytest.raises(ToolError, match="answered HTTP 404"):
            tool(server).call({"url": server.url("/status/404")}, CTX)

    def test_limits(self, server: LoopbackServer) -> None:
        """Pages over max_bytes are refused; text over max_chars is cut for the model."""
        with pytest.raises(ToolError, match="larger than 1000 bytes"):
            tool(server, max_bytes=1000).call({"url": server.url("/big")}, CTX)
        with pytest.raises(ToolError, match="stalled"):
            tool(server, read_timeout=0.2).call({"url": server.url("/slow")}, CTX)
        cut = tool(server, max_chars=100).call({"url": server.url("/big")}, CTX)
        assert "[truncated: 100 of 200000 characters]" in cut.content


class TestHostLists:
    def test_allow_list(self, server: LoopbackServer) -> None:
        """With allow_hosts, other hosts are refused unsent."""
        with pytest.raises(ToolError, match="not on this tool's allow list"):
            tool(server, allow_hosts=["*.example.org"]).call({"url": server.url("/page")}, CTX)
        assert server.requests == []
        assert tool(server, allow_hosts=["127.0.0.1"]).call({"url": server.url("/text")}, CTX).data["text"]

    def test_deny_list_wins(self, server: LoopbackServer) -> None:
        """A denied host is refused even when allowed."""
        denied = tool(server, allow_hosts=["127.0.0.1"], deny_hosts=["127.0.0.1"])
        with pytest.raises(ToolError, match="deny list"):
            denied.call({"url": server.url("/page")}, CTX)
        assert server.requests == []

    def test_redirect_to_denied_host(self, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """A redirect is checked against the lists like the first request."""
        denied = tool(server, deny_hosts=["*.blocked.test"])
        with pytest.raises(ToolError, match="deny list"):
            denied.call({"url": server.url("/redirect?to=http://www.blocked.test/")}, CTX)
        assert [r["path"] for r in server.requests] == ["/redirect"]


class TestSurfaces:
    @pytest.mark.parametrize(
        ("arguments", "words"),
        [({}, "url: required"), ({"url": "x", "depth": 2}, "depth: unknown argument"), ({"url": ""}, "url")],
    )
    def test_bad_arguments(self, server: LoopbackServer, arguments: dict[str, Any], words: str) -> None:
        """Malformed calls are ToolErrors naming the argument."""
        with pytest.raises(ToolError, match=words):
            tool(server).call(arguments, CTX)

    @pytest.mark.parametrize(
        ("options", "words"),
        [
            ({"private_hosts": ["*.corp"]}, "private hosts must be exact"),
            ({"allow_hosts": ["a b"]}, "not a host name"),
            ({"ports": [70000]}, "not a port"),
            ({"max_redirects": 9}, "max_redirects"),
            ({"colour": "red"}, "colour"),
        ],
    )
    def test_bad_options(self, options: dict[str, Any], words: str) -> None:
        """Bad options are a SpecError under tools.web.options."""
        spec = parse_spec({"tools": {"web": {"tool": "fetch_page", "options": options}}})
        with pytest.raises(SpecError, match=words) as info:
            build_tool("web", spec.tools["web"], retriever=lambda: None)  # type: ignore[arg-type,return-value]
        assert info.value.key_path == "tools.web.options"

    def test_cli_call(self, server: LoopbackServer, tmp_path: Path) -> None:
        """`stanchion tools call` fetches a page from a spec file's tool."""
        options = {"ports": [server.port], "private_hosts": ["127.0.0.1"]}
        path = tmp_path / "stanchion.yaml"
        path.write_text(
            json.dumps({"tools": {"web": {"tool": "fetch_page", "options": options}}}), encoding="utf-8"
        )
        arguments = json.dumps({"url": server.url("/page")})
        result = CliRunner().invoke(cli, ["tools", "call", "web", arguments, "--spec", str(path), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["data"]["title"] == "Refund policy"
