"""The ``http`` tool against a live loopback server, allow-listed explicitly (``private: true``):
endpoints matched by method, host, port and path; secrets from the environment, sent only where
declared and never shown; schemas; statuses as results; redirects, sizes and time limits; and
the spec and CLI surfaces.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.tools.test_http_server import LoopbackServer, serving
from typer.testing import CliRunner

from stanchion.cli import app as cli
from stanchion.errors import SpecError, ToolError
from stanchion.request_context import RequestContext
from stanchion.spec import parse_spec
from stanchion.tools.http import HttpOptions, HttpTool
from stanchion.tools.registry import build_tool

CTX = RequestContext("default", "ann", frozenset())
SECRET = "s3cr3t-token-value"


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with serving() as live:
        yield live


@pytest.fixture(autouse=True)
def _env(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.requests.clear()
    monkeypatch.setenv("ITEMS_TOKEN", SECRET)


def endpoint(server: LoopbackServer, **extra: Any) -> dict[str, Any]:
    base = {
        "name": "items",
        "scheme": "http",
        "host": "127.0.0.1",
        "port": server.port,
        "path": "/v1/items/*",
        "private": True,
    }
    return {**base, **extra}


def tool(server: LoopbackServer, *endpoints: dict[str, Any], **options: Any) -> HttpTool:
    chosen = list(endpoints) or [endpoint(server)]
    return HttpTool(HttpOptions.model_validate({"endpoints": chosen, **options}), name="api")


class TestCalls:
    def test_get_by_endpoint_and_path(self, server: LoopbackServer) -> None:
        """An endpoint's name and a path make the URL; the query is added; JSON comes back parsed."""
        result = tool(server).call({"endpoint": "items", "path": "/v1/items/42?a=1", "query": {"b": 2}}, CTX)
        assert result.content.startswith("HTTP 200 OK\ncontent-type: application/json")
        assert result.data["status"] == 200
        assert result.data["json"]["path"] == "/v1/items/42"
        assert server.requests[0]["query"] == {"a": "1", "b": "2"}

    def test_get_by_url(self, server: LoopbackServer) -> None:
        """A full URL is matched against the endpoints."""
        result = tool(server).call({"url": server.url("/v1/items/7")}, CTX)
        assert result.data["json"]["method"] == "GET"

    def test_post_json_body(self, server: LoopbackServer) -> None:
        """POST sends the json argument as the body."""
        post = endpoint(server, name="create", method="post", path="/v1/items/new")
        result = tool(server, post).call({"endpoint": "create", "json": {"title": "x", "n": 3}}, CTX)
        assert result.data["json"]["body"] == {"title": "x", "n": 3}
        assert server.requests[0]["headers"]["content-type"] == "application/json"

    def test_secret_header_sent_and_redacted(self, server: LoopbackServer) -> None:
        """The header value comes from the environment, reaches the server, and never the model."""
        secured = endpoint(server, headers={"Authorization": {"env": "ITEMS_TOKEN", "prefix": "Bearer "}})
        result = tool(server, secured).call({"endpoint": "items", "path": "/v1/items/1"}, CTX)
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
        assert SECRET not in result.content and SECRET not in json.dumps(result.data)
        assert "[redacted]" in result.content

    def test_no_caller_credentials_or_cookies(self, server: LoopbackServer) -> None:
        """Without declared headers nothing authenticates, and a cookie set on one hop is not sent on the next."""
        jar = endpoint(server, name="jar", path="/cookie")
        landing = endpoint(server, name="landing", path="/json")
        tool(server, jar, landing).call({"endpoint": "jar"}, CTX)
        assert [r["path"] for r in server.requests] == ["/cookie", "/json"]
        for record in server.requests:
            assert "cookie" not in record["headers"] and "authorization" not in record["headers"]

    @pytest.mark.parametrize("status", [404, 429, 500, 503])
    def test_error_status_is_a_result(self, server: LoopbackServer, status: int) -> None:
        """A 4xx or 5xx answer is shown to the model, not raised."""
        errors = endpoint(server, name="status", path="/status/*")
        result = tool(server, errors).call({"endpoint": "status", "path": f"/status/{status}"}, CTX)
        assert result.content.startswith(f"HTTP {status} ")
        assert result.data["status"] == status
        assert result.data["json"] == {"error": f"status {status}"}

    def test_text_is_returned(self, server: LoopbackServer) -> None:
        """Non-JSON text comes back as text, decoded by its charset."""
        text = endpoint(server, name="text", path="/text")
        result = tool(server, text).call({"endpoint": "text"}, CTX)
        assert result.data["text"] == "plain words, café"
        assert "json" not in result.data

    def test_binary_refused(self, server: LoopbackServer) -> None:
        """A binary 200 is refused; a binary error still reports its status."""
        binary = endpoint(server, name="png", path="/binary*")
        api = tool(server, binary)
        with pytest.raises(ToolError, match="image/png, which is not returned"):
            api.call({"endpoint": "png", "path": "/binary"}, CTX)
        result = api.call({"endpoint": "png", "path": "/binary-error"}, CTX)
        assert result.data["status"] == 500 and "body not shown" in result.content

    def test_long_text_truncated_for_the_model(self, server: LoopbackServer) -> None:
        """What the model reads is cut at max_chars, and says so."""
        big = endpoint(server, name="big", path="/big")
        result = tool(server, big, max_chars=100).call({"endpoint": "big"}, CTX)
        assert "[truncated: 100 of 200000 characters]" in result.content


