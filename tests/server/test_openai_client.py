"""The official ``openai`` Python client against a live server on loopback HTTP, on both backends.

What a user following the README does: chat on a grounded and on a gateway route, streamed and
not, embeddings with the client's defaults, and the error an unknown model raises.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import openai
import pytest
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionStreamOptionsParam,
)
from tests.server.conftest import Api, ServerFactory

from stanchion.testing.fake_openai import FakeOpenAIServer, Reply

EMBEDDING_MODEL = "all-MiniLM-L6-v2"  # the spec's default embedding.model
REFUNDS: list[ChatCompletionMessageParam] = [{"role": "user", "content": "How long do refunds take?"}]


@dataclass
class Served:
    api: Api
    upstream: FakeOpenAIServer
    client: openai.OpenAI


@pytest.fixture(params=["sqlite", "postgres"])
def served(serve: ServerFactory, request: pytest.FixtureRequest) -> Iterator[Served]:
    """A grounded route ``default`` and a gateway route ``gw`` to a fake upstream; a client for an ops key."""
    with FakeOpenAIServer(default=Reply(text="Hello from upstream.", usage=(12, 4))) as upstream:
        api = serve(
            backend=request.param,
            models={
                "extractive": {"provider": "extractive"},
                "up": {
                    "provider": "openai",
                    "model": "fake-model",
                    "base_url": upstream.url,
                    "max_retries": 0,
                },
            },
            routes={"default": {"models": ["extractive"]}, "gw": {"models": ["up"], "grounded": False}},
        )
        with openai.OpenAI(base_url=api.url + "/v1", api_key=api.keys.ops, max_retries=0) as client:
            yield Served(api, upstream, client)


def _stream(served: Served, model: str, *, include_usage: bool) -> list[ChatCompletionChunk]:
    options: ChatCompletionStreamOptionsParam | openai.Omit = (
        {"include_usage": True} if include_usage else openai.omit
    )
    with served.client.chat.completions.create(
        model=model, messages=REFUNDS, stream=True, stream_options=options
    ) as stream:
        return list(stream)


def _text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _finishing(chunks: list[ChatCompletionChunk]) -> ChatCompletionChunk:
    (finishing,) = [c for c in chunks if c.choices and c.choices[0].finish_reason is not None]
    return finishing


class TestChat:
    def test_grounded_route_answers_with_citations(self, served: Served) -> None:
        """A grounded route's answer comes back as a ChatCompletion with citations as an extra field."""
        reply = served.client.chat.completions.create(model="default", messages=REFUNDS)
        assert "five business days" in (reply.choices[0].message.content or "")
        assert reply.choices[0].finish_reason == "stop"
        citations = (reply.model_extra or {})["citations"]
        assert citations and all(c["document_id"].startswith("acme-public") for c in citations)

    def test_abstention_is_an_extra_field(self, served: Served) -> None:
        """Whether a grounded answer abstained rides in the `stanchion` extra field, which the client
        keeps (streamed too, on the finishing chunk) without breaking its own types."""
        question: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "What is the boiling point of liquid nitrogen?"}
        ]
        reply = served.client.chat.completions.create(model="default", messages=question)
        assert (reply.model_extra or {})["stanchion"]["abstained"] is True
        assert (reply.model_extra or {})["citations"] == []
        answered = served.client.chat.completions.create(model="default", messages=REFUNDS)
        assert (answered.model_extra or {})["stanchion"]["abstained"] is False
        with served.client.chat.completions.create(model="default", messages=question, stream=True) as stream:
            chunks = list(stream)
        assert (_finishing(chunks).model_extra or {})["stanchion"]["abstained"] is True

    def test_gateway_route_passes_the_upstream_answer(self, served: Served) -> None:
        """A gateway route answers with the upstream's text and usage."""
        reply = served.client.chat.completions.create(
            model="gw", messages=[{"role": "user", "content": "Hi there"}]
        )
        assert reply.choices[0].message.content == "Hello from upstream."
        assert reply.usage is not None
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 4)
        assert served.upstream.requests[-1].json["model"] == "fake-model"

    def test_unknown_model_raises_not_found(self, served: Served) -> None:
        """An unknown route is openai.NotFoundError with the code model_not_found."""
        with pytest.raises(openai.NotFoundError) as caught:
            served.client.chat.completions.create(model="gpt-4o", messages=REFUNDS)
        assert caught.value.code == "model_not_found"


