"""Server-side request forgery, refused: where the network tools (``http``, ``fetch_page``) may connect.

A model that reads a web page can be told, by that page, to fetch ``http://169.254.169.254/`` (the
cloud metadata service) or an admin port on the server's own network. Two checks stop it, both
built on one rule (``refusal``: which addresses are out of bounds):

- ``check_url`` looks at every URL before it is requested, the first and each redirect: only http
  and https, no ``user@host`` (``http://good.com@127.0.0.1/`` is a request to 127.0.0.1), an
  allowed port, an IP address only in its standard spelling (``http://2130706433/``,
  ``http://0x7f.1/`` and ``http://017700000001/`` are 127.0.0.1 to the resolver, so they are
  refused outright), and a literal address that is public.
- ``PinnedTransport`` checks at connect time, which is what counts: its network backend resolves
  the host once, refuses it if any answer is out of bounds, and dials the vetted address itself.
  A DNS answer that changes between the check and the connect (DNS rebinding) cannot switch it,
  because there is no second lookup. The Host header and TLS SNI keep the host's name: httpcore
  takes both from the URL, not from the address dialled, so certificates are checked as usual.

Out of bounds: private (RFC 1918), loopback, link-local (169.254/16 with the metadata address,
fe80::/10), unique-local (fc00::/7), carrier-grade NAT (100.64/10), 0.0.0.0/8, multicast,
documentation, benchmarking and reserved ranges, and IPv6 addresses that embed an IPv4 one
(IPv4-mapped ``::ffff:127.0.0.1``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) when the embedded
address is; Teredo (2001::/32) is refused whole. A host the spec names in ``private_hosts`` is
exempt: that is how a user reaches an internal API on purpose (and how the tests reach their
loopback server). ``Refused`` is internal: the tools turn it into a ``ToolError`` the model reads.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

__all__ = [
    "DEFAULT_PORTS",
    "PinnedTransport",
    "Policy",
    "Refused",
    "canonical_host",
    "check_url",
    "host_matches",
    "host_pattern",
    "refusal",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = frozenset({80, 443})


class Refused(Exception):
    """A URL or address the policy does not allow; the message says which rule and how to allow it."""


_PRIVATE = "a private address (RFC 1918)"
_DOCS = "a documentation address"
# First match wins: the narrower blocks come before the ones that contain them.
_BLOCKED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("0.0.0.0/8", "in 0.0.0.0/8 ('this network')"),
        ("10.0.0.0/8", _PRIVATE),
        ("100.64.0.0/10", "a carrier-grade NAT address (100.64.0.0/10)"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (cloud metadata services answer at 169.254.169.254)"),
        ("172.16.0.0/12", _PRIVATE),
        ("192.0.0.0/24", "an IETF protocol address (192.0.0.0/24)"),
        ("192.0.2.0/24", _DOCS),
        ("192.88.99.0/24", "a 6to4 relay address"),
        ("192.168.0.0/16", _PRIVATE),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", _DOCS),
        ("203.0.113.0/24", _DOCS),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "an IPv4-compatible address (deprecated)"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/23", "an IETF protocol address (Teredo and others)"),
        ("2001:db8::/32", _DOCS),
        ("3fff::/20", _DOCS),
        ("5f00::/16", "a segment-routing address"),
        ("fc00::/7", "a unique-local address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT IPv4-translated


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is out of bounds (words for an error message), or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(int(address))  # drop a zone id (fe80::1%eth0)
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner, kind = embedded
            why = refusal(inner)
            return f"{kind} for {inner}, {why}" if why else None
    for network, why in _BLOCKED:
        if address.version == network.version and address in network:
            return why
    if not address.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "an IPv4-mapped address"
    if address in _NAT64 or address in _TRANSLATED:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "a NAT64 address"
    if address.sixtofour is not None:
        return address.sixtofour, "a 6to4 address"
    return None


# WHATWG URL rule: a host whose last label is a number is an IPv4 address. Resolvers read
# 2130706433, 0x7f.1, 017700000001 and 127.1 as 127.0.0.1; only a.b.c.d in decimal is accepted.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)


def canonical_host(host: str) -> str:
    """``host`` as hosts are compared here: lower case, IDNA (punycode) for non-ASCII names, and
    without the trailing dot of a fully qualified name (``localhost.`` is ``localhost``). A
    ValueError for what is no host."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not text or any(c in text for c in "/@?#:\\ "):
        raise ValueError(f"{host!r} is not a host name")
    try:
        raw = httpx.URL(f"http://{text}/").raw_host
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ValueError(f"{host!r} is not a host name ({exc})") from None
    name = raw.decode("ascii").lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError(f"{host!r} is not a host name")
    return name


