"""AnthropicModel: the Messages API wire format over httpx.MockTransport, and one stream over loopback."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest

from stanchion.errors import (
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    ModelError,
    ModelHTTPError,
    ModelUnavailable,
    RateLimited,
)
from stanchion.models.anthropic import AnthropicModel
from stanchion.models.anthropic_format import JSON_INSTRUCTION, MessageStreamParser, build_request
from stanchion.models.base import ChatModel, ChatOptions
from stanchion.types import Completion, Message, StreamEvent, ToolCall, ToolSpec, Usage

T = TypeVar("T")
KEY = "sk-ant-test-secret-0123456789"
LOOKUP = ToolSpec("lookup", "Find a policy", {"type": "object", "properties": {"q": {"type": "string"}}})
QUESTION = (Message("system", "Be brief."), Message("user", "Who approves expenses?"))


def sse(*events: dict[str, Any]) -> bytes:
    """A Messages API stream as Anthropic frames it: an event line, a data line, a blank line."""
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


# A stream shaped like the Messages API reference's example: text, then a tool_use block whose
# input arrives as JSON fragments, then message_delta with the stop reason and output usage.
TOOL_STREAM = (
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-test",
            "stop_reason": None,
            "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}},
    },
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"q": "exp'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": 'enses"}'},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 17},
    },
    {"type": "message_stop"},
)


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


class Recorder:
    """An httpx.MockTransport that answers from a list and keeps the requests it saw."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0)

    def body(self, index: int = 0) -> Any:
        return json.loads(self.requests[index].content)


def model_over(recorder: Recorder, **kwargs: Any) -> AnthropicModel:
    return AnthropicModel(
        "claude",
        model="claude-test",
        api_key_env="FAKE_ANTHROPIC_KEY",
        transport=recorder.transport,
        **kwargs,
    )


async def collect(
    model: AnthropicModel, options: ChatOptions | None = None
) -> tuple[list[StreamEvent], ModelError | None]:
    events: list[StreamEvent] = []
    async with model:
        try:
            async for event in model.stream(QUESTION, options):
                events.append(event)
        except ModelError as exc:
            return events, exc
    return events, None


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", KEY)


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: int) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": content,
            "stop_reason": stop_reason,
            "usage": usage or {"input_tokens": 10, "output_tokens": 3},
        },
    )


def error(status: int, kind: str, text: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"type": "error", "error": {"type": kind, "message": text}}, headers=headers
    )


class TestRequest:
    def test_headers_system_and_options(self) -> None:
        """The key goes in x-api-key only, with anthropic-version; system is a field of its own."""
        recorder = Recorder(message([{"type": "text", "text": "The CFO."}]))
        model = model_over(recorder)
        assert isinstance(model, ChatModel) and KEY not in repr(model)
        options = ChatOptions(temperature=0.3, stop=("END",), json_mode=True)
        result = run(model.complete(QUESTION, options))
        assert result == Completion("The CFO.", "claude", Usage(10, 3), (), "stop")
        request = recorder.requests[0]
        assert str(request.url) == "https://api.anthropic.com/v1/messages"
        assert request.headers["x-api-key"] == KEY and request.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in request.headers and KEY not in request.content.decode()
        body = recorder.body()
        assert body["system"] == f"Be brief.\n\n{JSON_INSTRUCTION}"
        assert body["messages"] == [{"role": "user", "content": "Who approves expenses?"}]
        assert (body["max_tokens"], body["temperature"], body["stop_sequences"]) == (1024, 0.3, ["END"])

    def test_tool_turns_become_content_blocks(self) -> None:
        """Assistant tool calls are tool_use blocks; results are tool_result blocks in one user turn."""
        calls = (ToolCall("toolu_1", "lookup", {"q": "a"}), ToolCall("toolu_2", "lookup", {"q": "b"}))
        history = (
            *QUESTION,
            Message("assistant", "Checking.", tool_calls=calls),
            Message("tool", "result a", tool_call_id="toolu_1"),
            Message("tool", "result b", tool_call_id="toolu_2"),
            Message("user", "And travel?"),
        )
        body = build_request("claude-test", history, ChatOptions(tools=(LOOKUP,), tool_choice="lookup"))
        assert body["messages"][1:] == [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "a"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {"q": "b"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "result a"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "result b"},
                    {"type": "text", "text": "And travel?"},
                ],
            },
        ]
        assert body["tools"] == [
            {"name": "lookup", "description": "Find a policy", "input_schema": dict(LOOKUP.parameters)}
        ]
        assert body["tool_choice"] == {"type": "tool", "name": "lookup"}

    def test_tool_choice_mapping(self) -> None:
        """auto, none and required map to Anthropic's auto, none and any."""

        def choice(value: str) -> Any:
            return build_request("m", (), ChatOptions(tools=(LOOKUP,), tool_choice=value))["tool_choice"]

        assert [choice(v) for v in ("auto", "none", "required")] == [
            {"type": "auto"},
            {"type": "none"},
            {"type": "any"},
        ]

    def test_base_url_with_or_without_v1(self) -> None:
        """A gateway URL given with /v1 does not get a second one."""
        recorder = Recorder(message([]), message([]))
        for base in ("http://gateway.test/anthropic/v1/", "http://gateway.test/anthropic"):
            run(model_over(recorder, base_url=base).complete(QUESTION))
        assert {str(r.url) for r in recorder.requests} == {"http://gateway.test/anthropic/v1/messages"}


