"""OpenAICompatModel against the fake OpenAI server on real loopback HTTP, and its wire format."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, TypeVar

import pytest

from stanchion.errors import (
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    ModelError,
    ModelHTTPError,
    ModelTimeout,
    ModelUnavailable,
    RateLimited,
)
from stanchion.models.base import ChatModel, ChatOptions
from stanchion.models.openai_compat import OpenAICompatModel
from stanchion.models.openai_format import (
    ChatStreamParser,
    build_request,
    classify_error,
    malformed_arguments,
    parse_completion,
    parse_retry_after,
)
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply
from stanchion.types import Completion, Message, StreamEvent, ToolCall, ToolSpec, Usage

T = TypeVar("T")
KEY = "sk-test-secret-0123456789"
QUESTION = (Message("system", "Be brief."), Message("user", "Who approves expenses?"))
LOOKUP = ToolSpec("lookup", "Find a policy", {"type": "object", "properties": {"q": {"type": "string"}}})


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def make(server: FakeOpenAIServer, **kwargs: Any) -> OpenAICompatModel:
    return OpenAICompatModel("primary", base_url=server.url, model="fake-model", **kwargs)


async def complete(model: OpenAICompatModel, options: ChatOptions | None = None) -> Completion:
    async with model:
        return await model.complete(QUESTION, options)


async def stream(
    model: OpenAICompatModel, options: ChatOptions | None = None
) -> tuple[list[StreamEvent], ModelError | None]:
    """Every event the stream yielded, and the error it ended with, if any."""
    events: list[StreamEvent] = []
    async with model:
        try:
            async for event in model.stream(QUESTION, options):
                events.append(event)
        except ModelError as exc:
            return events, exc
    return events, None


class TestComplete:
    def test_answer_and_usage(self, server: FakeOpenAIServer) -> None:
        """A plain answer comes back under the configured name with the server's usage."""
        server.script(Reply(text="The finance lead.", usage=(12, 4)))
        model = make(server)
        assert isinstance(model, ChatModel)
        result = run(complete(model))
        assert result == Completion("The finance lead.", "primary", Usage(12, 4), (), "stop")
        sent = server.requests[0].json
        assert sent["model"] == "fake-model" and "stream" not in sent
        assert sent["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Who approves expenses?"},
        ]

    def test_options_reach_the_request_body(self, server: FakeOpenAIServer) -> None:
        """JSON mode, stop, temperature and max_tokens appear in what the server received."""
        options = ChatOptions(temperature=0.2, max_tokens=64, stop=("\n\n", "END"), json_mode=True)
        run(complete(make(server), options))
        sent = server.requests[0].json
        assert sent["response_format"] == {"type": "json_object"}
        assert (sent["temperature"], sent["max_tokens"], sent["stop"]) == (0.2, 64, ["\n\n", "END"])

    def test_default_max_tokens_applies_when_unset(self, server: FakeOpenAIServer) -> None:
        """The model's default_max_tokens fills in for an unset ChatOptions.max_tokens."""
        run(complete(make(server, default_max_tokens=300)))
        assert server.requests[0].json["max_tokens"] == 300

    def test_forced_tool_call_round_trip(self, server: FakeOpenAIServer) -> None:
        """A forced tool is requested as OpenAI wants; the call comes back with parsed arguments."""
        call = ToolCall("call_1", "lookup", {"q": "expenses over $5,000"})
        server.script(Reply(tool_calls=(call,)), Reply(text="The CFO."))
        options = ChatOptions(tools=(LOOKUP,), tool_choice="lookup")

        async def round_trip() -> tuple[Completion, Completion]:
            async with make(server) as model:
                first = await model.complete(QUESTION, options)
                follow_up = (
                    *QUESTION,
                    Message("assistant", tool_calls=first.tool_calls),
                    Message("tool", "Expenses over $5,000 need the CFO.", tool_call_id="call_1"),
                )
                return first, await model.complete(follow_up, ChatOptions(tools=(LOOKUP,)))

        first, second = run(round_trip())
        assert first.tool_calls == (call,) and first.finish_reason == "tool_calls" and first.text == ""
        assert second.text == "The CFO."
        request, follow_up = server.requests[0].json, server.requests[1].json
        assert request["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
        assert request["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Find a policy",
                    "parameters": dict(LOOKUP.parameters),
                },
            }
        ]
        assistant, tool = follow_up["messages"][2:]
        assert assistant["content"] is None
        assert assistant["tool_calls"][0]["function"] == {
            "name": "lookup",
            "arguments": '{"q": "expenses over $5,000"}',
        }
        assert tool == {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": "Expenses over $5,000 need the CFO.",
        }


