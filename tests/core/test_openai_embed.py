"""The OpenAI-compatible embedder against a fake /v1/embeddings server on real loopback HTTP."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import numpy as np
import pytest

from stanchion.core.openai_embed import OpenAIEmbedder
from stanchion.errors import EmbeddingError


class FakeEmbeddings(BaseHTTPRequestHandler):
    """Answers like OpenAI (rows out of order, unnormalised) and records every request."""

    received: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if self.status != 200:
            self.send_response(self.status)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "overloaded"}}')
            return
        data = [
            {"index": i, "embedding": [b * 3.0 for b in hashlib.sha256(text.encode()).digest()[:6]]}
            for i, text in enumerate(body["input"])
        ]
        payload = json.dumps({"data": list(reversed(data)), "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    FakeEmbeddings.received = []
    FakeEmbeddings.status = 200
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeEmbeddings)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_batches_orders_and_normalises(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBED_KEY", "sk-test-secret")
    embedder = OpenAIEmbedder(base_url=server, model="text-embed-x", api_key_env="EMBED_KEY", batch_size=2)
    vectors = embedder.embed(["a", "b", "c"])
    assert vectors.shape == (3, 6) and embedder.dim == 6
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    expected_a = np.array(list(hashlib.sha256(b"a").digest()[:6]), dtype=np.float32)
    np.testing.assert_allclose(vectors[0], expected_a / np.linalg.norm(expected_a), atol=1e-6)
    sent = FakeEmbeddings.received
    assert [r["body"]["input"] for r in sent[:2]] == [["a", "b"], ["c"]]
    assert sent[0]["path"] == "/v1/embeddings" and sent[0]["auth"] == "Bearer sk-test-secret"
    assert "sk-test-secret" not in repr(embedder)


def test_server_error_is_an_embedding_error(server: str) -> None:
    FakeEmbeddings.status = 503
    with pytest.raises(EmbeddingError, match="HTTP 503"):
        OpenAIEmbedder(base_url=server, model="m").embed(["x"])


def test_missing_key_names_the_variable(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    with pytest.raises(EmbeddingError, match="NOT_SET_KEY"):
        OpenAIEmbedder(base_url=server, model="m", api_key_env="NOT_SET_KEY").embed(["x"])


def test_down_backend() -> None:
    with pytest.raises(EmbeddingError, match="unreachable"):
        OpenAIEmbedder(base_url="http://127.0.0.1:9/v1", model="m", timeout_s=2).embed(["x"])
