"""A closed-loop load generator for OpenAI-compatible chat completions, cheap enough for 1,000+ users.

Each virtual user holds one keep-alive connection and loops until the run ends: send one chat
completion, read the whole answer, send the next. A run spreads the users' first requests over
the warm-up, so they do not stay in lock-step, and measures only what completes after it::

    result = run_load(LoadConfig(url="http://127.0.0.1:8080/v1", users=1000, duration_s=20, warmup_s=3))
    print(result.rps, result.latency_ms.p99, result.ttft_ms.p50)

Why not httpx: at this concurrency its per-request machinery costs more CPU than the server under
test spends, so the client would be measured. Here each connection is an ``asyncio.Protocol`` that
parses HTTP/1.1 (Content-Length or chunked) and SSE lines as bytes arrive, in callbacks: no task
per request, no coroutine per chunk, one timer per request for its time limit. JSON is parsed only
until the first chunk with content, which stamps the time to first token.

What counts: requests that end within the measured window (after the warm-up, before the end);
requests still in flight at the end are abandoned, as wrk does. ``rps`` counts every request that
ended in the window, failed or not; latency and TTFT percentiles cover successful ones only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

__all__ = [
    "LoadConfig",
    "LoadResult",
    "Percentiles",
    "raise_fd_limit",
    "run_load",
    "run_load_async",
    "unique_prompt",
]

_DEFAULT_PROMPT = "In two sentences, what does a stanchion do?"
# After a failure a user waits this long before retrying, so a dead target does not spin the client.
_ERROR_PAUSE_S = 0.01
# Descriptors beyond one per user: the loop, stdio, a subprocess's pipes, the odd log file.
_FD_HEADROOM = 256


@dataclass(frozen=True)
class LoadConfig:
    """One load run. ``url`` is a base URL (``.../v1``) or the full chat completions URL."""

    url: str
    users: int = 10
    duration_s: float = 10.0
    warmup_s: float = 0.0
    stream: bool = True
    model: str = "fake-model"
    api_key: str | None = field(default=None, repr=False)
    prompt: str = _DEFAULT_PROMPT
    max_tokens: int | None = None
    timeout_s: float = 60.0
    # Each request asks "Ticket N: <prompt>" with its own N, so no two requests are the same (a
    # response cache in front then misses every time); otherwise every user sends one prompt.
    unique_prompts: bool = False

    def __post_init__(self) -> None:
        if self.users < 1 or self.duration_s <= 0 or self.warmup_s < 0 or self.timeout_s <= 0:
            raise ValueError("users must be >= 1, duration_s and timeout_s > 0, warmup_s >= 0")


@dataclass(frozen=True)
class Percentiles:
    """Milliseconds at the 50th, 95th and 99th percentiles; NaN when there were no samples."""

    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Percentiles:
        values = sorted(seconds)
        return cls(*(_percentile(values, q) * 1000.0 for q in (0.50, 0.95, 0.99)))

    def to_dict(self) -> dict[str, float | None]:
        """Rounded to 0.1 ms; NaN becomes None so the dict stays valid JSON."""
        return {k: (None if math.isnan(v) else round(v, 1)) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class LoadResult:
    """What a run measured. ``client_cpu_pct`` is this process's CPU over the run (100 = one core)."""

    users: int
    requests: int
    errors: int
    error_kinds: dict[str, int]
    duration_s: float
    rps: float
    latency_ms: Percentiles
    ttft_ms: Percentiles | None
    client_cpu_pct: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "requests": self.requests,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "duration_s": round(self.duration_s, 3),
            "rps": round(self.rps, 1),
            "latency_ms": self.latency_ms.to_dict(),
            "ttft_ms": self.ttft_ms.to_dict() if self.ttft_ms is not None else None,
            "client_cpu_pct": round(self.client_cpu_pct, 1),
        }


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) over sorted ``values``."""
    if not values:
        return math.nan
    pos = (len(values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (pos - low)


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE to ``wanted`` (one descriptor per user); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise ValueError(
            f"{wanted} open files are needed but the hard limit is {hard}; raise it (ulimit -Hn) or use fewer users"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


# --- the wire ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """Where the users connect, and the request they send: encoded once, or per request with
    ``unique_prompts``."""

    host: str
    port: int
    request: bytes
    config: LoadConfig
    path: str
    numbers: Iterator[int] = field(default_factory=itertools.count)

    def next_request(self) -> bytes:
        if not self.config.unique_prompts:
            return self.request
        return _encode(
            self.config,
            self.host,
            self.port,
            self.path,
            unique_prompt(self.config.prompt, next(self.numbers)),
        )


def unique_prompt(prompt: str, n: int) -> str:
    """The ``n``-th request's prompt under ``unique_prompts``."""
    return f"Ticket {10_000 + n}: {prompt}"


