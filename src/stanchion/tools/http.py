"""``http``: API endpoints the spec allows, called by a model.

Each endpoint is allowed by method, host (exact, or ``*.suffix`` for any subdomain), port and path
(a glob where ``*`` stays within one segment and ``**`` crosses them, or ``re:`` and a regular
expression; both must match the whole path). Secrets never sit in the spec: a header's value comes
from the environment variable the spec names, is sent only to the endpoint that declares it, and
is replaced by ``[redacted]`` if a response echoes it. The model cannot add headers, so no
credential of its caller is forwarded; no cookies are kept. The response comes back whatever its
status (a 404 is an answer the model can act on) when it is JSON or text; binary is refused. Every
request, redirects included, goes through ``ssrf`` (see there); an endpoint marked ``private``
may be an internal host.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import httpx
import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stanchion.errors import ToolError
from stanchion.request_context import RequestContext
from stanchion.retrieve.search import Retriever
from stanchion.tools.base import ToolResult, parse_arguments
from stanchion.tools.http_fetch import Fetched, FetchFailed, LimitOptions, fetch, text_codec
from stanchion.tools.ssrf import DEFAULT_PORTS, Policy, Refused, canonical_host, host_matches, host_pattern
from stanchion.types import ToolSpec

__all__ = ["HttpOptions", "HttpTool", "build"]

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "cookie"})
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SUSPICIOUS_PATH = re.compile(r"%2f|%5c|%2e|\\", re.IGNORECASE)
QueryValue = str | int | float | bool


class SecretHeader(BaseModel):
    """A header whose value is read from the environment variable ``env``, after ``prefix``."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field(pattern=_ENV_NAME, description="the environment variable that holds the value")
    prefix: str = Field("", description='put before the value, e.g. "Bearer "')

    @field_validator("env")
    @classmethod
    def _is_set(cls, name: str) -> str:
        if not os.environ.get(name):
            raise ValueError(f"environment variable {name} is not set (the header's value comes from it)")
        return name


