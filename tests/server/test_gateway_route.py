"""Gateway (pass-through) routes: the conversation goes to the route's models over real HTTP."""

from __future__ import annotations

import json
import time

import httpx
from tests.server.conftest import Api, ServerFactory

from stanchion.testing.fake_openai import FakeOpenAIServer, Reply


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