def _target(config: LoadConfig) -> _Target:
    """Parse the URL and encode the one request every user sends, once."""
    parts = urlsplit(config.url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only plain http:// URLs are supported, not {config.url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    port = parts.port or 80
    request = _encode(config, parts.hostname, port, path, config.prompt)
    return _Target(parts.hostname, port, request, config, path)


def _encode(config: LoadConfig, host: str, port: int, path: str, prompt: str) -> bytes:
    body: dict[str, Any] = {"model": config.model, "messages": [{"role": "user", "content": prompt}]}
    if config.stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    if config.max_tokens is not None:
        body["max_tokens"] = config.max_tokens
    payload = json.dumps(body).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Accept: {'text/event-stream' if config.stream else 'application/json'}",
        f"Content-Length: {len(payload)}",
    ]
    if config.api_key:
        head.append(f"Authorization: Bearer {config.api_key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: int
    ttft: float | None  # perf_counter() when the first content arrived
    saw_done: bool


def _has_content(payload: bytes) -> bool:
    """Whether an SSE data payload is a chunk carrying answer text (not the opening role delta)."""
    try:
        chunk = json.loads(payload)
        return bool(chunk["choices"][0]["delta"].get("content"))
    except (ValueError, LookupError, TypeError, AttributeError):
        return False


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that parses each response in ``data_received``.

    Phases: ``idle`` -> ``head`` -> one of ``length`` (Content-Length), ``chunk-size`` /
    ``chunk-data`` / ``chunk-end`` / ``trailer`` (chunked) or ``until-close`` -> ``idle``.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._phase = "idle"
        self._remaining = 0
        self._status = 0
        self._keep_alive = True
        self._tail = b""
        self._ttft: float | None = None
        self._saw_done = False
        self._waiter: asyncio.Future[_Outcome] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._steps: dict[str, Callable[[int], int | None]] = {
            "head": self._head,
            "length": self._length,
            "until-close": self._until_close,
            "chunk-size": self._chunk_size,
            "chunk-data": self._chunk_data,
            "chunk-end": self._chunk_end,
            "trailer": self._trailer,
        }

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports do not subclass asyncio.Transport, but they are one.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._phase == "until-close":
            self._complete()
        elif self._phase != "idle":
            self._fail(exc or ConnectionResetError("the server closed the connection mid-response"))

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle":
            return  # nothing asked for; a server should not talk first
        self._buf += data
        try:
            pos = self._parse(0)
        except (ValueError, IndexError) as exc:
            self._fail(_ProtocolError(f"malformed response: {exc}"))
            return
        del self._buf[:pos]

    # requests

    def exchange(self, request: bytes, timeout_s: float) -> asyncio.Future[_Outcome]:
        """Send ``request``; the future resolves once the whole response has arrived."""
        assert self._transport is not None and self._phase == "idle"
        self._waiter = self._loop.create_future()
        self._buf.clear()
        self._phase = "head"
        self._ttft = None
        self._saw_done = False
        self._tail = b""
        self._timer = self._loop.call_later(timeout_s, self._fail, TimeoutError("no complete answer in time"))
        self._transport.write(request)
        return self._waiter

    def close(self) -> None:
        self._settle()
        if self._transport is not None:
            self._transport.close()

    def _complete(self) -> None:
        self._phase = "idle"
        self._settle()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(_Outcome(self._status, self._ttft, self._saw_done))
        if not self._keep_alive:
            self.close()

    def _fail(self, exc: BaseException) -> None:
        self._phase = "idle"
        self._settle()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()  # the connection's state is unknown now: never reuse it

    def _settle(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # the parser: each step consumes from ``pos`` and returns the new position

    def _parse(self, pos: int) -> int:
        while self._phase != "idle":
            new = self._steps[self._phase](pos)
            if new is None:
                return pos  # need more bytes
            pos = new
        return pos

    def _head(self, pos: int) -> int | None:
        end = self._buf.find(b"\r\n\r\n", pos)
        if end < 0:
            return None
        lines = bytes(self._buf[pos:end]).decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ", 2)[:2]
        self._status = int(status)
        if 100 <= self._status < 200:
            return end + 4  # an interim response (100 Continue): the real one follows
        self._keep_alive = version == "HTTP/1.1"
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                self._keep_alive = value.strip().lower() != "close"
        if chunked:
            self._phase = "chunk-size"
        elif length is not None:
            self._phase, self._remaining = "length", length
            if length == 0:
                self._complete()
        else:
            self._phase, self._keep_alive = "until-close", False
        return end + 4

    def _take_body(self, pos: int) -> int | None:
        """Hand up to ``_remaining`` buffered body bytes to ``_body``; None when none are buffered."""
        take = min(len(self._buf) - pos, self._remaining)
        if take <= 0:
            return None
        self._body(self._buf[pos : pos + take])
        self._remaining -= take
        return pos + take

    def _length(self, pos: int) -> int | None:
        end = self._take_body(pos)
        if end is not None and self._remaining == 0:
            self._complete()
        return end

    def _until_close(self, pos: int) -> int | None:
        """A body without length ends when the server hangs up (``connection_lost`` completes it)."""
        if len(self._buf) == pos:
            return None
        self._body(self._buf[pos:])
        return len(self._buf)

    def _chunk_size(self, pos: int) -> int | None:
        end = self._buf.find(b"\r\n", pos)
        if end < 0:
            return None
        size = int(bytes(self._buf[pos:end]).split(b";", 1)[0], 16)
        self._phase, self._remaining = ("trailer", 0) if size == 0 else ("chunk-data", size)
        return end + 2

    def _chunk_data(self, pos: int) -> int | None:
        end = self._take_body(pos)
        if end is not None and self._remaining == 0:
            self._phase = "chunk-end"
        return end

    def _chunk_end(self, pos: int) -> int | None:
        if len(self._buf) - pos < 2:
            return None
        self._phase = "chunk-size"
        return pos + 2

    def _trailer(self, pos: int) -> int | None:
        end = self._buf.find(b"\r\n", pos)
        if end < 0:
            return None
        if end == pos:  # the blank line that ends a chunked body
            self._complete()
        return end + 2

    def _body(self, data: bytearray) -> None:
        """Scan SSE lines for the first content chunk and ``[DONE]``; a plain JSON body needs nothing."""
        if self._status != 200:
            return
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self._saw_done = True
            elif self._ttft is None and _has_content(payload):
                self._ttft = time.perf_counter()


class _ProtocolError(Exception):
    """The response could not be parsed as HTTP/1.1."""


# --- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sample:
    end: float
    latency: float
    ttft: float | None
    error: str | None


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, _ProtocolError):
        return "protocol"
    return type(exc).__name__


def _outcome_error(outcome: _Outcome, stream: bool) -> str | None:
    if outcome.status != 200:
        return f"http_{outcome.status}"
    if stream and not outcome.saw_done:
        return "incomplete_stream"
    return None


class _Run:
    """The users of one run and the samples they record."""

    def __init__(self, config: LoadConfig, target: _Target) -> None:
        self.config = config
        self.target = target
        self.samples: list[_Sample] = []
        self.connections: set[_Connection] = set()

    async def user(self, delay: float, deadline: float) -> None:
        await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        while loop.time() < deadline:
            start = time.perf_counter()
            error: str | None = None
            ttft: float | None = None
            try:
                if conn is None or not conn.open:
                    conn = await self._connect()
                outcome = await conn.exchange(self.target.next_request(), self.config.timeout_s)
                error = _outcome_error(outcome, self.config.stream)
                ttft = outcome.ttft
            except (OSError, _ProtocolError) as exc:  # TimeoutError is an OSError
                error = _error_kind(exc)
            end = time.perf_counter()
            self.samples.append(_Sample(end, end - start, None if ttft is None else ttft - start, error))
            if error is not None:
                await asyncio.sleep(_ERROR_PAUSE_S)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.target.host, self.target.port)
        self.connections.add(conn)
        return conn

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


