"""SSRF refusals shared by the network tools (``tools/ssrf.py``): which addresses are out of
bounds, how URLs are vetted before a request, and that the connection goes to the address that
was vetted (one DNS lookup, pinned), with the host's name kept for Host and TLS.

Every refusal is proven against a live loopback server by its empty request log; DNS is faked by
replacing ``socket.getaddrinfo``, the resolver the module calls.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trustme
from tests.tools.test_http_server import LoopbackServer, serving

from stanchion.errors import ToolError
from stanchion.request_context import RequestContext
from stanchion.tools.fetch_page import FetchPageOptions, FetchPageTool
from stanchion.tools.ssrf import PinnedTransport, Policy, Refused, canonical_host, check_url, refusal

CTX = RequestContext("default", "ann", frozenset())


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with serving() as live:
        yield live


@pytest.fixture(autouse=True)
def _clear(server: LoopbackServer) -> None:
    server.requests.clear()


def page_tool(**options: Any) -> FetchPageTool:
    return FetchPageTool(FetchPageOptions.model_validate(options))


class TestRefusal:
    @pytest.mark.parametrize(
        ("address", "words"),
        [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "RFC 1918"),
            ("172.16.0.1", "RFC 1918"),
            ("192.168.1.1", "RFC 1918"),
            ("169.254.169.254", "metadata"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.100.100.200", "carrier-grade NAT"),
            ("0.0.0.0", "0.0.0.0/8"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("198.18.0.1", "benchmarking"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "IPv4-mapped address for 127.0.0.1"),
            ("::ffff:169.254.169.254", "IPv4-mapped"),
            ("64:ff9b::a9fe:a9fe", "NAT64 address for 169.254.169.254"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("2002:7f00:1::1", "6to4 address for 127.0.0.1"),
            ("2002:a00:1::", "6to4 address for 10.0.0.1"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("::127.0.0.1", "IPv4-compatible"),
        ],
    )
    def test_out_of_bounds(self, address: str, words: str) -> None:
        """Each internal, special or embedding address is refused, with words saying which kind."""
        why = refusal(ipaddress.ip_address(address))
        assert why is not None and words in why

    @pytest.mark.parametrize(
        "address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]
    )
    def test_public(self, address: str) -> None:
        """Public addresses, and IPv6 forms embedding a public IPv4, pass."""
        assert refusal(ipaddress.ip_address(address)) is None


class TestCheckUrl:
    @pytest.mark.parametrize(
        ("url", "words"),
        [
            ("ftp://example.com/", "only http and https"),
            ("file:///etc/passwd", "only http and https"),
            ("http://good.com@127.0.0.1/", "user name or password"),
            ("http://user:pw@example.com/", "user name or password"),
            ("http://2130706433/", "nonstandard spelling"),
            ("http://0x7f.1/", "nonstandard spelling"),
            ("http://017700000001/", "nonstandard spelling"),
            ("http://0x7f000001/", "nonstandard spelling"),
            ("http://127.1/", "nonstandard spelling"),
            ("http://0/", "nonstandard spelling"),
            ("http://example.com:8080/", "port 8080 is not allowed"),
            ("http://169.254.169.254/latest/meta-data/", "metadata"),
            ("http://127.0.0.1./", "loopback"),
            ("http://[::1]/", "loopback"),
            ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "IPv4-mapped"),
            ("http://127\u30020\u30020\u30021/", "loopback"),  # ideographic full stops, IDNA-mapped
        ],
    )
    def test_refused(self, url: str, words: str) -> None:
        """Scheme, credentials, port, IP spellings and literal addresses are vetted before any request."""
        with pytest.raises(Refused, match=words):
            check_url(httpx.URL(url), Policy())

    def test_exempt_host(self) -> None:
        """A host the spec names as private may be an internal address; another spelling may not."""
        policy = Policy(private_hosts=frozenset({"127.0.0.1"}))
        assert check_url(httpx.URL("http://127.0.0.1/"), policy) == "127.0.0.1"
        with pytest.raises(Refused):
            check_url(httpx.URL("http://2130706433/"), policy)

    def test_canonical_host(self) -> None:
        """Case, trailing dots and IDNA are normalised before hosts are compared."""
        assert canonical_host("LocalHost.") == "localhost"
        assert canonical_host("Bücher.example") == "xn--bcher-kva.example"
        assert canonical_host("[::1]") == "::1"
        for bad in ("a/b", "x@y", "host:80", ""):
            with pytest.raises(ValueError):
                canonical_host(bad)


class TestAgainstLoopback:
    """SSRF attempts against a real server on 127.0.0.1 that is not allow-listed reach nothing."""

    SPELLINGS = (
        "http://127.0.0.1:{p}/json",
        "http://localhost:{p}/json",
        "http://LOCALHOST.:{p}/json",
        "http://2130706433:{p}/json",
        "http://0x7f.1:{p}/json",
        "http://017700000001:{p}/json",
        "http://127.1:{p}/json",
        "http://0.0.0.0:{p}/json",
        "http://0:{p}/json",
        "http://good.com@127.0.0.1:{p}/json",
        "http://[::1]:{p}/json",
        "http://[::ffff:127.0.0.1]:{p}/json",
        "http://[::ffff:7f00:1]:{p}/json",
        "http://[64:ff9b::7f00:1]:{p}/json",
        "http://[2002:7f00:1::]:{p}/json",
        "http://127.0.0.1.:{p}/json",
        "http://127\u30020\u30020\u30021:{p}/json",
    )

    @pytest.mark.parametrize("spelling", SPELLINGS)
    def test_every_spelling_refused(self, server: LoopbackServer, spelling: str) -> None:
        """The port is allowed, the host is not: every way of writing loopback is refused unsent."""
        tool = page_tool(ports=[server.port])
        with pytest.raises(ToolError):
            tool.call({"url": spelling.format(p=server.port)}, CTX)
        assert server.requests == []

    def test_control_allowed_when_listed(self, server: LoopbackServer) -> None:
        """The same server is reachable once the spec names 127.0.0.1 (the refusals above are the rule)."""
        tool = page_tool(ports=[server.port], private_hosts=["127.0.0.1"])
        assert "Refund policy" in tool.call({"url": server.url("/page")}, CTX).content
        assert len(server.requests) == 1

    @pytest.mark.parametrize(
        "target",
        [
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost:{p}/json",
            "http://[::1]:{p}/json",
            "http://2130706433:{p}/json",
            "gopher://127.0.0.1:{p}/",
        ],
    )
    def test_redirect_from_allowed_host(self, server: LoopbackServer, target: str) -> None:
        """A redirect from an allowed host to an internal one is re-checked and refused."""
        tool = page_tool(ports=[server.port], private_hosts=["127.0.0.1"])
        to = target.format(p=server.port)
        with pytest.raises(ToolError):
            tool.call({"url": server.url("/redirect") + "?to=" + to}, CTX)
        assert [r["path"] for r in server.requests] == ["/redirect"]

    def test_redirect_chain_limit(self, server: LoopbackServer) -> None:
        """At most max_redirects hops are followed."""
        tool = page_tool(ports=[server.port], private_hosts=["127.0.0.1"], max_redirects=1)
        hop = server.url("/redirect?to=") + server.url("/redirect?to=/json")
        with pytest.raises(ToolError, match="more than 1 redirects"):
            tool.call({"url": hop}, CTX)


class FakeDNS:
    """``socket.getaddrinfo`` for names under .test: each lookup takes the next answer."""

    def __init__(self, real: Any, answers: dict[str, list[str]]) -> None:
        self.real = real
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.endswith(".test"):
            return self.real(host, port, *args, **kwargs)
        self.asked.append(name)
        address = self.answers[name].pop(0)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]


class TestPinnedConnection:
    def test_rebinding_cannot_switch_address(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A name that answers public, then private: one lookup per call, and the socket connects
        to the vetted public address (never to the second answer)."""
        dns = FakeDNS(socket.getaddrinfo, {"rebind.test": ["93.184.216.34", "127.0.0.1"]})
        monkeypatch.setattr(socket, "getaddrinfo", dns)
        dialled: list[Any] = []

        def connect(sock: socket.socket, address: Any) -> None:
            dialled.append(address[:2])
            raise ConnectionRefusedError("refused by the test")

        monkeypatch.setattr(socket.socket, "connect", connect)
        tool = page_tool()
        with pytest.raises(ToolError, match="could not reach"):
            tool.call({"url": "http://rebind.test/"}, CTX)
        assert dns.asked == ["rebind.test"]
        assert dialled == [("93.184.216.34", 80)]

    def test_private_answer_refused(self, monkeypatch: pytest.MonkeyPatch, server: LoopbackServer) -> None:
        """A name whose answer is internal is refused before any connection."""
        dns = FakeDNS(socket.getaddrinfo, {"inside.test": ["127.0.0.1"]})
        monkeypatch.setattr(socket, "getaddrinfo", dns)
        with pytest.raises(ToolError, match=r"inside.test resolves to 127.0.0.1, a loopback address"):
            page_tool(ports=[server.port]).call({"url": f"http://inside.test:{server.port}/json"}, CTX)
        assert server.requests == []

    def test_any_private_answer_refuses_host(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A name that answers a public and a metadata address is not trusted for either."""

        def both(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
            ]

        monkeypatch.setattr(socket, "getaddrinfo", both)
        with pytest.raises(ToolError, match=r"169\.254\.169\.254"):
            page_tool().call({"url": "http://mixed.test/"}, CTX)

    def test_tls_keeps_name_while_dialling_address(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """HTTPS to a private host named in the spec: the socket goes to the resolved 127.0.0.1,
        while SNI, certificate check and Host header use the name."""
        ca = trustme.CA()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("api.internal.test").configure_cert(context)
        client = ssl.create_default_context()
        ca.configure_trust(client)
        with serving(context) as tls:
            dns = FakeDNS(socket.getaddrinfo, {"api.internal.test": ["127.0.0.1", "10.9.9.9"]})
            monkeypatch.setattr(socket, "getaddrinfo", dns)
            options = FetchPageOptions.model_validate(
                {"ports": [tls.port], "private_hosts": ["api.internal.test"]}
            )
            tool = FetchPageTool(options, verify=client)
            result = tool.call({"url": f"https://api.internal.test:{tls.port}/page"}, CTX)
            assert result.data["title"] == "Refund policy"
            assert tls.sni == ["api.internal.test"]
            assert tls.requests[0]["headers"]["host"] == f"api.internal.test:{tls.port}"
            assert dns.asked == ["api.internal.test"]

    @pytest.mark.parametrize("host", ["localhost", "2130706433", "[::ffff:127.0.0.1]", "127.0.0.1"])
    def test_connect_time_check_alone(self, server: LoopbackServer, host: str) -> None:
        """The transport refuses at connect time even when no URL check ran before it."""
        transport = PinnedTransport(Policy(ports=frozenset({server.port})))
        with httpx.Client(transport=transport, trust_env=False) as client, pytest.raises(Refused):
            client.get(f"http://{host}:{server.port}/json")
        assert server.requests == []

    def test_dns_that_never_answers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A lookup that hangs ends at connect_timeout (getaddrinfo has no limit of its own)."""
        answered = threading.Event()
        real = socket.getaddrinfo

        def hang(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if str(host).endswith(".test"):
                answered.wait(30)
            return real("127.0.0.1", port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", hang)
        try:
            with pytest.raises(ToolError, match="did not answer in time"):
                page_tool(connect_timeout=0.2).call({"url": "http://silent.test/"}, CTX)
        finally:
            answered.set()
