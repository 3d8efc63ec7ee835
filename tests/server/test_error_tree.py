"""Every error the server raises belongs to the one tree in errors.py and has an HTTP status; a
failed dependency's own words (provider messages, hosts, Redis URLs) go to the log, never to the
client, who gets a stable code, a short message and the request id."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import httpx
import pytest
from tests.server.conftest import Api, ServerFactory

import stanchion
from stanchion import errors
from stanchion.errors import StanchionError
from stanchion.server.errors import from_stanchion
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply
from stanchion.testing.services import free_port

# One instance of every class in the tree. A class added without an example fails the walk.
EXAMPLES: dict[type[StanchionError], StanchionError] = {
    errors.SpecError: errors.SpecError("bad", key_path="a.b"),
    errors.IngestError: errors.IngestError("x.txt", "unreadable"),
    errors.EmbeddingError: errors.EmbeddingError("embedder at http://10.0.0.7:8000 refused"),
    errors.StoreError: errors.StoreError("failed", backend="postgres", detail="LINE 1: SELECT"),
    errors.BackendUnavailable: errors.BackendUnavailable("down", backend="postgres"),
    errors.RateLimitBackendDown: errors.RateLimitBackendDown("down", backend="redis", url="redis://h:1/0"),
    errors.RedisUnavailable: errors.RedisUnavailable("cannot connect to Redis (127.0.0.1:1)"),
    errors.Conflict: errors.Conflict("another job holds this document", backend="sqlite"),
    errors.RedisError: errors.RedisError("ERR unknown command"),
    errors.SearchError: errors.SearchError("bad filter"),
    errors.ToolError: errors.ToolError("k: must be at most 20", tool="search"),
    errors.GuardError: errors.GuardError("PII detection failed", detail="OSError: model missing"),
    errors.InputBlocked: errors.InputBlocked(
        "messages[0]: refused as a prompt injection", reasons=("override",)
    ),
    errors.ModelError: errors.ModelError("failed", model="m"),
    errors.ModelHTTPError: errors.ModelHTTPError("500", model="m", status_code=500, body="internal"),
    errors.RateLimited: errors.RateLimited("429", model="m", retry_after=2.5),
    errors.BadRequest: errors.BadRequest("400", model="m", status_code=400),
    errors.ContextTooLong: errors.ContextTooLong("too long", model="m", status_code=400),
    errors.ContentFiltered: errors.ContentFiltered("filtered", model="m", status_code=400),
    errors.ModelTimeout: errors.ModelTimeout("slow", model="m"),
    errors.ModelUnavailable: errors.ModelUnavailable("refused by 10.0.0.8:443", model="m"),
    errors.AllModelsFailed: errors.AllModelsFailed([("m", errors.ModelTimeout("slow", model="m"))]),
}


# Command-line tools whose errors never reach the server (``stanchion bench``'s BenchError).
TOOLS = ("stanchion.bench.", "stanchion.evals.")


def _tree() -> set[type[StanchionError]]:
    """Every subclass of StanchionError the server can meet (all its modules imported)."""
    for module in pkgutil.walk_packages(stanchion.__path__, "stanchion."):
        if module.name.endswith("__main__") or module.name.startswith(TOOLS):
            continue
        try:
            importlib.import_module(module.name)
        except ImportError:  # an optional extra that is not installed defines nothing we raise
            continue
    found: set[type[StanchionError]] = set()
    todo = [StanchionError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if not sub.__module__.startswith(TOOLS):
                found.add(sub)
            todo.append(sub)
    return found


class TestTheTree:
    def test_every_class_is_drawn_in_errors_py_and_maps_to_a_status(self) -> None:
        """Each error class lives in errors.py, is named in its drawing, and is never a 500."""
        tree = _tree()
        outside = sorted(f"{c.__module__}.{c.__name__}" for c in tree if c.__module__ != "stanchion.errors")
        assert outside == [], "errors raised outside the tree"
        undrawn = sorted(c.__name__ for c in tree if c.__name__ not in (errors.__doc__ or ""))
        assert undrawn == [], "classes missing from the drawing in errors.py"
        assert tree == set(EXAMPLES), "add an example of each new class to EXAMPLES"
        statuses = {cls.__name__: from_stanchion(exc).status for cls, exc in EXAMPLES.items()}
        assert [name for name, status in statuses.items() if status == 500] == []

    def test_the_redis_client_raises_members_of_the_tree(self) -> None:
        """The rate limiter's Redis errors are store errors: a 503, not a 500."""
        from stanchion import redis_client

        assert issubclass(redis_client.RedisError, errors.StoreError)
        assert issubclass(redis_client.RedisUnavailable, errors.BackendUnavailable)
        assert from_stanchion(redis_client.RedisUnavailable("gone")).code == "backend_unavailable"

    @pytest.mark.parametrize(
        "cls", [errors.EmbeddingError, errors.ModelUnavailable, errors.StoreError, errors.RedisUnavailable]
    )
    def test_a_dependency_failure_says_nothing_of_its_internals(self, cls: type[StanchionError]) -> None:
        """A failed dependency's message (hosts, SQL) stays out of what the client reads."""
        api = from_stanchion(EXAMPLES[cls])
        assert api.status >= 500
        for secret in ("10.0.0", "127.0.0.1", "LINE 1", "SELECT"):
            assert secret not in api.message


