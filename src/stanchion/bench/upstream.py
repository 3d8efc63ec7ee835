"""A fake OpenAI-compatible upstream built to carry thousands of concurrent streams.

It answers every chat completion after a fixed time to first token, then at a steady token rate,
so that what a benchmark measures is the client or the gateway in front, never this server::

    with UpstreamServer(ttft_s=0.5, tokens_per_s=20, tokens=32) as up:
        run_load(LoadConfig(url=up.url, users=1000, duration_s=20))

It is a raw ``asyncio.Protocol`` (on uvloop when installed) with a minimal HTTP/1.1 parser and
keep-alive: each token is one timer callback and one socket write, no coroutine and no framework,
which holds 2,000+ streams on one core. By default it runs in a subprocess, so it does not share a
GIL with the load generator that measures through it; ``mode="thread"`` keeps it in-process.

Endpoints: ``POST /v1/chat/completions`` (plain, or SSE with ``"stream": true``; a final ``usage``
chunk when ``stream_options.include_usage`` is set) and ``GET /v1/models``. A non-streamed answer
arrives when its last token would have: ``ttft_s + (tokens - 1) / tokens_per_s``. A request's
``max_tokens`` (or ``max_completion_tokens``) caps the number of tokens.

Run it alone with ``python -m stanchion.bench.upstream --port 8001`` (or the file as a script).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

__all__ = ["UpstreamConfig", "UpstreamServer", "serve_upstream"]

_WORDS = ("Stanchion", " serves", " answers", " from", " private", " data", " with", " sources", ".")
_READY = "upstream listening on "
# The subprocess runs this file as a script: it needs only the standard library (and uvloop), so it
# starts in a tenth of a second and does not import the rest of the package.
_SCRIPT = str(Path(__file__).resolve())
_MAX_HEAD = 64 * 1024
_MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True)
class UpstreamConfig:
    """How the fake model answers: ``ttft_s`` to the first token, then ``tokens_per_s``."""

    ttft_s: float = 0.5
    tokens_per_s: float = 20.0
    tokens: int = 32
    model: str = "fake-model"

    def __post_init__(self) -> None:
        if self.ttft_s < 0 or self.tokens_per_s <= 0 or self.tokens < 1:
            raise ValueError("ttft_s must be >= 0, tokens_per_s > 0 and tokens >= 1")


# --- wire format -------------------------------------------------------------------------------


def _token_text(i: int) -> str:
    return _WORDS[i % len(_WORDS)]


# Each token's JSON-encoded text, computed once: a stream then only concatenates bytes.
_TOKEN_JSON = tuple(json.dumps(_token_text(i)).encode() for i in range(len(_WORDS)))


def _chunked(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk (streams use chunked encoding so that connections stay alive)."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _response(status: int, reason: str, body: bytes, *, keep_alive: bool) -> bytes:
    connection = b"keep-alive" if keep_alive else b"close"
    head = b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: %b\r\n\r\n"
    return head % (status, reason.encode(), len(body), connection) + body


def _error(status: int, reason: str, message: str, *, keep_alive: bool) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": None}})
    return _response(status, reason, body.encode(), keep_alive=keep_alive)


def _prompt_tokens(body: dict[str, Any]) -> int:
    """Words in the messages: a rough count, as a real server's would be exact but not cheaper."""
    count = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            count += len(content.split())
    return max(count, 1)


def _answer_tokens(body: dict[str, Any], config: UpstreamConfig) -> int:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and limit >= 1:
        return min(limit, config.tokens)
    return config.tokens


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Stream:
    """The chunks of one streamed answer, built from a per-request prefix and the token texts."""

    def __init__(self, request_id: str, model: str, created: int) -> None:
        self._base = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}
        prefix = json.dumps(self._base, separators=(",", ":"))[:-1]
        self._head = b"data: " + prefix.encode() + b',"choices":[{"index":0,"delta":{"content":'
        self._tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def first(self) -> bytes:
        """OpenAI opens with an empty assistant delta; it goes out together with the first token."""
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return _sse({**self._base, "choices": [choice]})

    def token(self, i: int) -> bytes:
        return self._head + _TOKEN_JSON[i % len(_TOKEN_JSON)] + self._tail

    def last(self, usage: dict[str, int] | None) -> bytes:
        choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
        out = _sse({**self._base, "choices": [choice]})
        if usage is not None:
            out += _sse({**self._base, "choices": [], "usage": usage})
        return out + b"data: [DONE]\n\n"