def host_pattern(value: str) -> str:
    """A spec's host entry, canonical: an exact host, or ``*.suffix`` for any subdomain of suffix."""
    wildcard = value.startswith("*.")
    host = canonical_host(value[2:] if wildcard else value)
    return f"*.{host}" if wildcard else host


def host_matches(pattern: str, host: str) -> bool:
    """Whether canonical ``host`` is ``pattern`` (from ``host_pattern``) or, for ``*.suffix``, under it."""
    return host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` (canonical) spells, None for a name; Refused for a nonstandard spelling."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        raise Refused(
            f"host {host!r} is an IP address in a nonstandard spelling (decimal, octal or hex); "
            "only an address written as four decimal numbers (a.b.c.d) is accepted"
        )
    return None


@dataclass(frozen=True, slots=True)
class Policy:
    """What one tool may reach: ``ports``, and ``private_hosts`` (canonical names or addresses)
    that may be, or resolve to, addresses otherwise out of bounds."""

    ports: frozenset[int] = DEFAULT_PORTS
    private_hosts: frozenset[str] = field(default_factory=frozenset)

    def exempt(self, host: str) -> bool:
        return host in self.private_hosts


def check_url(url: httpx.URL, policy: Policy) -> str:
    """The canonical host of ``url`` when the policy allows requesting it, else Refused."""
    if url.scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs may be requested, not {url.scheme or 'a relative URL'}")
    if url.userinfo:
        raise Refused("a URL with a user name or password before the host (user@host) is refused")
    if not url.host:
        raise Refused("the URL has no host")
    try:
        host = canonical_host(url.host)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    port = url.port or (443 if url.scheme == "https" else 80)
    if port not in policy.ports:
        raise Refused(f"port {port} is not allowed (allowed: {_ports(policy)}; the tool's options add ports)")
    literal = ip_literal(host)
    if literal is not None and not policy.exempt(host) and (why := refusal(literal)):
        raise Refused(f"{host} is {why}")
    return host


def vetted_addresses(
    host: str, port: int, policy: Policy, *, timeout: float | None = None
) -> list[IPAddress]:
    """The addresses to dial for ``host``: resolved once (within ``timeout``), each one checked
    (any refused answer refuses the host: a name that also points inside is not trusted for its
    other answers)."""
    try:
        host = canonical_host(host)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if port not in policy.ports:
        raise Refused(f"port {port} is not allowed (allowed: {_ports(policy)})")
    literal = ip_literal(host)
    if literal is not None:
        found = [literal]
    else:
        answers = _resolve(host, port, timeout)
        found = list(dict.fromkeys(ipaddress.ip_address(str(a[4][0]).split("%")[0]) for a in answers))
    if not policy.exempt(host):
        for address in found:
            if why := refusal(address):
                shown = "is" if literal is not None else f"resolves to {address},"
                raise Refused(f"{host} {shown} {why}")
    return found


def _resolve(host: str, port: int, timeout: float | None) -> list[Any]:
    """``socket.getaddrinfo`` with a time limit (it has none of its own: a resolver that does not
    answer would hold the call past every timeout). The lookup runs in a daemon thread."""
    answers: list[Any] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            answers.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            failure.append(exc)

    worker = threading.Thread(target=lookup, name="stanchion-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise httpcore.ConnectTimeout(f"{host} did not resolve within {timeout:g} s")
    if failure or not answers:
        detail = f" ({failure[0]})" if failure else ""
        raise httpcore.ConnectError(f"{host} does not resolve{detail}")
    return answers


class _PinnedBackend(httpcore.NetworkBackend):
    """Dials the vetted addresses of a host, never its name."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._dialer = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in vetted_addresses(host, port, self._policy, timeout=timeout):
            try:
                return self._dialer.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # vetted_addresses returns at least one address
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise Refused("Unix sockets are not reachable from a tool")

    def sleep(self, seconds: float) -> None:
        self._dialer.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport, dialling through ``_PinnedBackend``: httpx has no parameter for a network
    backend, httpcore's pool has one, so the pool httpx builds is replaced by one built the same
    way (no proxy: a proxy would do its own resolving; no environment: no ``.netrc`` credentials)."""

    def __init__(self, policy: Policy, *, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        context = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify, trust_env=False)
        )
        self._pool = httpcore.ConnectionPool(
            ssl_context=context, max_connections=4, network_backend=_PinnedBackend(policy)
        )


def _ports(policy: Policy) -> str:
    return ", ".join(str(p) for p in sorted(policy.ports))
