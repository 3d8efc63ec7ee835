"""Spec keys that must reach the figures (remote embeddings, the chunk tokenizer, retrieval
defaults), and usage credited to the model that produced it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.server.test_accounting import Start, start  # noqa: F401  (the fixture: both backends)

from stanchion.app import build
from stanchion.errors import EmbeddingError
from stanchion.models.pricing import model_costs, usage_cost_usd
from stanchion.spec import EmbeddingSpec, PriceSpec, RetrievalSpec, Spec
from stanchion.testing.fake_openai import FakeOpenAIServer
from stanchion.types import Usage

KEY_ENV = "STANCHION_TEST_EMBED_KEY"
SECRET = "sk-embed-test-0123456789"


def remote_embedding(fake: FakeOpenAIServer) -> EmbeddingSpec:
    return EmbeddingSpec(
        provider="openai", model="text-embedding-3-small", base_url=fake.url, api_key_env=KEY_ENV
    )


def embedded_texts(fake: FakeOpenAIServer) -> list[str]:
    """Every text the fake's /v1/embeddings received, checking each request's model and key."""
    posts = [r for r in fake.requests if r.path == "/v1/embeddings"]
    assert posts, "nothing was embedded remotely"
    for post in posts:
        assert post.json["model"] == "text-embedding-3-small"
        assert post.headers["authorization"] == f"Bearer {SECRET}"
    return [text for post in posts for text in post.json["input"]]


class TestUsageByModel:
    def test_a_sum_keeps_each_models_share(self) -> None:
        """Adding usages adds each model's tokens to its own share, in order of first use."""
        total = Usage(10, 2).attributed("a") + Usage(5, 1).attributed("b") + Usage(1, 1).attributed("a")
        assert (total.input_tokens, total.output_tokens) == (16, 4)
        assert total.by_model == (("a", Usage(11, 3)), ("b", Usage(5, 1)))

    def test_attributed_credits_only_what_no_model_was_credited_with(self) -> None:
        """A wrapper crediting a usage its inner model already credited changes nothing."""
        inner = Usage(7, 3).attributed("backup")
        assert inner.attributed("router").by_model == (("backup", Usage(7, 3)),)
        assert Usage().attributed("a").by_model == ()

    def test_each_model_at_its_own_price(self) -> None:
        """Cost is the sum over the models that produced tokens; an unpriced model is free."""
        usage = Usage(1000, 100).attributed("small") + Usage(2000, 200).attributed("large")
        prices = {
            "small": PriceSpec(input_per_mtok=1, output_per_mtok=2),
            "large": PriceSpec(input_per_mtok=10),
        }
        assert [c.cost_usd for c in model_costs(usage, prices)] == [(1000 + 200) / 1e6, 20000 / 1e6]
        assert usage_cost_usd(usage, prices) == pytest.approx(21200 / 1e6)
        assert usage_cost_usd(
            usage.attributed("x") + Usage(5, 5).attributed("free"), prices
        ) == pytest.approx(21200 / 1e6)


class TestRemoteEmbeddings:
    def test_ingest_and_search_embed_through_the_spec_endpoint(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``embedding.provider: openai`` sends every chunk and every query to its ``base_url``,
        with the key from ``api_key_env``; chunk sizes are measured with MiniLM's tokenizer."""
        monkeypatch.setenv(KEY_ENV, SECRET)
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "refunds.md").write_text("# Refunds\n\nAcme refunds any order within 30 days of delivery.")
        with FakeOpenAIServer() as fake:
            spec = Spec.model_validate(
                {
                    "index": {"path": str(tmp_path / "index.db")},
                    "embedding": remote_embedding(fake).model_dump(),
                    "sources": [{"name": "docs", "path": str(docs)}],
                    "base_dir": tmp_path,
                }
            )
            app = build(spec)
            try:
                summary = app.pipeline.run()
                result = app.retriever.search("how long do refunds take", k=3, mode="dense")
                name = app.embedder.name
            finally:
                app.close()
            texts = embedded_texts(fake)
        assert summary.documents == 1 and name == "openai:text-embedding-3-small"
        assert any("30 days" in t for t in texts) and "how long do refunds take" in texts
        assert result.hits and "30 days" in result.hits[0].chunk.text

    def test_the_api_ingests_searches_and_embeds_through_it(
        self,
        start: Start,  # noqa: F811  (the fixture imported above)
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Through the server: the corpus, an upload (ingested by a job process), every search and
        /v1/embeddings go to the remote endpoint, never to the local model."""
        monkeypatch.setenv(KEY_ENV, SECRET)
        with FakeOpenAIServer(embedding_dim=12) as fake:
            served = start(update={"embedding": remote_embedding(fake)}, spec_embedder=True)
            api = served.api
            with api.client(api.keys.ingest) as c:
                text = "The Acme warehouse in Tilburg ships pallets every Tuesday."
                job = c.post("/v1/documents", json={"filename": "warehouse.md", "text": text}).json()
                deadline = time.monotonic() + 120
                while job["status"] not in ("done", "failed"):
                    assert time.monotonic() < deadline, job
                    time.sleep(0.2)
                    job = c.get(f"/v1/jobs/{job['id']}").json()
                assert job["status"] == "done", job
                found = c.post("/v1/search", json={"query": "pallets Tilburg Tuesday", "mode": "dense"})
                vectors = c.post(
                    "/v1/embeddings", json={"model": "text-embedding-3-small", "input": ["hello"]}
                )
            texts = embedded_texts(fake)
        assert found.status_code == 200, found.text
        assert any("Tilburg" in h["text"] for h in found.json()["hits"])
        assert vectors.status_code == 200 and len(vectors.json()["data"][0]["embedding"]) == 12
        assert any("Refunds are paid" in t for t in texts)  # the corpus
        assert any("Tilburg ships pallets" in t for t in texts)  # the upload, from the job process
        assert {"pallets Tilburg Tuesday", "hello"} <= set(texts)


class TestSpecKeysAreRead:
    def test_embedding_tokenizer_measures_the_chunks(self, tmp_path: Path) -> None:
        """``embedding.tokenizer`` is the tokenizer used; a missing one is an error, not ignored."""
        spec = Spec.model_validate(
            {"embedding": {"tokenizer": str(tmp_path / "no-such-tokenizer")}, "base_dir": tmp_path}
        )
        with pytest.raises(EmbeddingError):
            build(spec).tokenizer  # noqa: B018
        assert build(Spec(base_dir=tmp_path)).tokenizer.count("refund policy") > 0

    def test_retrieval_defaults_apply_to_api_search_and_answers(
        self,
        start: Start,  # noqa: F811  (the fixture imported above)
    ) -> None:
        """``retrieval.mode`` and ``retrieval.k`` are what /v1/search and the answerer use unless
        a request says otherwise."""
        served = start(update={"retrieval": RetrievalSpec(mode="bm25", k=1)})
        with served.api.client(served.api.keys.finance) as c:
            default = c.post("/v1/search", json={"query": "refund budget"}).json()
            asked = c.post("/v1/search", json={"query": "refund budget", "mode": "hybrid", "k": 5}).json()
        assert default["mode"] == "bm25" and len(default["hits"]) == 1
        assert asked["mode"] == "hybrid" and len(asked["hits"]) == 2
        app = build(served.api.spec)
        try:
            assert app.answerer().mode == "bm25"
        finally:
            app.close()