class TestAllowList:
    @pytest.mark.parametrize(
        ("arguments", "words"),
        [
            ({"url": "{base}/v1/other/1"}, "matches no allowed endpoint"),
            ({"url": "{base}/v1/items/1/deeper"}, "matches no allowed endpoint"),
            ({"url": "{base}/v1/items/1", "method": "DELETE"}, "matches no allowed endpoint"),
            ({"url": "https://127.0.0.1:{port}/v1/items/1"}, "matches no allowed endpoint"),
            ({"url": "http://localhost:{port}/v1/items/1"}, "matches no allowed endpoint"),
            ({"url": "http://2130706433:{port}/v1/items/1"}, "matches no allowed endpoint"),
            ({"url": "http://x@127.0.0.1:{port}/v1/items/1"}, "user name or password"),
            ({"url": "{base}/v1/items/%2e%2e"}, "encoded slashes, dots"),
            ({"url": "{base}/v1/items/a%2fb"}, "encoded slashes, dots"),
            ({"url": "{base}/v1/items/../../status/500"}, "matches no allowed endpoint"),
            ({"endpoint": "nope", "path": "/v1/items/1"}, "no endpoint named 'nope'"),
            ({"endpoint": "items"}, "needs a path matching"),
        ],
    )
    def test_refused_unsent(self, server: LoopbackServer, arguments: dict[str, Any], words: str) -> None:
        """Anything outside the allowed method, scheme, host, port and path is refused before sending."""
        filled = {
            k: v.format(base=server.base, port=server.port) if isinstance(v, str) else v
            for k, v in arguments.items()
        }
        with pytest.raises(ToolError, match=words):
            tool(server).call(filled, CTX)
        assert server.requests == []

    def test_allow_listed_loopback_needs_private(self, server: LoopbackServer) -> None:
        """Naming 127.0.0.1 as an endpoint host is not enough: the SSRF rule holds unless private: true."""
        public = endpoint(server, private=False)
        with pytest.raises(ToolError, match=r"127\.0\.0\.1 is a loopback address"):
            tool(server, public).call({"endpoint": "items", "path": "/v1/items/1"}, CTX)
        assert server.requests == []

    def test_wildcard_and_regex_patterns(self) -> None:
        """*.suffix matches subdomains only; re: patterns must match the whole path."""
        options = HttpOptions.model_validate(
            {"endpoints": [{"name": "gh", "host": "*.example.com", "path": r"re:/repos/\d+"}]}
        )
        gh = options.endpoints[0]
        assert gh.matches(
            "GET", httpx.URL("https://api.example.com/repos/12"), "api.example.com", "/repos/12"
        )
        assert not gh.matches("GET", httpx.URL("https://example.com/repos/12"), "example.com", "/repos/12")
        assert not gh.matches(
            "GET", httpx.URL("https://evilexample.com/repos/1"), "evilexample.com", "/repos/1"
        )
        assert not gh.matches(
            "GET", httpx.URL("https://a.example.com/repos/1x"), "a.example.com", "/repos/1x"
        )


