"""The request pipeline (``stanchion.pipeline``): one order of stages for every endpoint.

A stage that records what it saw is placed at every position, then each endpoint that reaches a
model or the index is driven through it: chat completions (grounded and gateway, plain and
streamed, the fast streaming path included), ``/v1/answer``, ``/v1/search`` and
``/v1/embeddings`` on both backends, and the CLI's ``ask``, ``chat`` and ``search``. Each request
must pass every position once, in order, with its own context (tenant, user, route).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.server.conftest import write_corpus
from tests.server.test_accounting import Served, Start, start  # noqa: F401  (the fixture: both backends)
from typer.testing import CliRunner

from stanchion.app import build
from stanchion.cli import app as cli
from stanchion.cli.common import operator
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.errors import ModelError
from stanchion.pipeline import POSITIONS, Call, Pipeline, RequestContext, Step, wiring
from stanchion.server.fast_stream import GatewayStreams
from stanchion.spec import load_spec
from stanchion.testing.fake_chat import FakeChatModel
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply


@dataclass(frozen=True)
class Seen:
    """What a recording stage saw of one call at its position."""

    position: str
    action: str
    tenant: str
    user: str
    route: str
    groups: frozenset[str] | None
    stream: bool
    request_id: str


class Recorder:
    def __init__(self, position: str, seen: list[Seen]) -> None:
        self.position = position
        self.seen = seen

    async def __call__(self, call: Call) -> None:
        c = call.context
        self.seen.append(
            Seen(self.position, call.action, c.tenant, c.user, c.route, c.groups, call.stream, c.request_id)
        )


def recording(seen: list[Seen]) -> Pipeline:
    """A pipeline with a recording stage at every position."""
    pipeline = Pipeline()
    for position in POSITIONS:
        pipeline = pipeline.with_stage(position, Recorder(position, seen))
    return pipeline


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Seen]:
    """What the recording stages saw; every pipeline built from the spec (server and CLI) has them."""
    records: list[Seen] = []
    monkeypatch.setattr(wiring, "pipeline_for", lambda app, **_: recording(records))
    return records


def wait_for(seen: list[Seen], count: int) -> list[Seen]:
    """The records, once there are ``count`` (a stream is closed after its last byte)."""
    deadline = time.monotonic() + 30
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return list(seen)


def passed_in_order(records: list[Seen]) -> list[str]:
    return [r.position for r in records]


class TestPipelineOrder:
    """The pipeline itself, without an endpoint."""

    def test_every_position_runs_once_in_order(self) -> None:
        """Stages run in the order of POSITIONS, the endpoint's steps after the stages of their place."""
        seen: list[Seen] = []

        def step(name: str) -> Step:
            async def run(call: Call) -> None:
                seen.append(Seen(f"{name} step", call.action, "", "", "", None, False, ""))

            return run

        call = Call(RequestContext("t", "u", route="r"), "answer")
        steps = {"check": step("check_input"), "retrieve": step("retrieve"), "generate": step("generate")}
        asyncio.run(recording(seen).run(call, **steps))
        assert passed_in_order(seen) == [
            "admit",
            "check_input",
            "check_input step",
            "cache_lookup",
            "retrieve",
            "retrieve step",
            "generate",
            "generate step",
            "check_output",
            "cache_store",
            "account",
        ]

    def test_a_call_served_at_cache_lookup_skips_retrieve_and_generate(self) -> None:
        """A stage that answers at cache_lookup (a cache hit) ends the work: neither retrieve nor
        generate runs, stage or step; the answer is still checked, stored and accounted."""
        seen: list[Seen] = []

        async def hit(call: Call) -> None:
            call.result, call.served = "from the cache", True

        async def must_not_run(call: Call) -> None:
            raise AssertionError("a served call retrieved or generated")

        pipeline = recording(seen).with_stage("cache_lookup", hit)
        call = Call(RequestContext("t", "u", route="r"), "answer")
        asyncio.run(pipeline.run(call, retrieve=must_not_run, generate=must_not_run))
        assert call.result == "from the cache"
        assert passed_in_order(seen) == [
            "admit",
            "check_input",
            "cache_lookup",
            "check_output",
            "cache_store",
            "account",
        ]

    def test_a_call_refused_at_admission_or_input_check_is_not_accounted(self) -> None:
        """A 429 or a 422 stops the call before it is accepted: nothing past that place runs."""

        async def refuse(call: Call) -> None:
            raise ValueError("bad input")

        for place in ("admit", "check_input"):
            seen: list[Seen] = []
            pipeline = recording(seen).with_stage(place, refuse)
            call = Call(RequestContext("t"), "search")
            with pytest.raises(ValueError, match="bad input"):
                asyncio.run(pipeline.run(call))
            assert passed_in_order(seen) == list(POSITIONS[: POSITIONS.index(place) + 1])
            assert not call.accepted

    def test_a_call_that_fails_after_acceptance_is_accounted_with_its_status(self) -> None:
        """A model error skips the output check and the cache, but the call is still accounted."""
        seen: list[Seen] = []

        async def fails(call: Call) -> None:
            raise ModelError("upstream down")

        call = Call(RequestContext("t"), "answer")
        pipeline = recording(seen)
        with pytest.raises(ModelError):
            asyncio.run(pipeline.run(call, generate=fails))
        assert passed_in_order(seen) == [*POSITIONS[:5], "account"]
        assert call.outcome.status == 500 and call.error is not None

    def test_an_unknown_position_is_refused(self) -> None:
        """A stage must name one of the places of the order."""
        with pytest.raises(ValueError, match="no pipeline position 'later'"):
            Pipeline([("later", Recorder("later", []))])  # type: ignore[list-item]