class Endpoint(BaseModel):
    """One allowed API endpoint."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    method: Method = "GET"
    scheme: Literal["https", "http"] = "https"
    host: str = Field(description="exact host, or *.example.com for any subdomain of example.com")
    port: int | None = Field(None, ge=1, le=65535, description="default: the scheme's")
    path: str = Field(description="glob (* within a segment, ** across) or re:REGEX; matches the whole path")
    headers: dict[str, SecretHeader] = Field(default_factory=dict)
    query_schema: dict[str, Any] | None = Field(None, description="JSON schema of the query parameters")
    body_schema: dict[str, Any] | None = Field(None, description="JSON schema of the JSON body")
    private: bool = Field(False, description="the host may be internal (loopback, private): exact hosts only")
    description: str = ""

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return host_pattern(value)  # a ValueError names the problem

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        _path_pattern(value)  # compiles, or a ValueError naming the problem
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretHeader]) -> dict[str, SecretHeader]:
        for name in value:
            if not _HEADER_NAME.fullmatch(name) or name.lower() in _RESERVED_HEADERS:
                raise ValueError(
                    f"{name!r} cannot be set here (a header name, not {sorted(_RESERVED_HEADERS)})"
                )
        return value

    @field_validator("query_schema", "body_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(value)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return value

    @model_validator(mode="after")
    def _private_is_exact(self) -> Endpoint:
        if self.private and self.host.startswith("*."):
            raise ValueError(f"endpoint {self.name}: private: true needs an exact host, not {self.host}")
        return self

    @property
    def default_port(self) -> int:
        return self.port or (443 if self.scheme == "https" else 80)

    def shown(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.method} {self.scheme}://{self.host}{port}{self.path}"

    def matches(self, method: str, url: httpx.URL, host: str, path: str) -> bool:
        if method != self.method or url.scheme != self.scheme:
            return False
        if (url.port or (443 if url.scheme == "https" else 80)) != self.default_port:
            return False
        return host_matches(self.host, host) and _path_pattern(self.path).fullmatch(path) is not None


class HttpOptions(LimitOptions):
    """``tools.<name>.options`` of an ``http`` tool."""

    description: str = Field("", description="what the model is told the tool is for")
    endpoints: list[Endpoint] = Field(min_length=1)
    ports: list[int] = Field(default_factory=list, description="ports besides 80, 443 and the endpoints' own")
    max_bytes: int = Field(1_000_000, ge=1, le=50_000_000, description="largest response body read")
    max_chars: int = Field(20_000, ge=100, le=1_000_000, description="longest text shown to the model")

    @model_validator(mode="after")
    def _unique_names(self) -> HttpOptions:
        names = [e.name for e in self.endpoints]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"endpoint names must be unique: {', '.join(dupes)}")
        return self


class HttpArguments(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    endpoint: str | None = Field(None, description="an endpoint's name (with path, instead of url)")
    method: Method | None = Field(None, description="default: the endpoint's method, or GET")
    url: str | None = Field(None, max_length=4096, description="the full URL to call")
    path: str | None = Field(None, max_length=4096, description="with endpoint: the path (and query) to call")
    query: dict[str, QueryValue | list[QueryValue]] = Field(
        default_factory=dict, description="query parameters, added to the URL's"
    )
    body: Any = Field(None, alias="json", description="a JSON body, for POST, PUT and PATCH")


class HttpTool:
    """Calls the allowed endpoints for a model; see the module's docstring."""

    def __init__(
        self,
        options: HttpOptions,
        *,
        name: str = "http",
        clock: Callable[[], float] = time.monotonic,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.options = options
        self._clock = clock
        self._verify = verify
        ports = {*DEFAULT_PORTS, *options.ports, *(e.default_port for e in options.endpoints)}
        private = frozenset(e.host for e in options.endpoints if e.private)
        self.policy = Policy(ports=frozenset(ports), private_hosts=private)
        listing = "\n".join(
            f"- {e.name}: {e.shown()}" + (f" ({e.description})" if e.description else "")
            for e in options.endpoints
        )
        self.spec = _spec(name, options.description, listing)

    def call(self, arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        args = parse_arguments(self.spec.name, HttpArguments, arguments)
        name = self.spec.name
        try:
            method, url, first = self._target(args)
            _validate_payload(first, url, args)
            fetched = fetch(
                method,
                url,
                policy=self.policy,
                limits=self.options,
                max_bytes=self.options.max_bytes,
                admit=self._admitter(first),
                wanted=_is_text,
                json_body=args.body,
                accept="application/json, text/*;q=0.9, */*;q=0.1",
                clock=self._clock,
                verify=self._verify,
            )
        except (Refused, FetchFailed) as exc:
            raise ToolError(str(exc), tool=name) from None
        return self._result(fetched)

    def _target(self, args: HttpArguments) -> tuple[str, httpx.URL, Endpoint]:
        """The method and URL to call first, and the endpoint that allows it."""
        chosen = None
        if args.endpoint is not None:
            chosen = next((e for e in self.options.endpoints if e.name == args.endpoint), None)
            if chosen is None:
                known = ", ".join(e.name for e in self.options.endpoints)
                raise Refused(f"no endpoint named {args.endpoint!r}; endpoints: {known}")
        method = args.method or (chosen.method if chosen else "GET")
        if args.url is not None and args.path is not None:
            raise Refused("give url, or endpoint and path, not both")
        if args.url is not None:
            text = args.url
        elif chosen is not None:
            text = _endpoint_url(chosen, args.path)
        else:
            raise Refused("give url, or endpoint and path")
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL as exc:
            raise Refused(f"invalid URL {text!r} ({exc})") from None
        if args.query:
            url = url.copy_merge_params(dict(args.query))
        if args.body is not None and method not in _BODY_METHODS:
            raise Refused(f"a json body is sent only with POST, PUT or PATCH, not {method}")
        found = self._endpoint_for(method, url, only=chosen)
        return method, url, found

    def _endpoint_for(self, method: str, url: httpx.URL, *, only: Endpoint | None = None) -> Endpoint:
        if url.userinfo:
            raise Refused("a URL with a user name or password before the host (user@host) is refused")
        try:
            host = canonical_host(url.host)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        path = _checked_path(url)
        candidates = [only] if only is not None else self.options.endpoints
        for endpoint in candidates:
            if endpoint.matches(method, url, host, path):
                return endpoint
        allowed = "; ".join(e.shown() for e in candidates)
        shown = url.copy_with(query=None, fragment=None)
        raise Refused(f"{method} {shown} matches no allowed endpoint (allowed: {allowed})")

    def _admitter(self, first: Endpoint) -> Callable[[str, httpx.URL], Mapping[str, str]]:
        """Each hop's check: the first is the endpoint already found; a redirect must land on an
        allowed endpoint too, and gets that endpoint's headers only."""
        hops = 0

        def admit(method: str, url: httpx.URL) -> Mapping[str, str]:
            nonlocal hops
            endpoint = first if hops == 0 else self._endpoint_for(method, url)
            hops += 1
            return _header_values(endpoint)

        return admit

    def _result(self, fetched: Fetched) -> ToolResult:
        head = f"HTTP {fetched.status} {fetched.reason}".rstrip()
        data: dict[str, Any] = {
            "status": fetched.status,
            "url": str(fetched.url),
            "content_type": fetched.media_type,
        }
        if fetched.body is None:
            if fetched.status < 400:
                raise ToolError(
                    f"the response is {fetched.media_type}, which is not returned (JSON and text only)",
                    tool=self.spec.name,
                )
            return ToolResult(f"{head}\n({fetched.media_type} body not shown)", data)
        if b"\x00" in fetched.body[:4096]:
            raise ToolError(
                "the response is binary, which is not returned (JSON and text only)", tool=self.spec.name
            )
        text = _redact(
            fetched.body.decode(text_codec(fetched.charset), errors="replace"), self._secret_values()
        )
        parsed = _json_or_none(text) if "json" in fetched.media_type or not fetched.media_type else None
        data["json" if parsed is not None else "text"] = parsed if parsed is not None else text
        limit = self.options.max_chars
        shown = (
            text if len(text) <= limit else f"{text[:limit]}\n[truncated: {limit} of {len(text)} characters]"
        )
        kind = f"\ncontent-type: {fetched.media_type}" if fetched.media_type else ""
        return ToolResult(f"{head}{kind}\n\n{shown}", data)

    def _secret_values(self) -> list[str]:
        return [
            v for e in self.options.endpoints for h in e.headers.values() if (v := os.environ.get(h.env, ""))
        ]


def build(name: str, options: Mapping[str, Any], *, retriever: Callable[[], Retriever]) -> HttpTool:
    """The ``stanchion.tools`` entry point; bad options are a pydantic ValidationError, which the
    spec's loader reports under ``tools.<name>.options``."""
    return HttpTool(HttpOptions.model_validate(dict(options)), name=name)


def _spec(name: str, description: str, listing: str) -> ToolSpec:
    text = description or "Call an allowed HTTP API and read its response (status, JSON or text)."
    return ToolSpec(
        name,
        f"{text}\nAllowed endpoints (method, URL pattern):\n{listing}",
        HttpArguments.model_json_schema(by_alias=True),
    )


def _path_pattern(pattern: str) -> re.Pattern[str]:
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"path {pattern!r}: bad regular expression ({exc})") from None
    if not pattern.startswith("/"):
        raise ValueError(f"path {pattern!r} must start with / (or be re:REGEX)")
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    wild = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(p, re.escape(p)) for p in parts))