class TestRedirects:
    def test_redirect_to_allowed_endpoint_followed_with_its_own_headers(self, server: LoopbackServer) -> None:
        """A redirect lands only on an allowed endpoint, and carries that endpoint's headers, not the first's."""
        start = endpoint(server, name="start", path="/redirect", headers={"X-Key": {"env": "ITEMS_TOKEN"}})
        target = endpoint(server, name="target", path="/json")
        result = tool(server, start, target).call(
            {"endpoint": "start", "query": {"to": server.url("/json")}}, CTX
        )
        assert result.data["status"] == 200
        assert server.requests[0]["headers"]["x-key"] == SECRET
        assert "x-key" not in server.requests[1]["headers"]

    @pytest.mark.parametrize(
        "to",
        ["http://169.254.169.254/latest/meta-data/", "http://localhost:{port}/json", "{base}/status/500"],
    )
    def test_redirect_elsewhere_refused(self, server: LoopbackServer, to: str) -> None:
        """A redirect to metadata, to another spelling of loopback, or to an unlisted path is refused."""
        start = endpoint(server, name="start", path="/redirect")
        with pytest.raises(ToolError):
            tool(server, start).call(
                {"endpoint": "start", "query": {"to": to.format(port=server.port, base=server.base)}}, CTX
            )
        assert [r["path"] for r in server.requests] == ["/redirect"]

    def test_303_after_post_becomes_get(self, server: LoopbackServer) -> None:
        """POST answered 303 continues as GET without the body, as browsers do."""
        post = endpoint(server, name="submit", method="POST", path="/redirect")
        landing = endpoint(server, name="landing", path="/json")
        api = tool(server, post, landing)
        result = api.call(
            {"endpoint": "submit", "query": {"to": "/json", "status": 303}, "json": {"a": 1}}, CTX
        )
        assert result.data["json"]["method"] == "GET" and result.data["json"]["body"] is None


class TestLimits:
    def test_declared_size_over_limit(self, server: LoopbackServer) -> None:
        """A body declared larger than max_bytes is refused before reading."""
        big = endpoint(server, name="big", path="/big")
        with pytest.raises(ToolError, match="larger than 1000 bytes"):
            tool(server, big, max_bytes=1000).call({"endpoint": "big"}, CTX)

    def test_stream_without_length_stopped(self, server: LoopbackServer) -> None:
        """A chunked body with no length is read only up to max_bytes."""
        endless = endpoint(server, name="endless", path="/endless")
        with pytest.raises(ToolError, match="larger than 50000 bytes"):
            tool(server, endless, max_bytes=50_000).call({"endpoint": "endless"}, CTX)

    def test_gzip_bomb_stopped(self, server: LoopbackServer) -> None:
        """20 MB of zeros in a ~20 KB gzip body stops at max_bytes decompressed."""
        bomb = endpoint(server, name="bomb", path="/bomb")
        with pytest.raises(ToolError, match="larger than 100000 bytes"):
            tool(server, bomb, max_bytes=100_000).call({"endpoint": "bomb"}, CTX)

    def test_stalled_read_times_out(self, server: LoopbackServer) -> None:
        """A server that sends headers and then nothing ends at read_timeout."""
        slow = endpoint(server, name="slow", path="/slow")
        with pytest.raises(ToolError, match="stalled"):
            tool(server, slow, read_timeout=0.2).call({"endpoint": "slow"}, CTX)

    def test_total_time_limit(self, server: LoopbackServer) -> None:
        """The whole call is bounded by total_timeout, measured on the tool's clock (injected)."""
        ticks = itertools.count(step=15.0)
        api = HttpTool(
            HttpOptions.model_validate({"endpoints": [endpoint(server, name="start", path="/redirect")]}),
            clock=lambda: next(ticks),
        )
        with pytest.raises(ToolError, match="20 s"):
            api.call({"endpoint": "start", "query": {"to": "/redirect?to=/json"}}, CTX)


class TestArguments:
    @pytest.mark.parametrize(
        ("arguments", "words"),
        [
            ({"url": "x", "headers": {"a": "b"}}, "headers: unknown argument"),
            ({}, "give url, or endpoint and path"),
            ({"url": "{base}/v1/items/1", "path": "/v1/items/1"}, "not both"),
            ({"url": "{base}/v1/items/1", "json": {"a": 1}}, "only with POST, PUT or PATCH"),
            ({"url": "{base}/v1/items/1", "method": "TRACE"}, "method"),
            ({"url": "http://[::1"}, "invalid URL"),
            ({"url": "{base}/v1/items/1", "query": {"a": {"nested": 1}}}, "query.a"),
        ],
    )
    def test_bad_arguments(self, server: LoopbackServer, arguments: dict[str, Any], words: str) -> None:
        """Each malformed call is a ToolError a model can act on."""
        filled = {k: v.format(base=server.base) if isinstance(v, str) else v for k, v in arguments.items()}
        with pytest.raises(ToolError, match=words):
            tool(server).call(filled, CTX)
        assert server.requests == []

    def test_schemas(self, server: LoopbackServer) -> None:
        """Declared query and body schemas are enforced, naming the wrong field."""
        post = endpoint(
            server,
            name="create",
            method="POST",
            path="/v1/items/new",
            query_schema={
                "type": "object",
                "properties": {"dry": {"type": "boolean"}},
                "additionalProperties": False,
            },
            body_schema={
                "type": "object",
                "required": ["title"],
                "properties": {"title": {"type": "string"}},
            },
        )
        api = tool(server, post)
        with pytest.raises(ToolError, match="'title' is a required property"):
            api.call({"endpoint": "create", "json": {"name": "x"}}, CTX)
        with pytest.raises(ToolError, match=r"json\.title: 5 is not of type 'string'"):
            api.call({"endpoint": "create", "json": {"title": 5}}, CTX)
        with pytest.raises(ToolError, match="'other' was unexpected"):
            api.call({"endpoint": "create", "json": {"title": "x"}, "query": {"other": 1}}, CTX)
        assert server.requests == []
        api.call({"endpoint": "create", "json": {"title": "x"}, "query": {"dry": True}}, CTX)
        assert server.requests[0]["query"] == {"dry": "true"}