# --- the API -------------------------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=Reply(text="one two three", usage=(5, 3))) as server:
        yield server


def serve_routes(start: Start, upstream: FakeOpenAIServer) -> Served:  # noqa: F811
    up = {"provider": "openai", "model": "fake-model", "base_url": upstream.url, "max_retries": 0}
    return start(
        models={"up": up, "extractive": {"provider": "extractive"}},
        routes={"gw": {"models": ["up"], "grounded": False}, "default": {"models": ["extractive"]}},
    )


CHAT = {"messages": [{"role": "user", "content": "How long do refunds take?"}]}
# (name, path, body, the call's action, the context's route)
REQUESTS: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("grounded chat", "/v1/chat/completions", {"model": "default", **CHAT}, "chat.completions", "default"),
    (
        "grounded chat, streamed",
        "/v1/chat/completions",
        {"model": "default", "stream": True, **CHAT},
        "chat.completions",
        "default",
    ),
    ("gateway chat", "/v1/chat/completions", {"model": "gw", **CHAT}, "chat.completions", "gw"),
    (
        "gateway chat, streamed (fast path)",
        "/v1/chat/completions",
        {"model": "gw", "stream": True, **CHAT},
        "chat.completions",
        "gw",
    ),
    (
        "answer",
        "/v1/answer",
        {"question": "How long do refunds take?", "route": "default"},
        "answer",
        "default",
    ),
    ("search", "/v1/search", {"query": "refund"}, "search", ""),
]


