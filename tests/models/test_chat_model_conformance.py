"""Every provider and every wrapper passes ``stanchion.testing.chat_model_suite``.

HTTP providers answer from fakes: the OpenAI-compatible adapter over loopback
(``FakeOpenAIServer``), Anthropic over ``httpx.MockTransport`` (there is no Anthropic fake server);
llama.cpp runs the packaged SmolLM2 where it is installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stanchion.errors import ModelError, ModelUnavailable
from stanchion.models.anthropic import AnthropicModel
from stanchion.models.base import ChatModel, ChatOptions
from stanchion.models.extractive import ExtractiveModel
from stanchion.models.fallback import Attempt, FallbackModel
from stanchion.models.openai_compat import OpenAICompatModel
from stanchion.models.router import Router
from stanchion.testing.chat_model_suite import ChatModelConformance
from stanchion.testing.fake_chat import FakeChatModel
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply

ANSWER = "Expenses above 5,000 dollars need the approval of the CFO."


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=Reply(text=ANSWER)) as fake:
        yield fake


@pytest.fixture
def broken_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=Reply(status=503)) as fake:
        yield fake


def openai_model(server: FakeOpenAIServer, name: str = "conformance") -> OpenAICompatModel:
    return OpenAICompatModel(name, base_url=server.url, model="fake-model", timeout_s=10.0)


async def _no_sleep(_: float) -> None:
    return None


def chain(*models: ChatModel) -> FallbackModel:
    return FallbackModel([Attempt(m, max_retries=0) for m in models], sleep=_no_sleep)


class TestOpenAICompat(ChatModelConformance):
    @pytest.fixture
    def model(self, server: FakeOpenAIServer) -> ChatModel:
        return openai_model(server)

    @pytest.fixture
    def failing_model(self, broken_server: FakeOpenAIServer) -> ChatModel:
        return openai_model(broken_server)


def _anthropic_reply(request: httpx.Request, status: int) -> httpx.Response:
    """What the Messages API answers: a message, or its event stream, or an error."""
    if status != 200:
        return httpx.Response(
            status, json={"type": "error", "error": {"type": "api_error", "message": "down"}}
        )
    body = json.loads(request.content)
    words = ANSWER.split(" ")
    if not body.get("stream"):
        return httpx.Response(
            200,
            json={
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": ANSWER}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 12, "output_tokens": len(words)},
            },
        )
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": body["model"],
                "stop_reason": None,
                "usage": {"input_tokens": 12, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": word if i == 0 else f" {word}"},
            }
            for i, word in enumerate(words)
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": len(words)},
        },
        {"type": "message_stop"},
    ]
    sse = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    return httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})


def anthropic_model(status: int) -> AnthropicModel:
    transport = httpx.MockTransport(lambda request: _anthropic_reply(request, status))
    return AnthropicModel("conformance", model="claude-test", api_key_env=None, transport=transport)


class TestAnthropic(ChatModelConformance):
    @pytest.fixture
    def model(self) -> ChatModel:
        return anthropic_model(200)

    @pytest.fixture
    def failing_model(self) -> ChatModel:
        return anthropic_model(500)


class TestExtractive(ChatModelConformance):
    """Asked outside an answer prompt, the extractive model says it found nothing: still an answer."""

    @pytest.fixture
    def model(self, embedder: Any) -> ChatModel:
        return ExtractiveModel(embedder)

    @pytest.fixture
    def failing_model(self) -> ChatModel:
        pytest.skip("the extractive model has no upstream that could fail")


@pytest.fixture(scope="module")
def llamacpp() -> Iterator[ChatModel]:
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed: pip install 'stanchion[local]'"
    )
    from stanchion.models.llamacpp import LlamaCppModel, packaged_smollm2_path

    try:
        packaged_smollm2_path()
    except ModelError as exc:
        pytest.skip(f"packaged SmolLM2 not installed: {exc}")
    chat = LlamaCppModel("smollm2", n_ctx=512, n_threads=1)
    chat.warm_up()
    yield chat
    chat.close()


class TestLlamaCpp(ChatModelConformance):
    options = ChatOptions(temperature=0.0, max_tokens=12)

    @pytest.fixture
    def model(self, llamacpp: ChatModel) -> ChatModel:
        return llamacpp

    @pytest.fixture
    def failing_model(self, tmp_path: Any) -> ChatModel:
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
        from stanchion.models.llamacpp import LlamaCppModel

        return LlamaCppModel("missing", model_path=str(tmp_path / "missing.gguf"), probe=False)


class TestFakeChatModel(ChatModelConformance):
    @pytest.fixture
    def model(self) -> ChatModel:
        return FakeChatModel("fake", default=ANSWER)

    @pytest.fixture
    def failing_model(self) -> ChatModel:
        return FakeChatModel("fake", [ModelUnavailable("down", model="fake")])


class TestFallbackOverFakes(ChatModelConformance):
    @pytest.fixture
    def model(self) -> ChatModel:
        return chain(FakeChatModel("a", default=ANSWER), FakeChatModel("b", default=ANSWER))

    @pytest.fixture
    def failing_model(self) -> ChatModel:
        return chain(
            FakeChatModel("a", [ModelUnavailable("down")]), FakeChatModel("b", [ModelUnavailable("down")])
        )


class TestFallbackOverHTTP(ChatModelConformance):
    @pytest.fixture
    def model(self, server: FakeOpenAIServer) -> ChatModel:
        return chain(openai_model(server, "a"), anthropic_model(200))

    @pytest.fixture
    def failing_model(self, broken_server: FakeOpenAIServer) -> ChatModel:
        return chain(openai_model(broken_server, "a"), anthropic_model(500))


class TestRouterOverChains(ChatModelConformance):
    @pytest.fixture
    def model(self, server: FakeOpenAIServer) -> ChatModel:
        return Router({"small": chain(openai_model(server, "s")), "large": chain(openai_model(server, "l"))})

    @pytest.fixture
    def failing_model(self, broken_server: FakeOpenAIServer) -> ChatModel:
        return Router({"small": openai_model(broken_server, "s"), "large": openai_model(broken_server, "l")})


class TestRouterOverFakes(ChatModelConformance):
    """A router over models that make no pieces makes none either."""

    @pytest.fixture
    def model(self) -> ChatModel:
        return Router(
            {"small": FakeChatModel("s", default=ANSWER), "large": FakeChatModel("l", default=ANSWER)}
        )

    @pytest.fixture
    def failing_model(self) -> ChatModel:
        return Router({"small": FakeChatModel("s", [ModelUnavailable("down")])})
