"""Streaming gateway requests served in front of FastAPI's routing (server/fast_stream.py).

The fast path must take exactly the requests that start a stream, answer them as FastAPI would,
and hand everything else to FastAPI untouched; a request it serves must leave no reference cycle
(the worker runs with the automatic garbage collector off, server/heap.py).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.server.conftest import Api, ServerFactory

from stanchion.server.fast_stream import GatewayStreams
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each request the fast path looked at: True when it answered it itself."""
    seen: list[bool] = []
    original = GatewayStreams._stream

    async def counting(self: GatewayStreams, *args: Any) -> Any:
        response = await original(self, *args)
        seen.append(response is not None)
        return response

    monkeypatch.setattr(GatewayStreams, "_stream", counting)
    return seen


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=Reply(text="one two three", usage=(5, 3))) as server:
        yield server


def _serve(serve: ServerFactory, upstream: FakeOpenAIServer, **server: Any) -> Api:
    up = {"provider": "openai", "model": "fake-model", "base_url": upstream.url, "max_retries": 0}
    return serve(
        models={"up": up, "extractive": {"provider": "extractive"}},
        routes={"gw": {"models": ["up"], "grounded": False}, "default": {"models": ["extractive"]}},
        server=server,
    )


def _stream(client: httpx.Client, **body: Any) -> tuple[int, list[str]]:
    request = {"model": "gw", "stream": True, "messages": [{"role": "user", "content": "hi"}], **body}
    with client.stream("POST", "/v1/chat/completions", json=request) as r:
        return r.status_code, [ln for ln in r.iter_lines() if ln.startswith("data: ")]


def test_a_gateway_stream_is_served_by_the_fast_path(
    serve: ServerFactory, upstream: FakeOpenAIServer, served: list[bool]
) -> None:
    api = _serve(serve, upstream)
    with api.client(api.keys.ops) as c:
        status, lines = _stream(c, stream_options={"include_usage": True})
    assert status == 200 and served == [True]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    # The role rides on the first text delta; the text arrives whole and in order.
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "one "}
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
    assert text == "one two three"
    final, usage = chunks[-2], chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop" and final["stanchion"]["model"] == "up"
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
    }
    assert {ch["model"] for ch in chunks} == {"gw"} and len({ch["id"] for ch in chunks}) == 1


@pytest.mark.parametrize(
    ("key", "body", "status"),
    [
        (None, {}, 401),  # no key: FastAPI's auth dependency answers
        ("bad", {}, 401),
        ("ops", {"model": "nope"}, 404),  # not a route
        ("ops", {"messages": []}, 422),  # fails validation
        ("ops", {"stream": False}, 200),  # not a stream
        ("ops", {"model": "default"}, 200),  # a grounded route
    ],
    ids=["no-key", "bad-key", "unknown-route", "invalid", "not-streamed", "grounded"],
)
def test_other_requests_are_handed_to_fastapi(
    serve: ServerFactory,
    upstream: FakeOpenAIServer,
    served: list[bool],
    key: str | None,
    body: dict[str, Any],
    status: int,
) -> None:
    api = _serve(serve, upstream)
    request = {"model": "gw", "stream": True, "messages": [{"role": "user", "content": "hi"}], **body}
    with api.client(api.keys.ops if key == "ops" else key) as c:
        r = c.post("/v1/chat/completions", json=request)
    assert r.status_code == status, r.text
    if status >= 400:
        assert r.json()["error"]["code"]  # FastAPI's handlers rendered it
    assert True not in served


def test_a_body_that_is_not_declared_json_goes_to_fastapi(
    serve: ServerFactory, upstream: FakeOpenAIServer, served: list[bool]
) -> None:
    api = _serve(serve, upstream)
    body = json.dumps({"model": "gw", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    with api.client(api.keys.ops) as c:
        r = c.post("/v1/chat/completions", content=body, headers={"Content-Type": "text/plain"})
    assert served == [] and r.status_code in (200, 415, 422)


def test_the_fast_path_rate_limits_like_the_endpoint(
    serve: ServerFactory, upstream: FakeOpenAIServer, served: list[bool]
) -> None:
    api = _serve(serve, upstream, rate_limits={"requests_per_minute": 1})
    with api.client(api.keys.ops) as c:
        assert _stream(c)[0] == 200
        request = {"model": "gw", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        r = c.post("/v1/chat/completions", json=request)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "rate_limited"
    assert served == [True, True]  # both taken by the fast path; the second answered with 429


def test_a_stream_leaves_no_reference_cycles(serve: ServerFactory, upstream: FakeOpenAIServer) -> None:
    """Reference counting alone frees a served stream: nothing is left for the collector."""
    api = _serve(serve, upstream)
    requests = 20
    with api.client(api.keys.ops) as c:
        _stream(c)  # the first request builds the route's models and pools, which stay
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(requests):
                assert _stream(c)[0] == 200
            gc.collect()
            left = [f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    # httpx, the test's client, leaves cycles of its own; the server's objects must not be among
    # them (before the fix, every request left uvicorn's request cycle <-> the scope, with the
    # caller's Principal in it).
    server_side = [name for name in left if name.startswith(SERVER_PACKAGES)]
    assert server_side == [], sorted(set(server_side))


SERVER_PACKAGES = ("uvicorn.", "starlette.", "fastapi.", "stanchion.", "aiohttp.", "asyncio.")
