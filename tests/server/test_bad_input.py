"""Bad input is a 4xx that names what is wrong, a failure after a stream started ends the stream
with an error event and ``[DONE]``, and a 500 leaves the connection open, on both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import httpx
import pytest
from tests.server.conftest import Api, ServerFactory

from stanchion.core.embed import ProgressCallback, SentenceTransformerEmbedder, Vectors
from stanchion.errors import SpecError
from stanchion.spec import parse_spec
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply

BACKENDS = ["sqlite", "postgres"]
CHAT = "/v1/chat/completions"


class BrokenEmbedder:
    """The real model's name and size, but every embedding fails as a bug in our code would (a
    plain RuntimeError, not an error of the package's tree)."""

    def __init__(self, real: SentenceTransformerEmbedder) -> None:
        self.real = real

    @property
    def name(self) -> str:
        return self.real.name

    @property
    def dim(self) -> int:
        return self.real.dim

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        raise RuntimeError("a bug in the embedder")


class BreaksAfterRetrieval(BrokenEmbedder):
    """Embeds the question (retrieval, before the stream's head) and the worker's warm-up, then
    meets a bug on anything else: the extractive model's and the verifier's sentences, which a
    grounded stream embeds after its head is sent."""

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        if set(texts) <= {QUESTION, "warm up"}:
            return self.real.embed(texts)
        return super().embed(texts, progress=progress)


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=Reply(text="one two three", usage=(5, 3))) as server:
        yield server


def _gateway(serve: ServerFactory, backend: str, upstream: FakeOpenAIServer, **server: Any) -> Api:
    up = {"provider": "openai", "model": "fake-model", "base_url": upstream.url, "max_retries": 0}
    return serve(
        backend,
        models={"up": up, "extractive": {"provider": "extractive"}},
        routes={"gw": {"models": ["up"], "grounded": False}, "default": {"models": ["extractive"]}},
        server=server,
    )


QUESTION = "How long do refunds take?"


def _ask(route: str = "default", content: object = QUESTION, **body: Any) -> dict[str, Any]:
    return {"model": route, "messages": [{"role": "user", "content": content}], **body}