async def run_load_async(config: LoadConfig) -> LoadResult:
    """Run the load on the running event loop (prefer ``run_load``, which picks uvloop)."""
    raise_fd_limit(config.users + _FD_HEADROOM)
    run = _Run(config, _target(config))
    loop = asyncio.get_running_loop()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = loop.time() + config.warmup_s + config.duration_s
    tasks = [
        asyncio.create_task(run.user(config.warmup_s * i / config.users, deadline))
        for i in range(config.users)
    ]
    try:
        await asyncio.sleep(config.warmup_s)
        window_start = time.perf_counter()
        await asyncio.sleep(config.duration_s)
        window_end = time.perf_counter()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        run.close()
        await asyncio.sleep(0)  # let the transports' close callbacks run
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0) * 100.0
    return _summarize(config, run.samples, window_start, window_end, cpu)


def _summarize(
    config: LoadConfig, samples: list[_Sample], start: float, end: float, cpu_pct: float
) -> LoadResult:
    window = [s for s in samples if start <= s.end <= end]
    ok = [s for s in window if s.error is None]
    errors = Counter(s.error for s in window if s.error is not None)
    ttfts = [s.ttft for s in ok if s.ttft is not None]
    return LoadResult(
        users=config.users,
        requests=len(window),
        errors=sum(errors.values()),
        error_kinds=dict(errors.most_common()),
        duration_s=end - start,
        rps=len(window) / (end - start),
        latency_ms=Percentiles.of(s.latency for s in ok),
        ttft_ms=Percentiles.of(ttfts) if config.stream else None,
        client_cpu_pct=cpu_pct,
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_load(config: LoadConfig) -> LoadResult:
    """Run the load on a fresh event loop (uvloop when installed) and return what it measured."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(run_load_async(config))
