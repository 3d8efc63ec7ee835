"""The ChatModel protocol: one async interface over every provider.

A provider adapter speaks one wire format (OpenAI chat completions, Anthropic messages, llama.cpp
in process, or no model at all) and translates its failures into ``stanchion.errors`` at the
adapter. Behaviour such as fallback, routing or guards wraps a ChatModel and is one itself.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from stanchion.types import Completion, Message, StreamEvent, ToolSpec


@dataclass(frozen=True, slots=True)
class ChatOptions:
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    json_mode: bool = False
    tools: tuple[ToolSpec, ...] = ()
    # "auto" (default when tools are given), "none", "required", or a tool name to force.
    tool_choice: str | None = None
    timeout_s: float | None = None


@runtime_checkable
class ChatModel(Protocol):
    """``name`` identifies the configured model in answers, metrics and errors (never a secret)."""

    @property
    def name(self) -> str: ...

    async def complete(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> Completion: ...

    def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Text deltas as they arrive; the last event carries usage and the finish reason."""
        ...


# A piece of a stream: a plain ``str`` is a text delta and nothing else; anything more (tool calls,
# usage, the finish reason, the model that wrote it) comes as a StreamEvent.
Piece = str | StreamEvent


def stream_pieces(
    model: ChatModel, messages: Sequence[Message], options: ChatOptions | None = None
) -> AsyncIterator[Piece]:
    """``model.stream`` as pieces. A gateway relays thousands of tokens a second, and building a
    StreamEvent for each, at each layer, was a measurable share of its CPU: models that can hand
    text on as it came (HTTP chat models, and chains and routers of them) implement
    ``stream_pieces``; any other model's events are pieces as they are."""
    fast = getattr(model, "stream_pieces", None)
    if fast is not None:
        pieces: AsyncIterator[Piece] = fast(messages, options)
        return pieces
    return model.stream(messages, options)


async def events_from_pieces(pieces: AsyncGenerator[Piece, None], model: str) -> AsyncIterator[StreamEvent]:
    """``stream`` from ``stream_pieces``: text is attributed to the model the latest event named
    (``model`` until one does)."""
    try:
        async for piece in pieces:
            if isinstance(piece, StreamEvent):
                model = piece.model or model
                yield piece
            else:
                yield StreamEvent(text=piece, model=model)
    finally:
        await pieces.aclose()


async def aclose_quietly(stream: AsyncIterator[Any]) -> None:
    """Close an async iterator that may be a generator: stops its upstream request now, not when
    the garbage collector finds it."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