def _gateway(serve: ServerFactory, backend: str, upstream_url: str, **server: object) -> Api:
    up = {"provider": "openai", "model": "fake-model", "base_url": upstream_url, "max_retries": 0}
    return serve(
        backend=backend,
        models={"up": up, "extractive": {"provider": "extractive"}},
        routes={"gw": {"models": ["up"], "grounded": False}, "default": {"models": ["extractive"]}},
        server=server,
    )


def _chat(c: httpx.Client, *, stream: bool, request_id: str) -> tuple[int, str]:
    body = {"model": "gw", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    with c.stream("POST", "/v1/chat/completions", json=body, headers={"X-Request-ID": request_id}) as r:
        return r.status_code, r.read().decode()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
class TestThroughTheApi:
    def test_upstream_error_text_goes_to_the_log_not_the_client(
        self, serve: ServerFactory, backend: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The provider's message and the upstream's address never reach the client; the request
        id does, and the log has the detail."""
        leak = {"error": {"message": "db-7.internal:5432 is down, token sk-upstream-secret"}}
        with FakeOpenAIServer(default=Reply(status=400, body=leak)) as upstream:
            api = _gateway(serve, backend, upstream.url)
            with api.client(api.keys.ops) as c, caplog.at_level("WARNING", logger="stanchion.server.errors"):
                for stream in (False, True):
                    status, text = _chat(c, stream=stream, request_id=f"rid-{stream}")
                    assert status == (200 if stream else 502), text  # a stream's error is an event
                    assert "upstream_rejected" in text and f"rid-{stream}" in text
                    for secret in ("db-7.internal", "sk-upstream", upstream.url.split("//")[1]):
                        assert secret not in text
        assert any("db-7.internal" in str(getattr(r, "detail", "")) for r in caplog.records)

    def test_an_unreachable_upstream_is_a_502_naming_no_host(
        self, serve: ServerFactory, backend: str
    ) -> None:
        """A refused connection is upstream_error; the host:port it tried stays in the log."""
        port = free_port()
        api = _gateway(serve, backend, f"http://127.0.0.1:{port}/v1")
        with api.client(api.keys.ops) as c:
            for stream in (False, True):
                status, text = _chat(c, stream=stream, request_id="rid-1")
                assert status == (200 if stream else 502), text
                assert "upstream_error" in text and "rid-1" in text and str(port) not in text, text

    def test_a_rate_limit_store_down_is_a_503_on_every_path(
        self, serve: ServerFactory, backend: str, tmp_path: Path
    ) -> None:
        """Plain and streamed requests (the stream fast path included) get 503
        backend_unavailable, never a 500, and the message names no store."""
        with FakeOpenAIServer(default=Reply(text="hello", usage=(1, 1))) as upstream:
            if backend == "postgres":
                dead = f"redis://:pw@127.0.0.1:{free_port()}/0"
                api = _gateway(serve, backend, upstream.url, redis_url=dead)
                hidden = dead.split("@")[1].split("/")[0]
            else:  # the SQLite limiter's file cannot be opened: a directory stands in its place
                (tmp_path / "state.limits.db").mkdir()
                api = _gateway(serve, backend, upstream.url)
                hidden = "state.limits.db"
            with api.client(api.keys.ops) as c:
                for stream in (False, True):
                    status, text = _chat(c, stream=stream, request_id="rid-2")
                    assert status == 503, text
                    error = json.loads(text)["error"]
                    assert error["code"] == "backend_unavailable" and "rid-2" in error["message"]
                    assert hidden not in text
                r = c.post("/v1/search", json={"query": "refund"})
                assert r.status_code == 503 and r.headers["retry-after"] == "1"
