"""The loopback HTTP server the network tools' tests talk to (``LoopbackServer``), and a check
that it records what reaches it: the SSRF tests prove a refusal by its empty request log.

A real server on 127.0.0.1 (optionally TLS), one thread per connection. Routes:
``/json`` and ``/v1/...`` echo the request as JSON; ``/status/N`` answers N; ``/text``,
``/binary``, ``/page`` (HTML with chrome and links), ``/latin1``, ``/big`` (declared length), ``/endless``
(chunked, no length), ``/bomb`` (gzip of 20 MB of zeros), ``/slow`` (headers, then nothing until
the test ends), ``/redirect?to=URL&status=N``, ``/cookie`` (sets a cookie, redirects to /json).
"""

from __future__ import annotations

import gzip
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

PAGE = b"""<!doctype html>
<html><head><title>Refund policy - Example Corp</title></head>
<body>
<nav class="navbar"><a href="/">Home</a> <a href="/about">About</a></nav>
<main>
<h1>Refund policy</h1>
<p>Refunds are issued within 14 days of a return. <a href="/returns#form">Start a return</a></p>
<script>var tracking = "do not show";</script>
<p>See also <a href="https://example.org/terms">the terms</a>.</p>
</main>
<footer class="footer">Copyright Example Corp</footer>
</body></html>
"""


class LoopbackServer:
    """A live server; ``requests`` logs (method, path, headers, body) of each request received."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.sni: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def do_PUT(self) -> None:
                self._handle()

            def do_DELETE(self) -> None:
                self._handle()

            def _send(self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                record = {
                    "method": self.command,
                    "path": parts.path,
                    "query": query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(raw) if raw else None,
                }
                server.requests.append(record)
                route = parts.path
                if route == "/json" or route.startswith("/v1/"):
                    self._send(200, json.dumps(record).encode(), "application/json")
                elif route.startswith("/status/"):
                    code = int(route.rsplit("/", 1)[1])
                    self._send(code, json.dumps({"error": f"status {code}"}).encode(), "application/json")
                elif route == "/text":
                    self._send(200, "plain words, café".encode(), "text/plain; charset=utf-8")
                elif route == "/binary":
                    self._send(200, b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png")
                elif route == "/binary-error":
                    self._send(500, b"\x89PNG" + bytes(16), "image/png")
                elif route == "/page":
                    self._send(200, PAGE, "text/html; charset=utf-8")
                elif route == "/latin1":
                    page = "<html><head><title>Café</title></head><body><p>Crème brûlée</p></body></html>"
                    self._send(200, page.encode("latin-1"), "text/html; charset=iso-8859-1")
                elif route == "/big":
                    self._send(200, b"a" * 200_000, "text/plain")
                elif route == "/endless":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"b" * 16_384
                    try:
                        for _ in range(2_000):  # 32 MB if nobody stops reading
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.write(b"0\r\n\r\n")
                    except OSError:
                        pass  # the client hung up: what the size limit should do
                elif route == "/bomb":
                    body = gzip.compress(bytes(20_000_000))
                    self._send(200, body, "text/plain", {"Content-Encoding": "gzip"})
                elif route == "/slow":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.flush()
                    server.release.wait(30)
                    self.wfile.write(b"{}")
                elif route == "/redirect":
                    status = int(query.get("status", "302"))
                    self._send(status, b"", "text/plain", {"Location": query["to"]})
                elif route == "/cookie":
                    self._send(
                        302, b"", "text/plain", {"Set-Cookie": "session=abc123; Path=/", "Location": "/json"}
                    )
                else:
                    self._send(404, b"not found", "text/plain")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if ssl_context is not None:
            ssl_context.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment]
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.base = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serving(ssl_context: ssl.SSLContext | None = None) -> Iterator[LoopbackServer]:
    server = LoopbackServer(ssl_context)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class TestLoopbackServer:
    def test_records_each_request(self) -> None:
        """The request log holds what arrived (the SSRF tests rely on it staying empty)."""
        with serving() as server:
            answer = httpx.get(server.url("/json?a=1"), headers={"X-Probe": "yes"}, trust_env=False)
            assert answer.status_code == 200
            assert server.requests[0]["query"] == {"a": "1"}
            assert server.requests[0]["headers"]["x-probe"] == "yes"
            assert httpx.get(server.url("/status/503"), trust_env=False).status_code == 503
            assert len(server.requests) == 2
