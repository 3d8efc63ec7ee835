"""The ChatModel conformance suite. Every provider's and every wrapper's tests subclass
``ChatModelConformance``.

Usage in a provider's test module::

    class TestOpenAICompat(ChatModelConformance):
        @pytest.fixture
        def model(self, server):
            return OpenAICompatModel("conformance", base_url=server.url, model="fake-model")

        @pytest.fixture
        def failing_model(self, broken_server):
            return OpenAICompatModel("conformance", base_url=broken_server.url, model="fake-model")

``model`` answers every request with a text of several words (the suite asks ``messages`` with
``options``; a subclass may override both). ``failing_model`` fails every request with the error
its upstream gives, which the adapter must translate into the ``stanchion.errors`` tree; a model
with nothing that can fail skips there, with the reason. Set ``stream_matches_complete = False``
for a model whose streamed answer may differ from its whole one.

What is checked: ``complete`` returns a ``Completion`` with counted ``Usage``; ``stream`` yields
events that end in one final event carrying usage and the finish reason; ``stream_pieces`` yields
the same text, as plain ``str`` pieces exactly when ``capabilities.streams_pieces`` says so; a
consumer may leave a stream early; failures are ``ModelError``; ``aclose`` is safe before use and
twice, and the model answers again afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import pytest

from stanchion.errors import ModelError
from stanchion.models.base import Capabilities, ChatModel, ChatOptions, Piece, aclose_quietly
from stanchion.types import Completion, Message, StreamEvent, Usage

__all__ = ["ChatModelConformance", "collect", "run"]

T = TypeVar("T")


def run(awaitable: Awaitable[T]) -> T:
    """Run one coroutine on a fresh event loop (the suite needs no pytest-asyncio)."""

    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


async def collect(items: AsyncIterator[T]) -> list[T]:
    return [item async for item in items]


def _text(pieces: Sequence[Piece]) -> str:
    return "".join(p if isinstance(p, str) else p.text for p in pieces)


def _check_usage(usage: Usage | None) -> None:
    assert isinstance(usage, Usage)
    assert isinstance(usage.input_tokens, int) and usage.input_tokens >= 0
    assert isinstance(usage.output_tokens, int) and usage.output_tokens > 0


def _check_final(last: Piece) -> None:
    assert isinstance(last, StreamEvent), f"a stream must end in a StreamEvent, not {last!r}"
    assert last.finish_reason, "the final event carries the finish reason"
    _check_usage(last.usage)


class ChatModelConformance:
    """Behaviour every ChatModel must have. Subclasses provide ``model`` and ``failing_model``."""

    messages: ClassVar[Sequence[Message]] = (
        Message("system", "Answer in one sentence."),
        Message("user", "Who approves expenses above 5,000 dollars?"),
    )
    options: ClassVar[ChatOptions | None] = None
    stream_matches_complete: ClassVar[bool] = True

    @pytest.fixture
    def model(self) -> Any:  # pragma: no cover - overridden by every backend
        raise NotImplementedError

    @pytest.fixture
    def failing_model(self) -> Any:  # pragma: no cover - overridden by every backend
        raise NotImplementedError

    @pytest.fixture
    def chat_model(self, model: ChatModel) -> Iterator[ChatModel]:
        """``model``, closed after the test, as an application closes its models."""
        yield model
        run(model.aclose())

    @pytest.fixture
    def failing_chat_model(self, failing_model: ChatModel) -> Iterator[ChatModel]:
        yield failing_model
        run(failing_model.aclose())

    # --- declarations ------------------------------------------------------------------------------

    def test_is_a_chat_model(self, chat_model: ChatModel) -> None:
        """It satisfies the protocol, has a name, and declares frozen capabilities that do not change."""
        assert isinstance(chat_model, ChatModel)
        assert isinstance(chat_model.name, str) and chat_model.name
        assert isinstance(chat_model.capabilities, Capabilities)
        assert chat_model.capabilities == chat_model.capabilities

    # --- answers -----------------------------------------------------------------------------------

    def test_complete_returns_a_completion_with_usage(self, chat_model: ChatModel) -> None:
        """``complete`` gives the answer's text, the model that wrote it and counted usage."""
        completion = run(chat_model.complete(self.messages, self.options))
        assert isinstance(completion, Completion)
        assert completion.text.strip() and completion.model
        assert completion.finish_reason
        _check_usage(completion.usage)

    def test_stream_ends_in_one_final_event_with_usage(self, chat_model: ChatModel) -> None:
        """``stream`` yields StreamEvents; only the last one has a finish reason, and it has usage."""
        events = run(collect(chat_model.stream(self.messages, self.options)))
        assert events and all(isinstance(e, StreamEvent) for e in events)
        _check_final(events[-1])
        assert not any(e.finish_reason for e in events[:-1])
        assert _text(events).strip()

    def test_stream_says_what_complete_says(self, chat_model: ChatModel) -> None:
        """The streamed text, joined, is the text ``complete`` returns for the same request."""
        if not self.stream_matches_complete:
            pytest.skip("this model's streamed answer may differ from its whole one")

        async def both() -> tuple[str, str]:
            completion = await chat_model.complete(self.messages, self.options)
            return completion.text, _text(await collect(chat_model.stream(self.messages, self.options)))

        whole, streamed = run(both())
        assert streamed == whole

    def test_stream_pieces_are_the_stream(self, chat_model: ChatModel) -> None:
        """``stream_pieces`` yields the stream's text, in plain ``str`` pieces exactly when the model
        declares ``streams_pieces``, and ends in the final event."""

        async def both() -> tuple[list[StreamEvent], list[Piece]]:
            events = await collect(chat_model.stream(self.messages, self.options))
            return events, await collect(chat_model.stream_pieces(self.messages, self.options))

        events, pieces = run(both())
        assert pieces and all(isinstance(p, str | StreamEvent) for p in pieces)
        _check_final(pieces[-1])
        assert _text(pieces) == _text(events)
        plain = [p for p in pieces if isinstance(p, str)]
        if chat_model.capabilities.streams_pieces:
            assert plain, "declares streams_pieces but yielded only events"
        else:
            assert not plain, "yields plain text pieces but does not declare streams_pieces"

    def test_a_consumer_may_leave_a_stream_early(self, chat_model: ChatModel) -> None:
        """Closing a stream after its first piece raises nothing, and the model answers again."""

        async def leave_then_ask() -> Completion:
            for stream in (
                chat_model.stream(self.messages, self.options),
                chat_model.stream_pieces(self.messages, self.options),
            ):
                await anext(stream)
                await aclose_quietly(stream)
            return await chat_model.complete(self.messages, self.options)

        assert run(leave_then_ask()).text.strip()

    # --- failures ----------------------------------------------------------------------------------

    def test_complete_fails_with_a_model_error(self, failing_chat_model: ChatModel) -> None:
        """An upstream failure reaches the caller as a ``ModelError``, nothing else."""
        with pytest.raises(ModelError):
            run(failing_chat_model.complete(self.messages, self.options))

    def test_stream_fails_with_a_model_error(self, failing_chat_model: ChatModel) -> None:
        """A failing stream raises a ``ModelError``, and never ends as if it had finished."""
        with pytest.raises(ModelError):
            run(collect(failing_chat_model.stream(self.messages, self.options)))

    def test_stream_pieces_fail_with_a_model_error(self, failing_chat_model: ChatModel) -> None:
        """The fast path fails like the stream."""
        with pytest.raises(ModelError):
            run(collect(failing_chat_model.stream_pieces(self.messages, self.options)))

    # --- lifetime ----------------------------------------------------------------------------------

    def test_aclose_before_use_and_twice(self, chat_model: ChatModel) -> None:
        """``aclose`` is safe on a model never used, twice over, and the model answers afterwards."""

        async def close_twice_then_ask() -> Completion:
            await chat_model.aclose()
            await chat_model.aclose()
            return await chat_model.complete(self.messages, self.options)

        assert run(close_twice_then_ask()).text.strip()

    def test_aclose_after_use(self, chat_model: ChatModel) -> None:
        """After answers on one event loop, ``aclose`` on another is safe, twice."""
        run(chat_model.complete(self.messages, self.options))

        async def close_twice() -> None:
            await chat_model.aclose()
            await chat_model.aclose()

        run(close_twice())