class TestStream:
    def test_deltas_concatenate_and_usage_comes_last(self, server: FakeOpenAIServer) -> None:
        """Deltas concatenate to the text; the last event carries usage and the finish reason."""
        server.script(Reply(text="Expenses above five thousand need approval.", usage=(20, 6)))
        events, error = run(stream(make(server)))
        assert error is None
        *deltas, last = events
        assert (
            len(deltas) == 6
            and "".join(e.text for e in deltas) == "Expenses above five thousand need approval."
        )
        assert all(e.usage is None and e.model == "primary" for e in deltas)
        assert (last.text, last.usage, last.finish_reason) == ("", Usage(20, 6), "stop")
        sent = server.requests[0].json
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}

    def test_forced_tool_call_streams_parsed_arguments(self, server: FakeOpenAIServer) -> None:
        """Argument fragments are assembled by index into parsed tool calls on the final event."""
        calls = (
            ToolCall("call_a", "lookup", {"q": "travel policy"}),
            ToolCall("call_b", "lookup", {"q": "pto"}),
        )
        server.script(Reply(text="Checking.", tool_calls=calls))
        events, error = run(stream(make(server), ChatOptions(tools=(LOOKUP,), tool_choice="required")))
        assert error is None
        assert events[-1].tool_calls == calls and events[-1].finish_reason == "tool_calls"
        assert "".join(e.text for e in events) == "Checking."
        assert server.requests[0].json["tool_choice"] == "required"

    def test_stream_dying_yields_what_arrived_then_unavailable(self, server: FakeOpenAIServer) -> None:
        """A reset after N deltas yields those N, then raises ModelUnavailable."""
        server.script(Reply(text="one two three four five", die_after_tokens=3))
        events, error = run(stream(make(server)))
        assert [e.text for e in events] == ["one ", "two ", "three "]
        assert isinstance(error, ModelUnavailable) and error.model == "primary"

    def test_stall_before_first_token_times_out(self, server: FakeOpenAIServer) -> None:
        """A stream that stalls longer than timeout_s raises ModelTimeout."""
        server.script(Reply(text="late", delay_s=0.3))
        events, error = run(stream(make(server, timeout_s=0.1)))
        assert events == [] and isinstance(error, ModelTimeout)

    def test_error_status_before_the_stream(self, server: FakeOpenAIServer) -> None:
        """An error status on a stream request is classified as for a plain request."""
        server.script(Reply(status=429, headers={"Retry-After": "7"}))
        events, error = run(stream(make(server)))
        assert events == [] and isinstance(error, RateLimited) and error.retry_after == 7


