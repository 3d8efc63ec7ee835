"""A fake OpenAI-compatible server on real loopback HTTP that records every request it receives.

Adapters, fallback and streaming are tested against real sockets, because what matters there
(timeouts, a connection reset half-way through a stream, concurrency) does not happen over a mock
transport. Each request takes the next scripted ``Reply`` (first in, first out), then the
replies source given to the constructor, then ``default``::

    with FakeOpenAIServer() as server:
        server.script(Reply(status=429, headers={"Retry-After": "2"}), Reply(text="hello there"))
        model = OpenAICompatModel("fake", base_url=server.url, model="fake-model")
        ...
        assert server.requests[0].json["model"] == "fake-model"

Endpoints: ``POST /v1/chat/completions`` (plain or SSE streaming), ``POST /v1/embeddings``
(deterministic unit vectors from a hash of each input) and ``GET /v1/models``. Every POST
consumes one reply; GET and unknown paths consume none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from stanchion.types import ToolCall

__all__ = ["FakeOpenAIServer", "RecordedRequest", "Reply"]

# Tool-call arguments stream in pieces of this many characters, as OpenAI splits them mid-token.
_ARGUMENT_PIECE = 8


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request.

    ``usage`` is ``(input_tokens, output_tokens)``; ``None`` counts words (input: words in the
    request's messages; output: streamed deltas). ``body``, when set, is sent verbatim (a mapping
    as JSON) with ``status`` instead of a generated answer; an error status without a body gets an
    OpenAI-style error object. ``delay_s`` passes before the answer (streams: after the headers,
    before the first delta); ``token_delay_s`` passes between deltas, and non-streamed answers wait
    it once per delta too, as if generating. ``die_after_tokens=N`` sends N deltas (words or
    tool-argument pieces) and then resets the connection; on a non-streamed request it resets
    without answering. ``reset`` resets the connection without any response.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: tuple[int, int] | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | Mapping[str, Any] | None = None
    delay_s: float = 0.0
    token_delay_s: float = 0.0
    die_after_tokens: int | None = None
    reset: bool = False
    finish_reason: str | None = None  # None: "tool_calls" when there are tool calls, else "stop"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received. Header names are lower-cased; ``json`` is None when the body was not JSON.

    ``time`` is ``time.monotonic()`` on arrival, so tests can measure backoff between attempts.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    time: float


OK = Reply(text="ok")

ReplySource = Iterable[Reply] | Callable[[dict[str, Any]], Reply] | None


class FakeOpenAIServer:
    """A loopback OpenAI-compatible server in a background thread; use it as a context manager.

    ``replies`` is either replies to queue (as ``script`` does) or a callable that picks a reply
    from the request's JSON body. Responses carry ``Connection: close`` unless ``keep_alive``:
    a pooled connection left open when a test's event loop ends is reported as an unclosed
    transport, and tests of the adapters do not need connection reuse.
    """

    def __init__(
        self,
        replies: ReplySource = None,
        *,
        default: Reply = OK,
        embedding_dim: int = 8,
        model_ids: Sequence[str] = ("fake-model",),
        keep_alive: bool = False,
    ) -> None:
        self.requests: list[RecordedRequest] = []
        # Streams the client closed before the end (seen as a failed write).
        self.client_hangups = 0
        self.default = default
        self.embedding_dim = embedding_dim
        self.model_ids = tuple(model_ids)
        self.keep_alive = keep_alive
        self._queue: deque[Reply] = deque()
        self._picker: Callable[[dict[str, Any]], Reply] | None = None
        if callable(replies):
            self._picker = replies
        elif replies is not None:
            self._queue.extend(replies)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is None:
            return
        # Wake handlers sleeping in a delay and unblock those waiting on a kept-alive connection.
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed, or reset by its handler
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The base URL clients use, ``http://127.0.0.1:PORT/v1``."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not started; use it as a context manager or call start()")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __repr__(self) -> str:
        where = self.url if self._httpd is not None else "not started"
        return f"FakeOpenAIServer({where}, requests={len(self.requests)})"

    # --- scripting ------------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next POST requests, in order; after them the server answers as before."""
        with self._lock:
            self._queue.extend(replies)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self._picker is not None:
            return self._picker(body)
        return self.default

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeOpenAIServer
    ) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is what many tests are about, not a server failure.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Abort(Exception):
    """The server is stopping, or the reply asked for a reset: stop answering this request."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    @property
    def fake(self) -> FakeOpenAIServer:
        return self.server.fake

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read server.requests, not stderr

    # --- routing --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._read_and_record()
        if self.path.rstrip("/").endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.fake.model_ids
            ]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._not_found()

    def do_POST(self) -> None:
        body = self._read_and_record()
        path = self.path.split("?", 1)[0].rstrip("/")
        if not path.endswith(("/chat/completions", "/embeddings")):
            self._not_found()
            return
        reply = self.fake._next_reply(body if isinstance(body, dict) else {})
        try:
            if reply.reset:
                self._reset()
            elif path.endswith("/embeddings"):
                self._wait(reply.delay_s)
                self._answer_embeddings(reply, body)
            else:
                self._answer_chat(reply, body if isinstance(body, dict) else {})
        except (_Abort, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_and_record(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.fake._record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                json=body,
                time=time.monotonic(),
            )
        )
        return body

    # --- answers --------------------------------------------------------------------------------

    def _answer_chat(self, reply: Reply, request: dict[str, Any]) -> None:
        if reply.status != 200 or reply.body is not None:
            self._wait(reply.delay_s)
            self._send_reply_body(reply)
            return
        model = str(request.get("model") or "fake-model")
        tokens = _split_words(reply.text)
        usage = reply.usage or (_count_input_words(request), len(tokens) + len(reply.tool_calls))
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        completion_id = f"chatcmpl-fake-{self.fake._next_id()}"
        if request.get("stream"):
            options = request.get("stream_options") or {}
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            self._stream_chat(reply, model, completion_id, tokens, usage, finish, include_usage)
            return
        self._wait(reply.delay_s + reply.token_delay_s * len(tokens))
        if reply.die_after_tokens is not None:
            self._reset()
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(dict(call.arguments))},
                }
                for call in reply.tool_calls
            ]
        self._send_json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": _usage(usage),
            },
            reply.headers,
        )

    def _stream_chat(
        self,
        reply: Reply,
        model: str,
        completion_id: str,
        tokens: list[str],
        usage: tuple[int, int],
        finish: str,
        include_usage: bool,
    ) -> None:
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        # With include_usage OpenAI puts "usage": null on every chunk and the totals on a last one.
        extra: dict[str, Any] = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                **base,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }

        deltas: list[dict[str, Any]] = [{"content": token} for token in tokens]
        for index, call in enumerate(reply.tool_calls):
            arguments = json.dumps(dict(call.arguments))
            head = {"index": index, "id": call.id, "type": "function"}
            deltas.append({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
            for start in range(0, len(arguments), _ARGUMENT_PIECE):
                piece = arguments[start : start + _ARGUMENT_PIECE]
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self._send_common_headers(reply.headers)
        self.end_headers()
        self._send_event(chunk({"role": "assistant", "content": ""}))
        self._wait(reply.delay_s)
        for sent, delta in enumerate(deltas):
            if sent == reply.die_after_tokens:
                self._reset()
            if sent:
                self._wait(reply.token_delay_s)
            self._send_event(chunk(delta))
        if reply.die_after_tokens is not None:
            self._reset()  # asked to die after more deltas than there were: die before finishing
        self._send_event(chunk({}, finish))
        if include_usage:
            self._send_event({**base, "choices": [], "usage": _usage(usage)})
        self._send_chunk(b"data: [DONE]\n\n")
        self._send_chunk(b"")  # the zero-length chunk ends the chunked body

    def _answer_embeddings(self, reply: Reply, request: Any) -> None:
        if reply.status != 200 or reply.body is not None:
            self._send_reply_body(reply)
            return
        request = request if isinstance(request, dict) else {}
        inputs = request.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else [str(item) for item in inputs]
        dim = int(request.get("dimensions") or self.fake.embedding_dim)
        data = [
            {"object": "embedding", "index": i, "embedding": _hash_vector(text, dim)}
            for i, text in enumerate(texts)
        ]
        words = sum(len(text.split()) for text in texts)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": str(request.get("model") or "fake-embedding"),
                "usage": {"prompt_tokens": words, "total_tokens": words},
            },
            reply.headers,
        )

    # --- writing --------------------------------------------------------------------------------

    def _send_reply_body(self, reply: Reply) -> None:
        body = reply.body
        if body is None:
            body = {"error": {"message": f"fake error {reply.status}", "type": "server_error", "code": None}}
        raw = body if isinstance(body, str) else json.dumps(dict(body))
        self._send_raw(reply.status, raw.encode(), "application/json", reply.headers)

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json", headers or {})

    def _send_raw(self, status: int, raw: bytes, content_type: str, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self._send_common_headers(headers)
        self.end_headers()
        self.wfile.write(raw)

    def _send_common_headers(self, headers: Mapping[str, str]) -> None:
        for name, value in headers.items():
            self.send_header(name, value)
        if not self.fake.keep_alive:
            self.send_header("Connection", "close")
            self.close_connection = True

    def _send_event(self, payload: Mapping[str, Any]) -> None:
        self._send_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _send_chunk(self, data: bytes) -> None:
        # The socket writer is unbuffered, so each chunk leaves at once, as a token would.
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError:
            with self.fake._lock:
                self.fake.client_hangups += 1  # the client went away mid-answer
            raise

    def _not_found(self) -> None:
        error = {
            "error": {"message": f"unknown path {self.path}", "type": "invalid_request_error", "code": None}
        }
        self._send_json(404, error)

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.fake._stopping.wait(seconds):
            raise _Abort

    def _reset(self) -> None:
        """Drop the connection with a TCP RST, as a crashed or restarted upstream would."""
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # close() would wait for the request's file objects to let go; closing the descriptor
        # itself sends the RST now, before the handler's clean-up could send a FIN instead.
        os.close(sock.detach())
        raise _Abort


# --- helpers ------------------------------------------------------------------------------------


def _split_words(text: str) -> list[str]:
    """Each delta is one word and the whitespace after it; the pieces concatenate to the text."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _count_input_words(request: Mapping[str, Any]) -> int:
    words = 0
    for message in request.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            words += sum(len(str(part.get("text", "")).split()) for part in content if isinstance(part, dict))
    return words


def _usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1]}


def _hash_vector(text: str, dim: int) -> list[float]:
    """A unit vector that depends only on the text: equal texts embed equally, different ones differ."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend(b / 127.5 - 1.0 for b in digest)
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]
