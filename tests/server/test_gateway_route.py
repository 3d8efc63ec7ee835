"""Gateway (pass-through) routes: the conversation goes to the route's models over real HTTP."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from tests.server.conftest import Api, ServerFactory

from stanchion.server.schemas import ChatCompletionChunk
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply
from stanchion.types import ToolCall


def _gateway(serve: ServerFactory, upstream: FakeOpenAIServer, *, fallback: bool = False) -> Api:
    models = {
        "up": {
            "provider": "openai",
            "model": "fake-model",
            "base_url": upstream.url,
            "max_retries": 0,
            "timeout_s": 10,
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        },
        "extractive": {"provider": "extractive"},
    }
    chain = ["up", "up2"] if fallback else ["up"]
    if fallback:
        models["up2"] = {**models["up"], "model": "fake-model-2"}
    return serve(
        models=models,
        routes={"gw": {"models": chain, "grounded": False}, "default": {"models": ["extractive"]}},
    )


def test_pass_through_completion_forwards_messages_and_reports_usage(serve: ServerFactory) -> None:
    with FakeOpenAIServer(default=Reply(text="Hello from upstream.", usage=(12, 4))) as upstream:
        api = _gateway(serve, upstream)
        with api.client(api.keys.ops) as c:
            r = c.post(
                "/v1/chat/completions",
                json={
                    "model": "gw",
                    "temperature": 0.2,
                    "max_tokens": 50,
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi there"},
                    ],
                },
            )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["content"] == "Hello from upstream."
        assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
        assert body["stanchion"]["cost_usd"] == (12 * 1.0 + 4 * 2.0) / 1e6
        sent = upstream.requests[-1].json
        assert [m["content"] for m in sent["messages"]] == ["Be brief.", "Hi there"]
        assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50
        # The caller's API key never travels upstream.
        assert api.keys.ops not in json.dumps(upstream.requests[-1].headers)


def test_pass_through_stream_and_fallback_on_upstream_failure(serve: ServerFactory) -> None:
    with FakeOpenAIServer() as upstream:
        api = _gateway(serve, upstream, fallback=True)
        upstream.script(Reply(status=500), Reply(text="second model answers", usage=(3, 3)))
        with (
            api.client(api.keys.ops) as c,
            c.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "gw", "stream": True, "messages": [{"role": "user", "content": "hello"}]},
            ) as r,
        ):
            assert r.status_code == 200
            lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        text = "".join(
            (ch["choices"][0]["delta"].get("content") or "")
            for ch in (json.loads(ln[6:]) for ln in lines[:-1])
            if ch["choices"]
        )
        assert text == "second model answers"
        assert [req.json["model"] for req in upstream.requests] == ["fake-model", "fake-model-2"]


def test_upstream_failure_is_a_clean_502_not_a_500(serve: ServerFactory) -> None:
    with FakeOpenAIServer(default=Reply(status=503)) as upstream:
        api = _gateway(serve, upstream)
        with api.client(api.keys.ops) as c:
            r = c.post(
                "/v1/chat/completions", json={"model": "gw", "messages": [{"role": "user", "content": "x"}]}
            )
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"


def test_client_disconnect_cancels_the_upstream_generation(serve: ServerFactory) -> None:
    slow = Reply(text=" ".join(f"w{i}" for i in range(200)), token_delay_s=0.05)
    with FakeOpenAIServer(default=slow) as upstream:
        api = _gateway(serve, upstream)
        with (
            httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.keys.ops}"}) as c,
            c.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "gw", "stream": True, "messages": [{"role": "user", "content": "go"}]},
            ) as r,
        ):
            received = 0
            for line in r.iter_lines():
                if '"content":"w' in line.replace(" ", ""):
                    received += 1
                if received >= 3:
                    break  # the client hangs up after three tokens
        deadline = time.monotonic() + 10
        while upstream.client_hangups == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The gateway closed its upstream stream: the fake's next write failed long before token 200.
        assert upstream.client_hangups == 1


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_tool_calls_pass_through_both_ways(serve: ServerFactory) -> None:
    call = ToolCall("call_1", "get_weather", {"city": "Oslo"})
    with FakeOpenAIServer() as upstream:
        api = _gateway(serve, upstream)
        upstream.script(Reply(tool_calls=(call,)), Reply(tool_calls=(call,)), Reply(text="It is 4 degrees."))
        messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Oslo?"}]
        with api.client(api.keys.ops) as c:
            r = c.post("/v1/chat/completions", json={"model": "gw", "messages": messages, "tools": TOOLS,
                                                     "tool_choice": "auto"})  # fmt: skip
            assert r.status_code == 200, r.text
            choice = r.json()["choices"][0]
            assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
            (out,) = choice["message"]["tool_calls"]
            assert out["function"]["name"] == "get_weather" and json.loads(out["function"]["arguments"]) == {
                "city": "Oslo"
            }
            sent = upstream.requests[-1].json
            assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "auto"
            # Streaming: the assembled call arrives as one tool_calls delta, then finish_reason.
            with c.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "gw", "stream": True, "messages": messages, "tools": TOOLS},
            ) as stream:
                chunks = [json.loads(ln[6:]) for ln in stream.iter_lines() if ln.startswith("data: {")]
            for chunk in chunks:  # a tool call delta too is what the OpenAPI schema says
                ChatCompletionChunk.model_validate(chunk)
            deltas = [ch["choices"][0] for ch in chunks if ch["choices"]]
            streamed = [d["delta"]["tool_calls"][0] for d in deltas if d["delta"].get("tool_calls")]
            assert [s["id"] for s in streamed] == ["call_1"] and deltas[-1]["finish_reason"] == "tool_calls"
            # The tool's result goes back upstream with the call it answers.
            messages += [choice["message"], {"role": "tool", "tool_call_id": "call_1", "content": "4 C"}]
            r = c.post("/v1/chat/completions", json={"model": "gw", "messages": messages, "tools": TOOLS})
            assert r.json()["choices"][0]["message"]["content"] == "It is 4 degrees."
            sent_messages = upstream.requests[-1].json["messages"]
            assert sent_messages[1]["tool_calls"][0]["id"] == "call_1"
            assert sent_messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "4 C"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": TOOLS}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool.tool_call_id"),
    ],
)
def test_bad_tool_requests_are_422(serve: ServerFactory, extra: dict[str, object], param: str) -> None:
    with FakeOpenAIServer() as upstream:
        api = _gateway(serve, upstream)
        body = {"model": "gw", "messages": [{"role": "user", "content": "hi"}], **extra}
        with api.client(api.keys.ops) as c:
            r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 422 and r.json()["error"]["param"] == param
        assert upstream.requests == []


def test_grounded_routes_refuse_tools(serve: ServerFactory) -> None:
    api = serve()
    with api.client(api.keys.ops) as c:
        r = c.post("/v1/chat/completions", json={"model": "default", "tools": TOOLS,
                                                 "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["param"] == "tools"


def test_broken_tool_arguments_in_history_are_forwarded_verbatim(serve: ServerFactory) -> None:
    """OpenAI treats arguments as an opaque string; a gateway must not rewrite or reject them."""
    with FakeOpenAIServer(default=Reply(text="ok")) as upstream:
        api = _gateway(serve, upstream)
        call = {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Os'},
        }
        messages = [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "error: bad arguments"},
        ]
        with api.client(api.keys.ops) as c:
            r = c.post("/v1/chat/completions", json={"model": "gw", "messages": messages, "tools": TOOLS})
        assert r.status_code == 200, r.text
        sent = upstream.requests[-1].json["messages"][1]["tool_calls"][0]["function"]["arguments"]
        assert sent == '{"city": "Os'