class TestAnswers:
    def test_forced_tool_call(self) -> None:
        """tool_use blocks become ToolCalls; stop_reason tool_use reads tool_calls; cache tokens count as input."""
        blocks = [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "pto"}}]
        recorder = Recorder(
            message(blocks, "tool_use", input_tokens=8, cache_creation_input_tokens=2, output_tokens=4)
        )
        result = run(
            model_over(recorder).complete(QUESTION, ChatOptions(tools=(LOOKUP,), tool_choice="required"))
        )
        assert result.tool_calls == (ToolCall("toolu_1", "lookup", {"q": "pto"}),)
        assert (result.finish_reason, result.usage) == ("tool_calls", Usage(10, 4))
        assert recorder.body()["tool_choice"] == {"type": "any"}

    def test_max_tokens_reads_length(self) -> None:
        """stop_reason max_tokens is reported as the OpenAI-style "length"."""
        recorder = Recorder(message([{"type": "text", "text": "cut"}], "max_tokens"))
        assert run(model_over(recorder).complete(QUESTION)).finish_reason == "length"

    def test_stream_assembles_text_tool_call_and_usage(self) -> None:
        """Text deltas stream; the tool call's JSON fragments and the usage arrive on the final event."""
        recorder = Recorder(
            httpx.Response(200, content=sse(*TOOL_STREAM), headers={"content-type": "text/event-stream"})
        )
        events, failure = run(collect(model_over(recorder)))
        assert failure is None
        *deltas, last = events
        assert [e.text for e in deltas] == ["Let me ", "check."]
        assert last.tool_calls == (ToolCall("toolu_1", "lookup", {"q": "expenses"}),)
        assert (last.usage, last.finish_reason, last.model) == (Usage(30, 17), "tool_calls", "claude")
        assert recorder.body()["stream"] is True


class TestErrors:
    def test_overloaded_is_a_retryable_http_error(self) -> None:
        """529 overloaded is a plain ModelHTTPError, not a BadRequest."""
        with pytest.raises(ModelHTTPError) as caught:
            run(model_over(Recorder(error(529, "overloaded_error", "Overloaded"))).complete(QUESTION))
        assert type(caught.value) is ModelHTTPError and caught.value.status_code == 529

    def test_prompt_too_long(self) -> None:
        """invalid_request_error saying the prompt is too long becomes ContextTooLong."""
        response = error(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")
        with pytest.raises(ContextTooLong, match="prompt is too long"):
            run(model_over(Recorder(response)).complete(QUESTION))

    def test_rate_limited(self) -> None:
        """429 becomes RateLimited with retry_after from the header."""
        response = error(429, "rate_limit_error", "slow down", {"retry-after": "12"})
        with pytest.raises(RateLimited) as caught:
            run(model_over(Recorder(response)).complete(QUESTION))
        assert caught.value.retry_after == 12

    def test_auth_failure_names_the_variable(self) -> None:
        """401 is BadRequest naming the key's variable, never the key."""
        response = error(401, "authentication_error", f"invalid x-api-key {KEY}")
        with pytest.raises(BadRequest, match="FAKE_ANTHROPIC_KEY") as caught:
            run(model_over(Recorder(response)).complete(QUESTION))
        assert KEY not in str(caught.value) and KEY not in caught.value.body

    def test_error_event_mid_stream(self) -> None:
        """An error event after some text yields that text, then the classified error."""
        events = (
            *TOOL_STREAM[:4],
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
        recorder = Recorder(httpx.Response(200, content=sse(*events)))
        received, failure = run(collect(model_over(recorder)))
        assert [e.text for e in received] == ["Let me "]
        assert isinstance(failure, ModelHTTPError) and failure.status_code == 529

    def test_refusal_is_content_filtered(self) -> None:
        """stop_reason refusal raises ContentFiltered."""
        with pytest.raises(ContentFiltered):
            run(model_over(Recorder(message([], "refusal"))).complete(QUESTION))

    def test_truncated_stream_is_unavailable(self) -> None:
        """A stream that ends before message_delta or message_stop did not finish."""
        parser = MessageStreamParser(model="claude")
        for line in sse(*TOOL_STREAM[:5]).decode().splitlines():
            parser.feed_line(line)
        with pytest.raises(ModelUnavailable):
            parser.finish()

    def test_missing_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unset key variable fails before any request, naming the variable."""
        monkeypatch.delenv("FAKE_ANTHROPIC_KEY")
        recorder = Recorder()
        with pytest.raises(ModelError, match="FAKE_ANTHROPIC_KEY"):
            run(model_over(recorder).complete(QUESTION))
        assert recorder.requests == []


class _SSEHandler(BaseHTTPRequestHandler):
    """Serves TOOL_STREAM with chunked transfer encoding, one event per flushed chunk."""

    protocol_version = "HTTP/1.1"
    received: list[tuple[dict[str, str], Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in TOOL_STREAM:
            data = sse(event)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[tuple[str, list[tuple[dict[str, str], Any]]]]:
    received: list[tuple[dict[str, str], Any]] = []
    handler: Callable[..., _SSEHandler] = type("Handler", (_SSEHandler,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_stream_over_loopback(loopback: tuple[str, list[tuple[dict[str, str], Any]]]) -> None:
    """Over a real socket the chunked SSE stream yields the same events as over the mock transport."""
    url, received = loopback
    model = AnthropicModel(
        "claude", model="claude-test", api_key_env="FAKE_ANTHROPIC_KEY", base_url=url, timeout_s=5
    )
    events, failure = run(collect(model, ChatOptions(tools=(LOOKUP,))))
    assert failure is None
    assert "".join(e.text for e in events) == "Let me check."
    assert events[-1].tool_calls == (ToolCall("toolu_1", "lookup", {"q": "expenses"}),)
    ((headers, body),) = received
    assert headers["x-api-key"] == KEY and body["stream"] is True and body["tools"][0]["name"] == "lookup"
