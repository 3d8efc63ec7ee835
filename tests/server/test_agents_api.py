"""Agents over HTTP: ``/v1/agents``, runs in one piece and streamed, the chat endpoint addressing
an agent, the audit record of every step, and the PII guard around a run (the task masked for the
remote model, the tool receiving the real value)."""

from __future__ import annotations

import importlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.server.conftest import Api, ServerFactory

from stanchion.testing.fake_openai import FakeOpenAIServer, Reply
from stanchion.types import ToolCall

RECEIVED: list[str] = []  # what the echo tool was called with
EMAIL = "jane.roe@example.com"


def lookup_customer(email: str) -> str:
    """Find a customer by e-mail address."""
    RECEIVED.append(email)
    return f"Customer {email}: plan Gold, 2 open orders."


def _reply(body: dict[str, Any]) -> Reply:
    """A model that calls the first tool it is offered once, then answers from its result."""
    messages = body["messages"]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    if not results:
        name = body["tools"][0]["function"]["name"]
        if name == "calc":
            return Reply(tool_calls=(ToolCall("c1", "calc", {"expression": "6 * 7"}),))
        email = re.findall(r"<EMAIL_ADDRESS_\d+>", messages[-1]["content"])
        return Reply(tool_calls=(ToolCall("c1", name, {"email": email[0] if email else "?"}),))
    return Reply(text=f"Done: {results[-1]}")


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(_reply) as server:
        yield server


def _serve(serve: ServerFactory, upstream: FakeOpenAIServer, **guards: Any) -> Api:
    up = {"provider": "openai", "model": "fake-model", "base_url": upstream.url, "max_retries": 0}
    return serve(
        models={"up": up, "extractive": {"provider": "extractive"}},
        routes={"gw": {"models": ["up"], "grounded": False}, "default": {"models": ["extractive"]}},
        guards=guards,
        extra={
            "tools": {
                "calc": {"tool": "calculator"},
                "customer": {
                    "tool": "function",
                    "options": {"function": "tests.server.test_agents_api:lookup_customer"},
                },
            },
            "agents": {
                "maths": {
                    "instructions": "Compute with calc.\nAlways show the result.",
                    "route": "gw",
                    "tools": ["calc"],
                },
                "crm": {"instructions": "Look customers up.", "route": "gw", "tools": ["customer"]},
            },
        },
    )


def test_a_run_in_one_piece_and_its_audit_record(serve: ServerFactory, upstream: FakeOpenAIServer) -> None:
    api = _serve(serve, upstream)
    with api.client(api.keys.ops) as c:
        listed = c.get("/v1/agents").json()["data"]
        r = c.post("/v1/agents/maths/runs", json={"task": "What is six times seven?"})
        missing = c.post("/v1/agents/nope/runs", json={"task": "x"})
    assert {a["name"] for a in listed} == {"maths", "crm"}
    assert next(a for a in listed if a["name"] == "maths")["description"] == "Compute with calc."
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["answer"] == "Done: 6 * 7 = 42" and run["stop_reason"] == "answered"
    assert run["tool_calls"][0]["name"] == "calc" and run["tool_calls"][0]["ok"] is True
    assert run["usage"]["total_tokens"] > 0 and [s["step"] for s in run["steps"]] == [1, 2]
    assert missing.status_code == 404 and "maths" in missing.json()["error"]["message"]
    deadline = time.monotonic() + 30
    with api.client(api.keys.admin) as c:
        while True:
            records = [
                r for r in c.get("/v1/audit", params={"action": "agents.run"}).json()["data"] if r["status"]
            ]
            if records or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    agent = records[0]["detail"]["agent"]
    assert agent["stop_reason"] == "answered"
    assert agent["steps"][0] == {"step": 1, "tool_calls": [{"name": "calc", "ok": True}]}


def test_a_streamed_run_sends_each_event(serve: ServerFactory, upstream: FakeOpenAIServer) -> None:
    api = _serve(serve, upstream)
    with (
        api.client(api.keys.ops) as c,
        c.stream(
            "POST", "/v1/agents/maths/runs", json={"task": "What is six times seven?", "stream": True}
        ) as r,
    ):
        assert r.status_code == 200
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    kinds = [json.loads(line)["type"] for line in lines[:-1]]
    assert kinds == ["step", "tool_call", "tool_result", "step", "check", "answer", "stop"]
    assert json.loads(lines[-2])["stop_reason"] == "answered"


@pytest.mark.parametrize("stream", [False, True])
def test_the_chat_endpoint_addresses_an_agent(
    serve: ServerFactory, upstream: FakeOpenAIServer, stream: bool
) -> None:
    api = _serve(serve, upstream)
    body = {"model": "agent:maths", "stream": stream, "messages": [{"role": "user", "content": "6 x 7?"}]}
    with api.client(api.keys.ops) as c:
        if not stream:
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "Done: 6 * 7 = 42"
            return
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: {")]
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in lines if ch["choices"])
    assert text == "Done: 6 * 7 = 42" and lines[-1]["choices"][0]["finish_reason"] == "stop"


def test_pii_is_masked_for_the_model_and_real_for_the_tool(
    serve: ServerFactory, upstream: FakeOpenAIServer
) -> None:
    # The spec names the tool by module path: the list is that module's (pytest may have imported
    # this file under another name).
    received: list[str] = importlib.import_module("tests.server.test_agents_api").RECEIVED
    received.clear()
    api = _serve(serve, upstream, pii={"timeout_s": 30})
    with api.client(api.keys.ops) as c:
        r = c.post("/v1/agents/crm/runs", json={"task": f"What plan is {EMAIL} on?"})
    assert r.status_code == 200, r.text
    assert received == [EMAIL]  # the tool ran on the real value
    sent = "\n".join(json.dumps(q.json) for q in upstream.requests)
    assert EMAIL not in sent and "<EMAIL_ADDRESS_1>" in sent  # the model saw only the pseudonym
    assert r.json()["answer"] == f"Done: Customer {EMAIL}: plan Gold, 2 open orders."