class TestErrors:
    def test_rate_limited_with_retry_after(self, server: FakeOpenAIServer) -> None:
        """429 becomes RateLimited with retry_after from the Retry-After header."""
        server.script(Reply(status=429, headers={"Retry-After": "2"}))
        with pytest.raises(RateLimited) as caught:
            run(complete(make(server)))
        assert caught.value.retry_after == 2.0 and caught.value.status_code == 429

    def test_server_error(self, server: FakeOpenAIServer) -> None:
        """5xx becomes a ModelHTTPError that carries the status and the body."""
        server.script(Reply(status=500))
        with pytest.raises(ModelHTTPError) as caught:
            run(complete(make(server)))
        assert type(caught.value) is ModelHTTPError and caught.value.status_code == 500
        assert "fake error 500" in caught.value.body

    def test_context_length_exceeded(self, server: FakeOpenAIServer) -> None:
        """OpenAI's context_length_exceeded code becomes ContextTooLong, a BadRequest."""
        body = {
            "error": {
                "message": "This model's maximum context length is 8192 tokens.",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }
        }
        server.script(Reply(status=400, body=body))
        with pytest.raises(ContextTooLong, match="maximum context length") as caught:
            run(complete(make(server)))
        assert isinstance(caught.value, BadRequest) and caught.value.status_code == 400

    def test_bad_request(self, server: FakeOpenAIServer) -> None:
        """Other 4xx answers are BadRequest: our request is wrong."""
        server.script(Reply(status=404, body={"error": {"message": "The model `nope` does not exist"}}))
        with pytest.raises(BadRequest, match="does not exist"):
            run(complete(make(server)))

    def test_content_filter_finish_reason(self, server: FakeOpenAIServer) -> None:
        """An answer stopped by the content filter raises ContentFiltered."""
        server.script(Reply(text="partial", finish_reason="content_filter"))
        with pytest.raises(ContentFiltered):
            run(complete(make(server)))

    def test_slow_reply_times_out(self, server: FakeOpenAIServer) -> None:
        """No answer within timeout_s raises ModelTimeout; ChatOptions.timeout_s overrides the model's."""
        server.script(Reply(delay_s=0.3), Reply(delay_s=0.3))
        with pytest.raises(ModelTimeout, match=r"0\.1s"):
            run(complete(make(server, timeout_s=0.1)))
        with pytest.raises(ModelTimeout, match=r"0\.05s"):
            run(complete(make(server, timeout_s=5), ChatOptions(timeout_s=0.05)))

    def test_reset_is_unavailable(self, server: FakeOpenAIServer) -> None:
        """A connection reset without a response raises ModelUnavailable."""
        server.script(Reply(reset=True))
        with pytest.raises(ModelUnavailable):
            run(complete(make(server)))

    def test_refused_connection_is_unavailable(self) -> None:
        """Nothing listening at the port raises ModelUnavailable."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        model = OpenAICompatModel("down", base_url=f"http://127.0.0.1:{port}/v1", model="m")
        with pytest.raises(ModelUnavailable, match=r"connection failed.*Cannot connect"):
            run(complete(model))


class TestApiKey:
    def test_key_only_in_the_authorization_header(
        self, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The key is sent as a bearer token and nowhere else, and never shows in the repr."""
        monkeypatch.setenv("FAKE_OPENAI_KEY", KEY)
        model = make(server, api_key_env="FAKE_OPENAI_KEY")
        run(complete(model))
        (request,) = server.requests
        assert request.headers["authorization"] == f"Bearer {KEY}"
        others = {name: value for name, value in request.headers.items() if name != "authorization"}
        assert KEY not in json.dumps(others) and KEY not in json.dumps(request.json)
        assert KEY not in repr(model)

    def test_auth_failure_names_the_variable_and_hides_the_key(
        self, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """401 is a BadRequest naming the variable; a key echoed by the provider is scrubbed."""
        monkeypatch.setenv("FAKE_OPENAI_KEY", KEY)
        server.script(Reply(status=401, body={"error": {"message": f"Incorrect API key provided: {KEY}"}}))
        with pytest.raises(BadRequest, match="FAKE_OPENAI_KEY") as caught:
            run(complete(make(server, api_key_env="FAKE_OPENAI_KEY")))
        assert KEY not in str(caught.value) and KEY not in caught.value.body

    def test_missing_variable_is_named(
        self, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unset key variable fails before any request, naming the variable."""
        monkeypatch.delenv("UNSET_OPENAI_KEY", raising=False)
        with pytest.raises(ModelError, match="UNSET_OPENAI_KEY"):
            run(complete(make(server, api_key_env="UNSET_OPENAI_KEY")))
        events, error = run(stream(make(server, api_key_env="UNSET_OPENAI_KEY")))
        assert events == [] and error is not None and "UNSET_OPENAI_KEY" in str(error)
        assert server.requests == []


class TestWireFormat:
    def test_tool_choice_mapping(self) -> None:
        """auto/none/required pass through, a tool name forces that tool, and no tools means no choice."""

        def choice(value: str | None, tools: tuple[ToolSpec, ...] = (LOOKUP,)) -> Any:
            return build_request("m", (), ChatOptions(tools=tools, tool_choice=value)).get("tool_choice")

        assert [choice(v) for v in ("auto", "none", "required", None)] == ["auto", "none", "required", None]
        assert choice("lookup") == {"type": "function", "function": {"name": "lookup"}}
        assert choice("auto", ()) is None
        with pytest.raises(ValueError, match="not among"):
            choice("missing")

    def test_tool_message_needs_its_call_id(self) -> None:
        """A tool result without tool_call_id is our bug, raised as ValueError."""
        with pytest.raises(ValueError, match="tool_call_id"):
            build_request("m", (Message("tool", "result"),))

    def test_invalid_tool_arguments_are_kept_for_the_tool_to_refuse(self) -> None:
        """Broken JSON in a call's arguments is the tool's bad input, not the model's failure: the
        call keeps it as raw arguments (a gateway passes it on as written; an agent's tool answers
        with an error the model can correct), streamed or not."""
        body = {
            "choices": [
                {
                    "message": {
                        "tool_calls": [{"id": "c", "function": {"name": "lookup", "arguments": "{oops"}}]
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
        [call] = parse_completion(body, model="m").tool_calls
        assert (call.name, call.arguments, call.raw_arguments) == ("lookup", {}, "{oops")
        assert "not valid JSON" in (malformed_arguments(call) or "")
        parser = ChatStreamParser(model="m")
        chunk = {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c", "function": {"name": "lookup", "arguments": "{oops"}}
                        ]
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
        parser.feed_line(f"data: {json.dumps(chunk)}")
        parser.feed_line("")
        [streamed] = parser.finish().tool_calls
        assert (streamed.arguments, streamed.raw_arguments) == ({}, "{oops")

    def test_stream_ending_early_is_unavailable(self) -> None:
        """A stream that ends without a finish reason or [DONE] did not finish."""
        parser = ChatStreamParser(model="m")
        assert parser.feed_line('data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}') == []
        assert [e.text for e in parser.feed_line("")] == ["Hi"]
        with pytest.raises(ModelUnavailable, match="before the model finished"):
            parser.finish()

    def test_error_inside_a_stream(self) -> None:
        """An error object sent after a 200 is classified by its code (vLLM puts the status there)."""
        parser = ChatStreamParser(model="m")
        with pytest.raises(ContextTooLong):
            parser.feed(
                {
                    "object": "error",
                    "message": "This model's maximum context length is 4096 tokens",
                    "code": 400,
                }
            )
        with pytest.raises(ModelHTTPError) as caught:
            parser.feed({"error": {"message": "boom", "type": "server_error"}})
        assert caught.value.status_code == 500

    @pytest.mark.parametrize(
        ("body", "kind"),
        [
            ('{"error": {"message": "x", "code": "context_length_exceeded"}}', ContextTooLong),
            (
                '{"error": {"code": 400, "message": "the request exceeds the available context size", "type": "exceed_context_size_error"}}',
                ContextTooLong,
            ),
            ('{"error": "prompt is too long for this model"}', ContextTooLong),
            ('{"error": {"message": "filtered", "code": "content_filter"}}', ContentFiltered),
            ('{"error": {"message": "bad temperature", "code": null}}', None),
            ("<html>Bad Gateway</html>", None),
        ],
    )
    def test_classify_error_bodies(self, body: str, kind: type[Exception] | None) -> None:
        """OpenAI, llama.cpp and Ollama error bodies are classified by code, type or message."""
        assert classify_error(body)[0] is kind

    def test_retry_after_forms(self) -> None:
        """retry-after-ms wins; Retry-After may be seconds or an HTTP date; nonsense means unknown."""
        assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
        assert parse_retry_after({"Retry-After": "4"}) == 4.0
        later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
        assert 25 < (parse_retry_after({"Retry-After": later}) or 0) <= 30
        assert parse_retry_after({"Retry-After": "soon"}) is None
        assert parse_retry_after({}) is None
