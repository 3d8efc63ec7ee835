"""The fake OpenAI server speaks the wire format the adapters expect, and records what it received."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stanchion.testing.fake_openai import FakeOpenAIServer, Reply
from stanchion.types import ToolCall


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def chat(server: FakeOpenAIServer, **body: Any) -> httpx.Response:
    payload = {"model": "fake-model", "messages": [{"role": "user", "content": "hello out there"}], **body}
    return httpx.post(f"{server.url}/chat/completions", json=payload, timeout=5)


def sse_chunks(response: httpx.Response) -> list[Any]:
    """The decoded data payloads of an SSE body, ``[DONE]`` kept as a string."""
    out: list[Any] = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


class TestReplies:
    def test_default_answer_and_recorded_request(self, server: FakeOpenAIServer) -> None:
        """Without a script the default reply answers, and the request is recorded as received."""
        response = chat(server, temperature=0.5)
        body = response.json()
        assert response.status_code == 200
        assert body["object"] == "chat.completion" and body["model"] == "fake-model"
        assert body["choices"][0]["message"] == {"role": "assistant", "content": "ok"}
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        (recorded,) = server.requests
        assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
        assert recorded.headers["content-type"] == "application/json"
        assert recorded.json["temperature"] == 0.5

    def test_script_is_fifo_then_default(self, server: FakeOpenAIServer) -> None:
        """Scripted replies answer the next requests in order; then the default answers again."""
        server.script(Reply(text="first"), Reply(text="second", usage=(7, 2)))
        texts = [chat(server).json()["choices"][0]["message"]["content"] for _ in range(3)]
        assert texts == ["first", "second", "ok"]

    def test_callable_picks_a_reply_from_the_body(self) -> None:
        """A callable source sees each request's JSON body."""
        with FakeOpenAIServer(lambda body: Reply(text=body["model"].upper())) as fake:
            response = chat(fake, model="shout")
        assert response.json()["choices"][0]["message"]["content"] == "SHOUT"

    def test_error_reply_sends_status_headers_and_body(self, server: FakeOpenAIServer) -> None:
        """An error status comes with the given headers and an OpenAI-style body unless one is given."""
        server.script(
            Reply(status=429, headers={"Retry-After": "3"}), Reply(status=400, body={"error": {"code": "x"}})
        )
        limited = chat(server)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
        assert limited.json()["error"]["type"] == "server_error"
        assert chat(server).json() == {"error": {"code": "x"}}

    def test_non_streamed_tool_calls_carry_json_string_arguments(self, server: FakeOpenAIServer) -> None:
        """Tool calls come as OpenAI sends them: null content, arguments as a JSON string."""
        server.script(Reply(tool_calls=(ToolCall("call_1", "lookup", {"q": "pto"}),)))
        choice = chat(server).json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        (call,) = choice["message"]["tool_calls"]
        assert call == {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "pto"}'},
        }


class TestStreaming:
    def test_words_stream_one_per_delta_with_usage_last(self, server: FakeOpenAIServer) -> None:
        """Each delta is a word and its following space; usage comes last when asked for, then [DONE]."""
        server.script(Reply(text="the quick  brown fox"))
        response = chat(server, stream=True, stream_options={"include_usage": True})
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = sse_chunks(response)
        assert chunks[-1] == "[DONE]"
        deltas = [c["choices"][0]["delta"].get("content") for c in chunks[1:-3]]
        assert deltas == ["the ", "quick  ", "brown ", "fox"]
        assert chunks[-3]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["completion_tokens"] == 4

    def test_no_usage_chunk_unless_asked(self, server: FakeOpenAIServer) -> None:
        """As OpenAI does, a stream carries no usage unless stream_options.include_usage is set."""
        chunks = sse_chunks(chat(server, stream=True))
        assert all("usage" not in c for c in chunks if isinstance(c, dict))

    def test_tool_call_arguments_stream_in_pieces(self, server: FakeOpenAIServer) -> None:
        """Tool calls stream as a head (id, name) and argument pieces that concatenate to JSON."""
        server.script(Reply(tool_calls=(ToolCall("call_9", "search", {"query": "expense policy", "k": 5}),)))
        chunks = [c for c in sse_chunks(chat(server, stream=True)) if isinstance(c, dict)]
        pieces = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
        assert pieces[0]["id"] == "call_9" and pieces[0]["function"]["name"] == "search"
        assert len(pieces) > 2
        assert json.loads("".join(p["function"]["arguments"] for p in pieces)) == {
            "query": "expense policy",
            "k": 5,
        }
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    def test_die_after_tokens_resets_mid_stream(self, server: FakeOpenAIServer) -> None:
        """die_after_tokens sends that many deltas, then resets the connection."""
        server.script(Reply(text="one two three four", die_after_tokens=2))
        received: list[str] = []
        with (
            pytest.raises(httpx.TransportError),
            httpx.stream(
                "POST", f"{server.url}/chat/completions", json={"model": "m", "stream": True}, timeout=5
            ) as response,
        ):
            received.extend(response.iter_lines())
        data = [json.loads(line[6:]) for line in received if line.startswith("data: ")]
        assert [d["choices"][0]["delta"].get("content") for d in data[1:]] == ["one ", "two "]


class TestFailures:
    def test_reset_closes_without_a_response(self, server: FakeOpenAIServer) -> None:
        """reset=True drops the connection before any byte of a response."""
        server.script(Reply(reset=True))
        with pytest.raises(httpx.TransportError):
            chat(server)
        assert chat(server).status_code == 200  # the server itself keeps serving

    def test_delay_outlasts_a_short_timeout(self, server: FakeOpenAIServer) -> None:
        """delay_s holds the answer back, so a client with a shorter timeout gives up."""
        server.script(Reply(delay_s=0.3))
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/chat/completions", json={"model": "m"}, timeout=0.1)


class TestOtherEndpoints:
    def test_embeddings_are_deterministic_unit_vectors(self) -> None:
        """Equal inputs embed equally, different ones differ; vectors are unit length of the set dim."""
        with FakeOpenAIServer(embedding_dim=12) as fake:
            body = httpx.post(f"{fake.url}/embeddings", json={"model": "e", "input": ["a", "b", "a"]}).json()
            single = httpx.post(f"{fake.url}/embeddings", json={"model": "e", "input": "a"}).json()
        vectors = [row["embedding"] for row in body["data"]]
        assert [row["index"] for row in body["data"]] == [0, 1, 2]
        assert len(vectors[0]) == 12 and vectors[0] == vectors[2] == single["data"][0]["embedding"]
        assert vectors[0] != vectors[1]
        assert math.isclose(math.fsum(v * v for v in vectors[1]), 1.0)

    def test_models_lists_ids_without_consuming_a_reply(self, server: FakeOpenAIServer) -> None:
        """GET /v1/models lists the configured ids and leaves the script alone."""
        server.script(Reply(text="kept"))
        models = httpx.get(f"{server.url}/models").json()
        assert [m["id"] for m in models["data"]] == ["fake-model"]
        assert chat(server).json()["choices"][0]["message"]["content"] == "kept"

    def test_url_needs_a_started_server(self) -> None:
        """The port is bound on start, not in the constructor."""
        with pytest.raises(RuntimeError, match="not started"):
            _ = FakeOpenAIServer().url