class TestSpec:
    def options(self, **endpoint: Any) -> dict[str, Any]:
        return {
            "tools": {
                "api": {
                    "tool": "http",
                    "options": {
                        "endpoints": [{"name": "e", "host": "api.example.com", "path": "/x", **endpoint}]
                    },
                }
            }
        }

    @pytest.mark.parametrize(
        ("endpoint", "words"),
        [
            ({"host": "*.example.com", "private": True}, "private: true needs an exact host"),
            ({"path": "re:("}, "bad regular expression"),
            ({"path": "x/*"}, "must start with /"),
            (
                {"headers": {"Authorization": {"env": "NOT_SET_ANYWHERE_42"}}},
                "NOT_SET_ANYWHERE_42 is not set",
            ),
            ({"headers": {"Host": {"env": "ITEMS_TOKEN"}}}, "cannot be set here"),
            ({"body_schema": {"type": "nonsense"}}, "not a valid JSON schema"),
            ({"host": "a/b"}, "not a host name"),
            ({"method": "FETCH"}, "method"),
        ],
    )
    def test_bad_options_name_the_key(self, endpoint: dict[str, Any], words: str) -> None:
        """Bad options are a SpecError under tools.api.options, saying what is wrong."""
        spec = parse_spec(self.options(**endpoint))
        with pytest.raises(SpecError, match=words) as info:
            build_tool("api", spec.tools["api"], retriever=lambda: None)  # type: ignore[arg-type,return-value]
        assert info.value.key_path == "tools.api.options"

    def test_offered_with_endpoints_and_schema(self) -> None:
        """The model is told the endpoints; the secret's variable name and value are not in the offer."""
        spec = parse_spec(self.options(headers={"X-Key": {"env": "ITEMS_TOKEN"}}, description="item lookup"))
        offered = build_tool("api", spec.tools["api"], retriever=lambda: None).spec  # type: ignore[arg-type,return-value]
        assert "- e: GET https://api.example.com/x (item lookup)" in offered.description
        assert set(offered.parameters["properties"]) == {"endpoint", "method", "url", "path", "query", "json"}
        assert "ITEMS_TOKEN" not in json.dumps(offered.parameters) + offered.description
        assert SECRET not in json.dumps(offered.parameters) + offered.description

    def test_cli_call(self, server: LoopbackServer, tmp_path: Path) -> None:
        """`stanchion tools call` runs the tool from a spec file."""
        spec = {"tools": {"api": {"tool": "http", "options": {"endpoints": [endpoint(server)]}}}}
        path = tmp_path / "stanchion.yaml"
        path.write_text(json.dumps(spec), encoding="utf-8")
        arguments = json.dumps({"endpoint": "items", "path": "/v1/items/9"})
        result = CliRunner().invoke(cli, ["tools", "call", "api", arguments, "--spec", str(path), "--json"])
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload["data"]["status"] == 200 and payload["data"]["json"]["path"] == "/v1/items/9"

    def test_readme_example_builds(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The README's network tools example is a valid spec whose tools build."""
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
        section = readme.split("**Network tools: `http` and `fetch_page`.**", 1)[1]
        example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
        monkeypatch.setenv("TICKETS_TOKEN", "x")
        spec = parse_spec(yaml.safe_load(example))
        built = {
            name: build_tool(name, spec.tools[name], retriever=lambda: None) for name in ("tickets", "web")
        }  # type: ignore[arg-type,return-value]
        assert "- intranet: GET http://10.0.0.7:8080/status" in built["tickets"].spec.description
        assert built["web"].spec.name == "web"