class TestEveryEndpointRunsThroughThePipeline:
    def test_each_request_passes_every_position_in_order_with_its_context(
        self,
        start: Start,  # noqa: F811
        upstream: FakeOpenAIServer,
        seen: list[Seen],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Every endpoint, plain and streamed: each position once, in order, with the caller's
        tenant and user, the request's route and its request id."""
        fast: list[bool] = []
        original = GatewayStreams._stream

        async def counting(self: GatewayStreams, *args: Any) -> Any:
            response = await original(self, *args)
            fast.append(response is not None)
            return response

        monkeypatch.setattr(GatewayStreams, "_stream", counting)
        served = serve_routes(start, upstream)
        embedding = {"model": served.api.spec.embedding.model, "input": "refunds"}
        requests = [*REQUESTS, ("embeddings", "/v1/embeddings", embedding, "embeddings", "")]
        with served.api.client(served.api.keys.ops) as client:
            for name, path, body, action, route in requests:
                seen.clear()
                if body.get("stream"):
                    with client.stream("POST", path, json=body) as r:
                        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
                    assert lines[-1] == "data: [DONE]", (name, lines)
                else:
                    r = client.post(path, json=body)
                assert r.status_code == 200, (name, r.text)
                records = wait_for(seen, len(POSITIONS))
                assert passed_in_order(records) == list(POSITIONS), name
                assert {(s.action, s.tenant, s.user, s.route, s.stream) for s in records} == {
                    (action, "acme", "acme-user", route, bool(body.get("stream")))
                }, name
                assert {s.request_id for s in records} == {r.headers["x-request-id"]}, name
                assert {s.groups for s in records} == {frozenset({"ops"})}, name
        assert fast.count(True) == 1  # the streamed gateway request, and only it, took the fast path

    def test_a_refused_request_stops_at_admission(
        self,
        start: Start,  # noqa: F811
        upstream: FakeOpenAIServer,
        seen: list[Seen],
    ) -> None:
        """A key without the query scope is refused at ``admit``: no later stage sees the request."""
        served = serve_routes(start, upstream)
        with served.api.client(served.api.keys.ingest) as client:  # query + ingest: admitted
            assert client.post("/v1/search", json={"query": "refund"}).status_code == 200
        assert passed_in_order(wait_for(seen, len(POSITIONS))) == list(POSITIONS)
        seen.clear()
        with httpx.Client(base_url=served.api.url, timeout=60) as anonymous:
            assert anonymous.post("/v1/search", json={"query": "refund"}).status_code == 401
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
        with served.api.client(served.api.keys.ops) as client:
            r = client.post("/v1/chat/completions", json={"model": "default", "tools": tools, **CHAT})
            assert r.status_code == 422, r.text  # a grounded route takes no tools: refused at the input check
        assert passed_in_order(seen) == ["admit", "check_input"]

    def test_the_document_endpoints_pass_every_position_with_their_scope(
        self,
        start: Start,  # noqa: F811
        upstream: FakeOpenAIServer,
        seen: list[Seen],
    ) -> None:
        """Upload, list, get and delete reach the index: each passes every position once, in
        order, as its caller; an upload without the ``ingest`` scope stops at ``admit``."""
        served = serve_routes(start, upstream)
        api = served.api

        def passes(records: list[Seen], action: str, user: str) -> None:
            assert passed_in_order(records) == list(POSITIONS), action
            assert {(s.action, s.tenant, s.user) for s in records} == {(action, "acme", user)}

        upload = {"filename": "note.md", "text": "The depot opens at six."}
        with api.client(api.keys.ingest) as client:
            seen.clear()
            assert client.post("/v1/documents", json=upload).status_code == 202
            passes(wait_for(seen, len(POSITIONS)), "documents.upload", "acme-user")
            seen.clear()
            listed = client.get("/v1/documents")
            assert listed.status_code == 200 and listed.json()["data"]
            passes(wait_for(seen, len(POSITIONS)), "documents.list", "acme-user")
            document = listed.json()["data"][0]["id"]
            seen.clear()
            assert client.get(f"/v1/documents/{document}").status_code == 200
            passes(wait_for(seen, len(POSITIONS)), "documents.get", "acme-user")
        with api.client(api.keys.admin) as client:
            seen.clear()
            assert client.delete(f"/v1/documents/{document}").status_code == 200
            passes(wait_for(seen, len(POSITIONS)), "documents.delete", "acme-user")
            seen.clear()
            assert client.get(f"/v1/documents/{document}").status_code == 404
            assert passed_in_order(seen) == ["admit", "check_input", "cache_lookup", "retrieve", "account"]
        with api.client(api.keys.ops) as client:  # query only
            seen.clear()
            assert client.post("/v1/documents", json=upload).status_code == 403
        assert passed_in_order(seen) == []  # refused by the admit stage, before any stage after it

    def test_every_model_call_is_told_whose_request_it_serves(
        self,
        start: Start,  # noqa: F811
        upstream: FakeOpenAIServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The context reaches the ChatModel (``ChatOptions.context``) on grounded and gateway
        routes, plain and streamed."""
        served = serve_routes(start, upstream)
        model = FakeChatModel("fake", default="Refunds are paid within five business days [1].")
        monkeypatch.setattr(served.app.state.ctx.app, "route_model", lambda name=None: model)
        with served.api.client(served.api.keys.ops) as client:
            for body in (
                {"model": "default", **CHAT},
                {"model": "gw", **CHAT},
                {"model": "gw", "stream": True, **CHAT},
            ):
                r = client.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
            r = client.post("/v1/answer", json={"question": "How long do refunds take?", "route": "default"})
            assert r.status_code == 200, r.text
        told = [c.options.context if c.options is not None else None for c in model.calls]
        assert len(told) >= 4 and None not in told
        contexts = [c for c in told if c is not None]
        assert {(c.tenant, c.user, c.key_id != "") for c in contexts} == {("acme", "acme-user", True)}
        assert [c.route for c in contexts].count("gw") == 2  # the gateway's plain and streamed calls
        assert {c.route for c in contexts} == {"default", "gw"}  # the grounded answers' calls: default


# --- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def spec_file(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Path:
    """A stanchion.yaml over the server tests' corpus, ingested."""
    write_corpus(tmp_path)
    path = tmp_path / "stanchion.yaml"
    path.write_text(
        f"index: {{path: {tmp_path / 'index.db'}}}\n"
        "sources:\n"
        f"  - {{name: public, path: {tmp_path / 'acme/public'}}}\n"
        f"  - {{name: finance, path: {tmp_path / 'acme/finance'}, access_groups: [finance]}}\n",
        encoding="utf-8",
    )
    app = build(load_spec(path), embedder=embedder)
    try:
        assert app.pipeline.run().documents == 2
    finally:
        app.close()
    return path


class TestTheCLIRunsThroughThePipeline:
    @pytest.mark.parametrize(
        ("args", "action", "route", "groups", "stream"),
        [
            (["ask", "How long do refunds take?", "--json"], "ask", "default", None, False),
            (["ask", "How long do refunds take?", "--group", "finance"], "ask", "default", {"finance"}, True),
            (["search", "refund", "--json"], "search", "", None, False),
        ],
        ids=["ask --json", "ask (streamed) --group", "search"],
    )
    def test_a_command_passes_every_position_with_the_local_context(
        self,
        spec_file: Path,
        seen: list[Seen],
        args: list[str],
        action: str,
        route: str,
        groups: set[str] | None,
        stream: bool,
    ) -> None:
        """The spec's default tenant, the operator as user, the answer route, and the groups
        given with ``--group`` (none: no restriction)."""
        result = CliRunner().invoke(cli, [*args, "--spec", str(spec_file)])
        assert result.exit_code == 0, result.output
        assert passed_in_order(seen) == list(POSITIONS)
        expected = (
            action,
            "default",
            operator(),
            route,
            None if groups is None else frozenset(groups),
            stream,
        )
        assert {(s.action, s.tenant, s.user, s.route, s.groups, s.stream) for s in seen} == {expected}

    def test_chat_runs_each_question_through_the_pipeline(self, spec_file: Path, seen: list[Seen]) -> None:
        """Two questions in one chat: two calls, each through every position in order."""
        result = CliRunner().invoke(
            cli,
            ["chat", "--spec", str(spec_file)],
            input="How long do refunds take?\nAnd to which card?\nexit\n",
        )
        assert result.exit_code == 0, result.output
        assert passed_in_order(seen) == [*POSITIONS, *POSITIONS]
        assert {(s.action, s.tenant, s.route, s.stream) for s in seen} == {
            ("chat", "default", "default", True)
        }
