"""The response cache through the server's endpoints, on real loopback HTTP: hits by tier, the
scoping that keeps one tenant's, user's or group's answers from another, invalidation when a
source changes, streaming hits, bypass, metrics, two workers on one Redis, and Redis going away.

Gateway routes answer from a fake OpenAI-compatible upstream that records what it was asked, so
"served from the cache" is checked by the upstream not being asked again; grounded routes use the
packaged extractive model over the two-tenant corpus of ``tests/server/conftest.py``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.server.conftest import CORPUS, Api, ServerFactory

from stanchion.app import build
from stanchion.server.app import create_app
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply
from stanchion.testing.live_server import LiveServer
from stanchion.testing.services import redis_server

HEADER = "x-stanchion-cache"


def _gateway(
    serve: ServerFactory, upstream: FakeOpenAIServer, *, backend: str = "sqlite", **cache: Any
) -> Api:
    models = {
        "up": {"provider": "openai", "model": "fake-model", "base_url": upstream.url, "max_retries": 0,
               "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "extractive": {"provider": "extractive"},
    }  # fmt: skip
    routes = {
        "gw": {"models": ["up"], "grounded": False, "cache": {"semantic": True, **cache}},
        "default": {"models": ["extractive"], "cache": {}},
    }
    return serve(backend, models=models, routes=routes)


def _grounded(serve: ServerFactory, *, backend: str = "sqlite") -> Api:
    return serve(backend, routes={"default": {"models": ["extractive"], "cache": {}}})


def _ask(c: httpx.Client, text: str, *, model: str = "gw", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r


def _until(check: Callable[[], httpx.Response], want: str, tries: int = 60) -> httpx.Response:
    """Entries are written after the answer is sent: ask until the header says ``want``."""
    for _ in range(tries):
        r = check()
        if r.headers.get(HEADER) == want:
            return r
        time.sleep(0.05)
    raise AssertionError(f"never {want}: last {r.headers.get(HEADER)} {r.text[:300]}")


def _stream_text(r: httpx.Response) -> tuple[str, dict[str, Any]]:
    text, last = [], {}
    for line in r.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            if chunk.get("choices"):
                text.append(chunk["choices"][0]["delta"].get("content") or "")
                last = chunk
    return "".join(text), last


# --- gateway routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_repeat_is_an_exact_hit_and_a_paraphrase_a_semantic_one(serve: ServerFactory, backend: str) -> None:
    with FakeOpenAIServer(default=Reply(text="Reset it under Settings.", usage=(20, 5))) as upstream:
        api = _gateway(serve, upstream, backend=backend)
        with api.client(api.keys.ops) as c:
            first = _ask(c, "How do I reset my password?")
            assert first.headers[HEADER] == "miss"
            assert first.json()["stanchion"]["cache"] == {"hit": False, "status": "miss"}
            again = _until(lambda: _ask(c, "How do I reset my password?"), "hit-exact")
            body = again.json()
            assert body["choices"][0]["message"]["content"] == "Reset it under Settings."
            assert body["usage"]["total_tokens"] == 0  # nothing was asked upstream
            cache = body["stanchion"]["cache"]
            assert cache["hit"] and cache["tier"] == "exact" and cache["tokens_saved"] == 25
            assert cache["cost_saved_usd"] == pytest.approx((20 * 1.0 + 5 * 2.0) / 1e6)
            para = _ask(c, "How can I reset my password?")
            assert para.headers[HEADER] == "hit-semantic", para.json()["stanchion"]
            assert para.json()["choices"][0]["message"]["content"] == "Reset it under Settings."
        assert len(upstream.requests) == 1


def test_near_misses_reach_the_upstream(serve: ServerFactory) -> None:
    with FakeOpenAIServer(default=Reply(text="ok", usage=(5, 1))) as upstream:
        api = _gateway(serve, upstream)
        with api.client(api.keys.ops) as c:
            _ask(c, "How do I enable two-factor authentication?")
            _until(lambda: _ask(c, "How do I enable two-factor authentication?"), "hit-exact")
            for other in (
                "How do I disable two-factor authentication?",
                "Can I get a refund within 30 days?",
            ):
                r = _ask(c, other)
                assert r.headers[HEADER] == "miss", (other, r.json()["stanchion"])
        asked = [q.json["messages"][-1]["content"] for q in upstream.requests]
        assert "How do I disable two-factor authentication?" in asked


def test_tenants_and_scoped_users_never_share_an_entry(serve: ServerFactory) -> None:
    with FakeOpenAIServer(default=Reply(text="secret plan", usage=(5, 1))) as upstream:
        api = _gateway(serve, upstream)
        with api.client(api.keys.ops) as acme:
            _ask(acme, "What is our launch plan?")
            _until(lambda: _ask(acme, "What is our launch plan?"), "hit-exact")
        with api.client(api.keys.globex) as globex:
            assert _ask(globex, "What is our launch plan?").headers[HEADER] == "miss"
        assert len(upstream.requests) == 2


def test_a_user_scoped_cache_is_one_users(serve: ServerFactory) -> None:
    with FakeOpenAIServer(default=Reply(text="mine", usage=(5, 1))) as upstream:
        api = _gateway(serve, upstream, scope="user")
        state = api.state()
        try:
            other = state.create_key(tenant="acme", user="someone-else", groups=["ops"], scopes=["query"])[1]
        finally:
            state.close()
        with api.client(api.keys.ops) as c:
            _ask(c, "Summarise my notes")
            _until(lambda: _ask(c, "Summarise my notes"), "hit-exact")
        with api.client(other) as c:
            assert _ask(c, "Summarise my notes").headers[HEADER] == "miss"


def test_different_parameters_or_history_are_different_entries(serve: ServerFactory) -> None:
    with FakeOpenAIServer(default=Reply(text="ok", usage=(5, 1))) as upstream:
        api = _gateway(serve, upstream)
        with api.client(api.keys.ops) as c:
            _ask(c, "Name a colour")
            _until(lambda: _ask(c, "Name a colour"), "hit-exact")
            assert _ask(c, "Name a colour", temperature=1.5).headers[HEADER] == "miss"
            history = {"model": "gw", "messages": [
                {"role": "user", "content": "Speak French."}, {"role": "assistant", "content": "Oui."},
                {"role": "user", "content": "Name a colour"}]}  # fmt: skip
            assert c.post("/v1/chat/completions", json=history).headers[HEADER] == "miss"


def test_a_streamed_hit_streams_like_a_live_answer(serve: ServerFactory) -> None:
    text = "Open Settings, choose Security, then Reset password and follow the link we send you."
    with FakeOpenAIServer(default=Reply(text=text, usage=(9, 15))) as upstream:
        api = _gateway(serve, upstream)
        with api.client(api.keys.ops) as c:
            live = _ask(c, "How do I reset my password?", stream=True)
            assert live.headers[HEADER] == "miss"
            assert _stream_text(live)[0] == text
            hit = _until(lambda: _ask(c, "How do I reset my password?", stream=True), "hit-exact")
            replayed, last = _stream_text(hit)
            assert replayed == text
            chunks = [ln for ln in hit.text.splitlines() if ln.startswith("data: {")]
            assert len(chunks) > 3  # a few words at a time, not one block
            assert last["choices"][0]["finish_reason"] == "stop"
            assert last["stanchion"]["cache"]["tier"] == "exact"
            assert hit.text.rstrip().endswith("data: [DONE]")
        assert len(upstream.requests) == 1


def test_bypass_by_body_or_header_asks_upstream_and_refreshes(serve: ServerFactory) -> None:
    with FakeOpenAIServer(default=Reply(text="v1", usage=(5, 1))) as upstream:
        api = _gateway(serve, upstream)
        with api.client(api.keys.ops) as c:
            _ask(c, "Status?")
            _until(lambda: _ask(c, "Status?"), "hit-exact")
            assert _ask(c, "Status?", cache=False).headers[HEADER] == "bypass"
            r = c.post("/v1/chat/completions", headers={"X-Stanchion-Cache": "bypass"},
                       json={"model": "gw", "messages": [{"role": "user", "content": "Status?"}]})  # fmt: skip
            assert r.headers[HEADER] == "bypass"
            r = c.post("/v1/chat/completions", headers={"Cache-Control": "no-cache"},
                       json={"model": "gw", "messages": [{"role": "user", "content": "Status?"}]})  # fmt: skip
            assert r.headers[HEADER] == "bypass"
        assert len(upstream.requests) == 4


def test_metrics_count_hits_misses_and_tokens_saved(serve: ServerFactory) -> None:
    with FakeOpenAIServer(default=Reply(text="ok", usage=(30, 10))) as upstream:
        api = _gateway(serve, upstream)
        with api.client(api.keys.ops) as c:
            _ask(c, "How do I enable dark mode?")
            _until(lambda: _ask(c, "How do I enable dark mode?"), "hit-exact")
            _ask(c, "How do I disable dark mode?")
        metrics = httpx.get(api.url + "/metrics").text
        assert 'stanchion_cache_lookups_total{result="hit-exact",route="gw"}' in metrics
        assert 'stanchion_cache_lookups_total{result="miss",route="gw"}' in metrics
        assert 'stanchion_cache_tokens_saved_total{route="gw"} 40.0' in metrics
        assert "stanchion_cache_near_misses_total" in metrics


# --- grounded routes ---------------------------------------------------------------------------------


def test_a_grounded_hit_needs_every_source_readable_by_the_caller(serve: ServerFactory) -> None:
    api = _grounded(serve)
    question = "What is the Q3 marketing budget?"
    with api.client(api.keys.finance) as finance:
        first = _ask(finance, question, model="default")
        assert "4.2 million" in first.json()["choices"][0]["message"]["content"]
        hit = _until(lambda: _ask(finance, question, model="default"), "hit-exact")
        assert hit.json()["citations"], "a grounded hit keeps its citations"
    with api.client(api.keys.ops) as ops:  # same tenant, not in the finance group
        for _ in range(3):
            r = _ask(ops, question, model="default")
            assert r.headers[HEADER] == "miss"
            assert "4.2 million" not in r.json()["choices"][0]["message"]["content"]
    with api.client(api.keys.globex) as globex:
        r = _ask(globex, question, model="default")
        assert r.headers[HEADER] == "miss" and "4.2 million" not in r.text


def test_an_edited_or_deleted_source_is_never_served_from_the_cache(serve: ServerFactory) -> None:
    api = _grounded(serve)
    question = "How many days do I have to ask for a refund?"

    def ask() -> httpx.Response:
        with api.client(api.keys.ops) as c:
            r = c.post("/v1/answer", json={"question": question})
        assert r.status_code == 200, r.text
        return r

    assert "30 days" in ask().json()["answer"]
    assert "30 days" in _until(ask, "hit-exact").json()["answer"]
    root = api.spec.base_dir
    (root / "acme/public/refunds.md").write_text(
        CORPUS["acme/public/refunds.md"].replace("30 days", "60 days")
    )
    system = build(api.spec)
    try:
        system.pipeline.run()
    finally:
        system.close()
    after = ask()
    assert after.headers[HEADER] == "miss" and "60 days" in after.json()["answer"]
    assert "60 days" in _until(ask, "hit-exact").json()["answer"]
    (root / "acme/public/refunds.md").unlink()
    system = build(api.spec)
    try:
        system.pipeline.run()
    finally:
        system.close()
    gone = ask()
    assert gone.headers[HEADER] == "miss" and "60 days" not in gone.json()["answer"]


def test_a_streamed_grounded_hit_keeps_its_citations(serve: ServerFactory) -> None:
    api = _grounded(serve)
    with api.client(api.keys.ops) as c:
        live_text, live_last = _stream_text(
            _ask(c, "What is the refund policy?", model="default", stream=True)
        )
        hit = _until(lambda: _ask(c, "What is the refund policy?", model="default", stream=True), "hit-exact")
        text, last = _stream_text(hit)
        assert text == live_text and "30 days" in text
        assert last["citations"] == live_last["citations"] and last["citations"]


# --- shared Redis, and Redis going away --------------------------------------------------------------


def test_two_workers_share_one_redis_cache(serve: ServerFactory, redis_url: str) -> None:
    with FakeOpenAIServer(default=Reply(text="shared", usage=(5, 1))) as upstream:
        api = _gateway(serve, upstream, backend="postgres")
        assert api.spec.server.redis_url == redis_url
        with LiveServer(create_app(api.spec)) as second, api.client(api.keys.ops) as c:
            _ask(c, "Where is the office?")
            _until(lambda: _ask(c, "Where is the office?"), "hit-exact")
            other = httpx.Client(base_url=second, headers={"Authorization": f"Bearer {api.keys.ops}"})
            with other:
                assert _ask(other, "Where is the office?").headers[HEADER] == "hit-exact"
                assert _ask(other, "Where's the office?").headers[HEADER] == "hit-semantic"
        assert len(upstream.requests) == 1


def test_redis_going_away_degrades_to_no_cache_with_a_warning(
    serve: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The cache on a Redis of its own (``server.cache_redis_url``), stopped mid-run: requests
    go on without the cache (the rate limits, in SQLite here, are untouched)."""
    with FakeOpenAIServer(default=Reply(text="still answered", usage=(5, 1))) as upstream:
        with redis_server(tmp_path / "cache-redis") as cache_url:
            api = serve(
                models={"up": {"provider": "openai", "model": "m", "base_url": upstream.url, "max_retries": 0}},
                routes={"gw": {"models": ["up"], "grounded": False, "cache": {}},
                        "default": {"models": ["up"], "grounded": False}},
                server={"cache_redis_url": cache_url},
            )  # fmt: skip
            c = api.client(api.keys.ops)
            _ask(c, "Are you there?")
            _until(lambda: _ask(c, "Are you there?"), "hit-exact")
        with caplog.at_level(logging.WARNING, logger="stanchion.cache"):
            for _ in range(3):
                r = _ask(c, "Are you there?")
                assert r.json()["choices"][0]["message"]["content"] == "still answered"
                assert r.headers[HEADER] == "unavailable"
        c.close()
        assert len(upstream.requests) == 4
        warnings = [rec for rec in caplog.records if "cache.unavailable" in rec.getMessage()]
        assert len(warnings) == 1  # once, not once per request