def _completion(request_id: str, model: str, created: int, n: int, usage: dict[str, int]) -> bytes:
    text = "".join(_token_text(i) for i in range(n))
    message = {"role": "assistant", "content": text, "refusal": None}
    body = {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage,
    }
    return json.dumps(body, separators=(",", ":")).encode()


# --- the server --------------------------------------------------------------------------------


@dataclass
class _Request:
    method: str
    path: str
    keep_alive: bool
    body: bytes


def _parse_head(head: bytes) -> tuple[str, str, bool, int]:
    """Method, path, keep-alive and Content-Length of a request head (without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    method, path, version = lines[0].split(" ", 2)
    keep_alive = version == "HTTP/1.1"
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            keep_alive = value.strip().lower() != "close"
        elif name == "transfer-encoding":
            raise ValueError("chunked request bodies are not supported")
    return method, path.split("?", 1)[0], keep_alive, length


class _Connection(asyncio.Protocol):
    """One client connection; requests are answered one at a time, in order (no pipelining)."""

    def __init__(self, config: UpstreamConfig) -> None:
        self._config = config
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports do not subclass asyncio.Transport, but they are one.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        # A client that hangs up mid-stream stops its timers: nothing writes to a closed socket.
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._next_request()

    def _next_request(self) -> None:
        request = self._take_request()
        if request is not None:
            self._busy = True
            self._handle(request)

    def _take_request(self) -> _Request | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                self._reply_and_close(431, "Request Header Fields Too Large")
            return None
        try:
            method, path, keep_alive, length = _parse_head(bytes(self._buffer[:end]))
        except ValueError:
            self._reply_and_close(400, "Bad Request")
            return None
        if length > _MAX_BODY:
            self._reply_and_close(413, "Content Too Large")
            return None
        if len(self._buffer) < end + 4 + length:
            return None
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        return _Request(method, path, keep_alive, body)

    def _reply_and_close(self, status: int, reason: str) -> None:
        self._buffer.clear()
        if self._transport is not None:
            self._transport.write(_error(status, reason, reason, keep_alive=False))
            self._transport.close()

    def _finish(self, data: bytes, keep_alive: bool) -> None:
        """Write the end of a response, then serve whatever the client sent meanwhile."""
        self._timer = None
        if self._transport is None:
            return
        self._transport.write(data)
        self._busy = False
        if not keep_alive:
            self._transport.close()
        elif self._buffer:
            self._next_request()

    def _handle(self, request: _Request) -> None:
        keep = request.keep_alive
        if request.method == "GET" and request.path == "/v1/models":
            model = {"id": self._config.model, "object": "model", "owned_by": "stanchion"}
            body = json.dumps({"object": "list", "data": [model]}).encode()
            self._finish(_response(200, "OK", body, keep_alive=keep), keep)
        elif request.path != "/v1/chat/completions":
            self._finish(_error(404, "Not Found", f"no route {request.path}", keep_alive=keep), keep)
        elif request.method != "POST":
            self._finish(_error(405, "Method Not Allowed", "use POST", keep_alive=keep), keep)
        else:
            self._chat(request.body, keep)

    def _chat(self, raw: bytes, keep: bool) -> None:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self._finish(_error(400, "Bad Request", f"invalid JSON: {exc}", keep_alive=keep), keep)
            return
        n = _answer_tokens(body, self._config)
        usage = _usage(_prompt_tokens(body), n)
        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        model = str(body.get("model") or self._config.model)
        created = int(time.time())
        start = self._loop.time()
        if body.get("stream"):
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            stream = _Stream(request_id, model, created)
            self._start_stream(stream, n, usage if include_usage else None, start, keep)
        else:
            done = start + self._config.ttft_s + (n - 1) / self._config.tokens_per_s
            answer = _response(200, "OK", _completion(request_id, model, created, n, usage), keep_alive=keep)
            self._timer = self._loop.call_at(done, self._finish, answer, keep)

    def _start_stream(
        self, stream: _Stream, n: int, usage: dict[str, int] | None, start: float, keep_alive: bool
    ) -> None:
        assert self._transport is not None
        connection = b"keep-alive" if keep_alive else b"close"
        self._transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: %b\r\n\r\n" % connection
        )
        first_at = start + self._config.ttft_s
        self._timer = self._loop.call_at(first_at, self._emit, stream, 0, n, usage, first_at, keep_alive)

    def _emit(
        self, stream: _Stream, i: int, n: int, usage: dict[str, int] | None, first_at: float, keep_alive: bool
    ) -> None:
        if self._transport is None:
            return
        data = stream.token(i)
        if i == 0:
            data = stream.first() + data
        if i == n - 1:
            self._finish(_chunked(data + stream.last(usage)) + b"0\r\n\r\n", keep_alive)
            return
        self._transport.write(_chunked(data))
        # Absolute deadlines: a late callback does not push every later token back.
        next_at = first_at + (i + 1) / self._config.tokens_per_s
        self._timer = self._loop.call_at(next_at, self._emit, stream, i + 1, n, usage, first_at, keep_alive)


async def serve_upstream(
    config: UpstreamConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled; once the socket is bound, ``on_ready`` gets the base URL (default: print it)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(config), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()
    url = f"http://{bound[0]}:{bound[1]}/v1"
    if on_ready is None:
        print(f"{_READY}{url}", flush=True)
    else:
        on_ready(url)
    async with server:
        await server.serve_forever()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# --- the context manager -----------------------------------------------------------------------


class UpstreamServer:
    """Run the fake upstream for a ``with`` block; ``url`` is ``http://127.0.0.1:PORT/v1``.

    ``mode="process"`` (default) runs it in a subprocess, so a load generator in this process keeps
    its core; ``mode="thread"`` runs it on a background thread's own event loop.
    """

    def __init__(
        self,
        ttft_s: float = 0.5,
        tokens_per_s: float = 20.0,
        tokens: int = 32,
        *,
        model: str = "fake-model",
        host: str = "127.0.0.1",
        port: int = 0,
        mode: Literal["process", "thread"] = "process",
    ) -> None:
        self.config = UpstreamConfig(ttft_s=ttft_s, tokens_per_s=tokens_per_s, tokens=tokens, model=model)
        self.host = host
        self.port = port
        self.mode = mode
        self._url: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("UpstreamServer is not started; use it as a context manager")
        return self._url

    def __repr__(self) -> str:
        return f"UpstreamServer({self._url or 'not started'}, {self.config}, mode={self.mode!r})"

    def __enter__(self) -> UpstreamServer:
        if self.mode == "process":
            self._start_process()
        else:
            self._start_thread()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start_process(self) -> None:
        c = self.config
        command = [
            sys.executable, _SCRIPT, "--host", self.host, "--port", str(self.port),
            "--ttft-s", repr(c.ttft_s), "--tokens-per-s", repr(c.tokens_per_s), "--tokens", str(c.tokens),
            "--model", c.model,
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith(_READY):
            self.close()
            raise RuntimeError(f"the upstream did not start (said {line.strip()!r})")
        self._url = line[len(_READY) :].strip()

    def _start_thread(self) -> None:
        started = threading.Event()
        loop = self._loop = _new_loop()

        def ready(url: str) -> None:
            self._url = url
            started.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._task = loop.create_task(serve_upstream(self.config, self.host, self.port, on_ready=ready))
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
            loop.close()

        self._thread = threading.Thread(target=run, name="stanchion-upstream", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the upstream thread did not start within 10 s")

    def close(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None
        if self._thread is not None and self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(timeout=10)
            self._thread = None
        self._url = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-s", type=float, default=0.5)
    parser.add_argument("--tokens-per-s", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--model", default="fake-model")
    args = parser.parse_args(argv)
    config = UpstreamConfig(
        ttft_s=args.ttft_s, tokens_per_s=args.tokens_per_s, tokens=args.tokens, model=args.model
    )
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(serve_upstream(config, args.host, args.port))


if __name__ == "__main__":
    main()