def _endpoint_url(endpoint: Endpoint, path: str | None) -> str:
    if endpoint.host.startswith("*."):
        raise Refused(
            f"endpoint {endpoint.name} allows any host under {endpoint.host[2:]}: give the full url"
        )
    if path is None:
        if endpoint.path.startswith("re:") or any(c in endpoint.path for c in "*?"):
            raise Refused(f"endpoint {endpoint.name} needs a path matching {endpoint.path}")
        path = endpoint.path
    if not path.startswith("/"):
        raise Refused(f"path must start with /, got {path!r}")
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    port = f":{endpoint.port}" if endpoint.port else ""
    return f"{endpoint.scheme}://{host}{port}{path}"


def _checked_path(url: httpx.URL) -> str:
    raw = url.raw_path.split(b"?", 1)[0].decode("ascii", errors="replace")
    if _SUSPICIOUS_PATH.search(raw):
        raise Refused("encoded slashes, dots or backslashes in the path are refused")
    if any(segment in (".", "..") for segment in url.path.split("/")):
        raise Refused("'.' and '..' path segments are refused")
    return url.path


def _validate_payload(endpoint: Endpoint, url: httpx.URL, args: HttpArguments) -> None:
    """The query and body against the endpoint's schemas, when it declares them."""
    if endpoint.query_schema is not None:
        query: dict[str, Any] = dict(url.params.multi_items())
        query.update(args.query)
        _check(endpoint.query_schema, query, "query")
    if endpoint.body_schema is not None:
        _check(endpoint.body_schema, args.body, "json")


def _check(schema: dict[str, Any], value: Any, where: str) -> None:
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        problems = "; ".join(f"{where}{''.join(f'.{p}' for p in e.path)}: {e.message}" for e in errors[:5])
        raise Refused(problems)


def _header_values(endpoint: Endpoint) -> dict[str, str]:
    values = {}
    for header, secret in endpoint.headers.items():
        value = os.environ.get(secret.env)
        if not value:
            raise Refused(
                f"endpoint {endpoint.name} cannot authenticate now (its credentials are not configured)"
            )
        values[header] = secret.prefix + value
    return values


def _is_text(media: str) -> bool:
    return (
        not media
        or media.startswith("text/")
        or media in ("application/json", "application/xml", "application/x-ndjson")
        or media.endswith(("+json", "+xml"))
    )


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text