def test_a_gateway_routes_semantic_tier_is_opt_in(serve: ServerFactory) -> None:
    """`cache: {}` on a gateway route is the exact tier alone: a miss embeds nothing (a semantic
    miss would embed the question first). A grounded route's is on (retrieval embeds it anyway)."""
    with FakeOpenAIServer(default=Reply(text="ok", usage=(5, 1))) as upstream:
        models = {"up": {"provider": "openai", "model": "m", "base_url": upstream.url, "max_retries": 0}}
        api = serve(models=models, routes={"gw": {"models": ["up"], "grounded": False, "cache": {}},
                                           "default": {"models": ["up"], "grounded": False}})  # fmt: skip
        with api.client(api.keys.ops) as c:
            _ask(c, "How do I reset my password?")
            _until(lambda: _ask(c, "How do I reset my password?"), "hit-exact")
            assert _ask(c, "How can I reset my password?").headers[HEADER] == "miss"


def test_a_grounded_routes_semantic_tier_is_on_by_default(serve: ServerFactory) -> None:
    grounded = _grounded(serve)
    with grounded.client(grounded.keys.ops) as c:
        _ask(c, "What is the refund policy?", model="default")
        _until(lambda: _ask(c, "What is the refund policy?", model="default"), "hit-exact")
        assert _ask(c, "What's the refund policy?", model="default").headers[HEADER] == "hit-semantic"