class TestStream:
    @pytest.mark.parametrize("include_usage", [False, True])
    def test_grounded_stream_cites_on_the_finishing_chunk(self, served: Served, include_usage: bool) -> None:
        """Citations ride on the chunk with finish_reason, with or without the usage chunk after it."""
        chunks = _stream(served, "default", include_usage=include_usage)
        assert "five business days" in _text(chunks)
        finishing = _finishing(chunks)
        assert finishing.choices[0].finish_reason == "stop"
        extra = finishing.model_extra or {}
        assert extra["citations"] and all(
            c["document_id"].startswith("acme-public") for c in extra["citations"]
        )
        assert extra["stanchion"]["model"] == "extractive" and extra["stanchion"]["abstained"] is False
        after = chunks[chunks.index(finishing) + 1 :]
        if include_usage:  # OpenAI's last chunk: empty choices and the usage, nothing else
            (usage_chunk,) = after
            assert usage_chunk.choices == [] and usage_chunk.usage is not None
            assert not usage_chunk.model_extra
        else:
            assert after == [] and finishing.usage is None
        assert sum("citations" in (c.model_extra or {}) for c in chunks) == 1

    @pytest.mark.parametrize("include_usage", [False, True])
    def test_gateway_stream(self, served: Served, include_usage: bool) -> None:
        """A gateway stream carries the upstream's text, then finish_reason; usage when asked for."""
        chunks = _stream(served, "gw", include_usage=include_usage)
        assert _text(chunks) == "Hello from upstream."
        finishing = _finishing(chunks)
        assert finishing.choices[0].finish_reason == "stop"
        assert "citations" not in (finishing.model_extra or {})
        if include_usage:
            assert chunks[-1].choices == [] and chunks[-1].usage is not None
            assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 4)
        else:
            assert chunks[-1] is finishing


class TestEmbeddings:
    def test_default_base64_and_float_give_the_same_vectors(self, served: Served) -> None:
        """The client's default (base64) decodes to exactly the floats of encoding_format=float."""
        texts = ["refund policy", "launch date"]
        default = served.client.embeddings.create(model=EMBEDDING_MODEL, input=texts)
        floats = served.client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
        assert [d.index for d in default.data] == [0, 1]
        assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
        assert len(default.data[0].embedding) == 384
        assert default.model == EMBEDDING_MODEL and default.usage.prompt_tokens > 0
        assert np.linalg.norm(default.data[0].embedding) == pytest.approx(1.0, abs=1e-5)

    def test_base64_is_little_endian_float32(self, served: Served) -> None:
        """On the wire, base64 is the vector's little-endian float32 bytes, as OpenAI sends it."""
        with served.api.client(served.api.keys.ops) as c:
            body = {"model": EMBEDDING_MODEL, "input": "refund policy"}
            raw = c.post("/v1/embeddings", json={**body, "encoding_format": "base64"})
            floats = c.post("/v1/embeddings", json=body)
        assert raw.status_code == 200 and floats.status_code == 200, raw.text
        encoded = raw.json()["data"][0]["embedding"]
        assert isinstance(encoded, str)
        decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
        assert decoded.tolist() == floats.json()["data"][0]["embedding"]

    def test_dimensions_only_the_models_own(self, served: Served) -> None:
        """dimensions equal to the model's is honoured; any other is a 422 naming the parameter."""
        same = served.client.embeddings.create(model=EMBEDDING_MODEL, input="refund", dimensions=384)
        assert len(same.data[0].embedding) == 384
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            served.client.embeddings.create(model=EMBEDDING_MODEL, input="refund", dimensions=256)
        assert caught.value.code == "invalid_request"
        assert caught.value.param == "dimensions"

    def test_unknown_model_raises_not_found(self, served: Served) -> None:
        """Another model's name is a 404 model_not_found, as on chat, not this model's vectors."""
        for model in ("text-embedding-3-small", "default"):
            with pytest.raises(openai.NotFoundError) as caught:
                served.client.embeddings.create(model=model, input="refund policy")
            assert caught.value.code == "model_not_found"
            assert EMBEDDING_MODEL in caught.value.message

    def test_models_lists_routes_and_the_embedding_model(self, served: Served) -> None:
        """GET /v1/models names every route, then the embedding model."""
        ids = [m.id for m in served.client.models.list()]
        assert ids == ["default", "gw", EMBEDDING_MODEL]
