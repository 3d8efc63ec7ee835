"""One outbound request for the network tools, within limits, through the SSRF policy.

``fetch`` sends a request and follows redirects itself, so every hop passes ``ssrf.check_url``
and the tool's own ``admit`` (its allow-list) before it is sent, and connects through
``ssrf.PinnedTransport``. It keeps no cookies, sends no credentials but those ``admit`` returns
for that hop, and stops reading as soon as the body passes ``max_bytes`` (decompressed: a small
gzip bomb is stopped too) or the call passes its total time. What went wrong is a
``FetchFailed`` whose message a model can read.
"""

from __future__ import annotations

import codecs
import http.cookiejar
import json
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from stanchion.tools.ssrf import PinnedTransport, Policy, check_url

__all__ = ["FetchFailed", "Fetched", "LimitOptions", "fetch", "media_type", "text_codec"]

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "stanchion-tool/0.1"


class FetchFailed(Exception):
    """The request could not be completed (timeout, size limit, connection); the message says why."""


class LimitOptions(BaseModel):
    """Timeouts and sizes, shared by both network tools' options."""

    model_config = ConfigDict(extra="forbid")

    connect_timeout: float = Field(5.0, gt=0, le=60, description="seconds to open a connection")
    read_timeout: float = Field(10.0, gt=0, le=120, description="seconds of silence while reading")
    total_timeout: float = Field(
        20.0, gt=0, le=300, description="seconds for the whole call, redirects included"
    )
    max_redirects: int = Field(MAX_REDIRECTS, ge=0, le=MAX_REDIRECTS, description="redirects followed")


@dataclass(frozen=True, slots=True)
class Fetched:
    """The final response: ``body`` is None when its media type was not wanted (never read)."""

    url: httpx.URL
    status: int
    reason: str
    media_type: str
    charset: str | None
    body: bytes | None


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Cookies are neither stored nor sent: a call carries no state from another call or hop."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def media_type(response: httpx.Response) -> tuple[str, str | None]:
    """The response's media type (lower case, no parameters; "" when absent) and its charset."""
    value = response.headers.get("content-type", "")
    kind, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip():
            charset = val.strip().strip("\"'")
    return kind.strip().lower(), charset


def text_codec(charset: str | None) -> str:
    """The codec a response's charset names; UTF-8 when it names none or one Python lacks."""
    try:
        return codecs.lookup(charset).name if charset else "utf-8"
    except LookupError:
        return "utf-8"


def fetch(
    method: str,
    url: httpx.URL,
    *,
    policy: Policy,
    limits: LimitOptions,
    max_bytes: int,
    admit: Callable[[str, httpx.URL], Mapping[str, str]],
    wanted: Callable[[str], bool],
    json_body: Any = None,
    accept: str = "*/*",
    clock: Callable[[], float] = time.monotonic,
    verify: ssl.SSLContext | bool = True,
) -> Fetched:
    """Send ``method url`` and follow its redirects (each re-checked); the final response, its
    body read when ``wanted(media_type)`` (an empty media type is wanted: the caller sniffs).
    ``admit(method, url)`` refuses a hop (``ssrf.Refused``) or returns the headers to send on it.
    """
    deadline = clock() + limits.total_timeout
    content = None if json_body is None else json.dumps(json_body, ensure_ascii=False).encode("utf-8")
    base = {"user-agent": _USER_AGENT, "accept": accept, "accept-encoding": "gzip, deflate"}
    if content is not None:
        base["content-type"] = "application/json"
    transport = PinnedTransport(policy, verify=verify)
    with httpx.Client(
        transport=transport, trust_env=False, cookies=http.cookiejar.CookieJar(_NoCookies())
    ) as client:
        for _ in range(limits.max_redirects + 1):
            check_url(url, policy)
            headers = {**base, **admit(method, url)}
            left = deadline - clock()
            if left <= 0:
                raise FetchFailed(f"no answer within {limits.total_timeout:g} s (total_timeout)")
            timeout = httpx.Timeout(
                connect=min(limits.connect_timeout, left),
                read=min(limits.read_timeout, left),
                write=min(limits.read_timeout, left),
                pool=min(limits.connect_timeout, left),
            )
            request = client.build_request(method, url, headers=headers, content=content, timeout=timeout)
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException:
                raise FetchFailed(f"{url.host} did not answer in time") from None
            except httpx.TransportError as exc:
                raise FetchFailed(f"could not reach {url.host}: {exc}") from None
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    try:
                        url = url.join(location)
                    except httpx.InvalidURL as exc:
                        raise FetchFailed(f"redirected to an invalid URL ({exc})") from None
                    if response.status_code == 303 or (
                        response.status_code in (301, 302) and method == "POST"
                    ):
                        method, content = ("HEAD" if method == "HEAD" else "GET"), None
                        base.pop("content-type", None)
                    continue
                kind, charset = media_type(response)
                body = _read(response, max_bytes, deadline, clock, limits) if wanted(kind) else None
                return Fetched(
                    response.url, response.status_code, response.reason_phrase, kind, charset, body
                )
            finally:
                response.close()
    raise FetchFailed(f"more than {limits.max_redirects} redirects")


def _read(
    response: httpx.Response,
    max_bytes: int,
    deadline: float,
    clock: Callable[[], float],
    limits: LimitOptions,
) -> bytes:
    too_big = f"the response is larger than {max_bytes} bytes (the tool's max_bytes)"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes and not response.headers.get("content-encoding"):
        raise FetchFailed(too_big)
    decoder = _decoder(response.headers.get("content-encoding", ""))
    parts: list[bytes] = []
    size = 0
    try:
        for raw in response.iter_raw():
            chunk = raw if decoder is None else decoder.decompress(raw, max_bytes - size + 1)
            if decoder is not None and decoder.unconsumed_tail:
                raise FetchFailed(too_big)
            size += len(chunk)
            if size > max_bytes:
                raise FetchFailed(too_big)
            parts.append(chunk)
            if clock() > deadline:
                raise FetchFailed(f"the response took longer than {limits.total_timeout:g} s (total_timeout)")
        if decoder is not None:
            tail = decoder.flush()
            size += len(tail)
            if size > max_bytes:
                raise FetchFailed(too_big)
            parts.append(tail)
    except httpx.TimeoutException:
        raise FetchFailed("the response stalled (read_timeout)") from None
    except httpx.TransportError as exc:
        raise FetchFailed(f"the connection failed while reading: {exc}") from None
    except zlib.error as exc:
        raise FetchFailed(f"the response's compression is broken ({exc})") from None
    return b"".join(parts)


def _decoder(encoding: str) -> Any:
    """A bounded decompressor for the response's content-encoding (None: not compressed)."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return zlib.decompressobj()
    raise FetchFailed(f"the response's content-encoding {encoding!r} is not supported (gzip and deflate are)")