def _events(client: httpx.Client, body: dict[str, Any]) -> tuple[int, list[str]]:
    with client.stream("POST", CHAT, json=body) as r:
        r.read()
        return r.status_code, [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    return error


class TestFilters:
    BAD: ClassVar[dict[str, str]] = {
        "k=,,,": "give at least one value",  # was an empty IN list: an SQL syntax error
        "k=" + "1" + "0" * 30: "integers must fit in 64 bits",  # was an OverflowError binding it
        "k=" + "9" * 400: "integers must fit in 64 bits",
        "k>1e400": "numbers must be finite",  # was an OverflowError in float()
        "k=a,-1e999": "numbers must be finite",
    }

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_bad_filter_is_a_400_naming_it_everywhere(self, serve: ServerFactory, backend: str) -> None:
        """Search, answer and chat (plain and streamed) answer 400 naming the filter's key."""
        api = serve(backend)
        with api.client(api.keys.ops) as c:
            for expr, reason in self.BAD.items():
                for r in (
                    c.post("/v1/search", json={"query": "refund", "filters": [expr]}),
                    c.post("/v1/answer", json={"question": "How long do refunds take?", "filters": [expr]}),
                    c.post(CHAT, json=_ask(filters=[expr])),
                    c.post(CHAT, json=_ask(filters=[expr], stream=True)),
                ):
                    error = _error(r, 400)
                    assert error["code"] == "invalid_request"
                    assert error["message"].startswith("filter k: ") and reason in error["message"], expr
            # A good filter still works.
            assert c.post("/v1/search", json={"query": "refund", "filters": ["k=1,2"]}).status_code == 200


class TestText:
    """One rule for text from outside: no NUL (PostgreSQL text cannot hold it), no lone surrogate."""

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_nul_is_a_422_naming_the_parameter(self, serve: ServerFactory, backend: str) -> None:
        api = serve(backend)
        cases = [
            ("ops", "POST", "/v1/search", {"query": "refund", "filters": ["team=a\x00b"]}, "filters.0"),
            # Audited text: on PostgreSQL the audit record was lost.
            ("ops", "POST", "/v1/search", {"query": "refund\x00"}, "query"),
            ("ops", "POST", "/v1/answer", {"question": "refund\x00?"}, "question"),
            ("ops", "POST", CHAT, _ask(content="refund\x00?"), "messages.0.user.content"),
            ("ops", "GET", "/v1/documents/acme-public:refunds.md%00", None, "path.document_id"),
            ("ingest", "DELETE", "/v1/documents/x%00", None, "path.document_id"),
            ("ops", "GET", "/v1/documents?source=a%00", None, "query.source"),
            ("ops", "GET", "/v1/documents?after=a%00", None, "query.after"),
            ("ingest", "GET", "/v1/jobs?before=a%00", None, "query.before"),
            ("ingest", "GET", "/v1/jobs/a%00", None, "path.job_id"),
            ("admin", "GET", "/v1/audit?user=a%00", None, "query.user"),
            ("admin", "GET", "/v1/audit?action=a%00", None, "query.action"),
        ]
        for key, method, url, body, param in cases:
            with api.client(getattr(api.keys, key)) as c:
                error = _error(c.request(method, url, json=body), 422)
            assert error["code"] == "invalid_request" and error["param"] == param, url
            assert "NUL" in error["message"]

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_lone_surrogate_in_a_chat_message_is_a_422(
        self, serve: ServerFactory, backend: str, upstream: FakeOpenAIServer
    ) -> None:
        """As text, as a content part, streamed or not, on a grounded route and a gateway route."""
        api = _gateway(serve, backend, upstream)
        bodies = [
            _ask(content="refunds \ud800"),
            _ask(content="refunds \ud800", stream=True),
            _ask(content=[{"type": "text", "text": "\udfff refunds"}], stream=True),
            _ask("gw", content="hi \ud800", stream=True),  # the fast path hands it to FastAPI
        ]
        with api.client(api.keys.ops) as c:
            for body in bodies:
                # json.dumps escapes the surrogate as \ud800, the way a JSON client sends one.
                r = c.post(CHAT, content=json.dumps(body), headers={"Content-Type": "application/json"})
                error = _error(r, 422)
                assert error["param"] == "messages.0.user.content"
                assert "lone surrogate" in error["message"]
        assert upstream.requests == []


class TestMalformedBodies:
    BODIES: ClassVar[dict[str, bytes]] = {
        "truncated": b'{"query": ',
        "not UTF-8": b'{"query": "caf\xe9"}',
        "nested too deeply": b"[" * 100_000 + b"]" * 100_000,
        "a number too long": b'{"query": 1' + b"1" * 5000 + b"}",
    }

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_body_that_is_not_json_is_a_422(self, serve: ServerFactory, backend: str) -> None:
        """As the README says: 422 ``invalid_request``, a message saying why, no made-up param."""
        api = serve(backend, server={"max_body_mb": 2})
        with api.client(api.keys.ops) as c:
            for path in ("/v1/search", CHAT):
                for name, raw in self.BODIES.items():
                    r = c.post(path, content=raw, headers={"Content-Type": "application/json"})
                    error = _error(r, 422)
                    assert error["code"] == "invalid_request" and error["param"] is None, (path, name)
                    assert error["message"].startswith("the request body is not valid JSON: "), error


class TestMidStreamFailures:
    """Once the head is sent, a failure is an error event in the API's error shape, then [DONE]."""

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_bug_mid_stream_ends_with_an_error_event_and_done(
        self, serve: ServerFactory, embedder: SentenceTransformerEmbedder, backend: str
    ) -> None:
        api = serve(backend, server_embedder=BreaksAfterRetrieval(embedder))
        with api.client(api.keys.ops) as c:
            # A grounded stream retrieves before its head; the bug comes while it answers.
            status, events = _events(c, _ask(stream=True))
        assert status == 200 and events[-1] == "[DONE]", events
        error = json.loads(events[-2])["error"]
        assert error["code"] == "internal_error" and error["type"] == "server_error"
        assert "bug" not in error["message"]  # nothing internal reaches the client

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_an_upstream_failure_mid_stream_ends_with_an_error_event_and_done(
        self, serve: ServerFactory, backend: str, upstream: FakeOpenAIServer
    ) -> None:
        """A gateway stream (served by the fast path) whose model dies after two tokens."""
        api = _gateway(serve, backend, upstream)
        upstream.script(Reply(text="one two three four", die_after_tokens=2))
        with api.client(api.keys.ops) as c:
            status, events = _events(c, _ask("gw", content="hi", stream=True))
        assert status == 200 and events[-1] == "[DONE]", events
        text = "".join(
            json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-2] if "choices" in e
        )
        assert text == "one two "
        error = json.loads(events[-2])["error"]
        assert error["code"] == "upstream_error" and error["type"] == "server_error"

    def test_a_base_url_with_credentials_is_a_spec_error(self) -> None:
        """aiohttp refuses such a URL mid-request; the spec refuses it up front, naming the key."""
        for raw, where in (
            ({"models": {"up": {"provider": "openai", "base_url": "http://u:s3cret@h/v1"}}}, "models.up"),
            ({"embedding": {"provider": "openai", "base_url": "https://s3cret@h/v1"}}, "embedding"),
        ):
            with pytest.raises(SpecError) as caught:
                parse_spec({**raw, "routes": {"default": {"models": ["up"]}}} if "models" in raw else raw)
            assert caught.value.key_path == f"{where}.base_url"
            assert "credentials" in str(caught.value) and "s3cret" not in str(caught.value)


class TestServerErrors:
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_500_keeps_the_connection_for_the_next_request(
        self, serve: ServerFactory, embedder: SentenceTransformerEmbedder, backend: str
    ) -> None:
        """One pooled client: a request that meets a bug (500), then a normal one on the same socket."""
        api = serve(backend, server_embedder=BrokenEmbedder(embedder))
        with api.client(api.keys.ops) as c:
            failed = c.post("/v1/embeddings", json={"model": embedder.name, "input": ["refunds"]})
            first_socket = _local_address(failed)
            ok = c.post("/v1/search", json={"query": "refund", "mode": "bm25"})
            assert ok.status_code == 200, ok.text
            assert first_socket is not None and _local_address(ok) == first_socket  # still open
        error = _error(failed, 500)
        assert error["code"] == "internal_error" and "bug" not in error["message"]
        assert failed.headers.get("connection") != "close"

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_models_needs_the_query_scope_and_counts_against_the_rate_limit(
        self, serve: ServerFactory, backend: str
    ) -> None:
        api = serve(backend, server={"rate_limits": {"requests_per_minute": 1}})
        state = api.state()
        try:
            _, ingest_only = state.create_key(tenant="acme", user="bot", scopes=["ingest"])
        finally:
            state.close()
        with api.client(ingest_only) as c:
            assert _error(c.get("/v1/models"), 403)["code"] == "insufficient_scope"
        with api.client(api.keys.ops) as c:
            assert c.get("/v1/models").status_code == 200
            limited = c.get("/v1/models")
        assert _error(limited, 429)["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1


def _local_address(response: httpx.Response) -> object:
    """The client's end of the connection that carried ``response`` (None once it is closed)."""
    try:
        return response.extensions["network_stream"].get_extra_info("client_addr")
    except OSError:
        return None
