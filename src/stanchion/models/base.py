"""The ChatModel protocol: one async interface over every provider.

A provider adapter speaks one wire format (OpenAI chat completions, Anthropic messages, llama.cpp
in process, or no model at all) and translates its failures into ``stanchion.errors`` at the
adapter. Behaviour such as fallback, routing or guards wraps a ChatModel and is one itself.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from stanchion.request_context import RequestContext
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
    # Whose request this call serves (tenant, user, route): for wrappers such as a tenant's cache
    # or guard policy; providers do not send it.
    context: RequestContext | None = None


# A piece of a stream: a plain ``str`` is a text delta and nothing else; anything more (tool calls,
# usage, the finish reason, the model that wrote it) comes as a StreamEvent.
Piece = str | StreamEvent


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a ChatModel can do beyond ``complete`` and ``stream``, declared, never guessed.

    A wrapper (fallback chain, router, and the stages to come) derives its own from the models it
    wraps (``Capabilities.common``), so it cannot silently lose one. The conformance suite
    (``stanchion.testing.chat_model_suite``) checks each declaration against behaviour.
    """

    streams_pieces: bool = False
    """``stream_pieces`` hands text on as plain ``str`` (the gateway's fast path); False: its
    pieces are ``stream``'s events as they are."""
    extractive: bool = False
    """Every sentence is quoted from a source: a corrective retry cannot change the answer."""
    tools: bool = False
    """A forced ``ChatOptions.tool_choice`` (``"required"`` or a tool's name) is answered with a
    call of that tool."""
    json_mode: bool = False
    """``ChatOptions.json_mode`` makes the answer one JSON object."""

    @staticmethod
    def common(models: Iterable[ChatModel], *, streams_pieces: bool | None = None) -> Capabilities:
        """What every one of ``models`` can do (any one of them may answer a given request);
        ``streams_pieces`` overrides for a wrapper that makes pieces itself."""
        caps = [model.capabilities for model in models]
        return Capabilities(
            streams_pieces=all(c.streams_pieces for c in caps) if streams_pieces is None else streams_pieces,
            extractive=all(c.extractive for c in caps),
            tools=all(c.tools for c in caps),
            json_mode=all(c.json_mode for c in caps),
        )


@runtime_checkable
class ChatModel(Protocol):
    """``name`` identifies the configured model in answers, metrics and errors (never a secret).

    ``BaseChatModel`` gives ``stream_pieces`` and ``aclose`` their plain defaults; every model
    declares its ``capabilities`` itself.
    """

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def complete(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> Completion: ...

    def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Text deltas as they arrive; the last event carries usage and the finish reason."""
        ...

    def stream_pieces(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[Piece]:
        """``stream`` as pieces (see ``Piece``): plain text where ``capabilities.streams_pieces``."""
        ...

    async def aclose(self) -> None:
        """Release connections or weights; safe to call twice, and the model stays usable."""
        ...


class BaseChatModel:
    """The defaults of a ChatModel's optional behaviour, for a model to inherit: ``stream_pieces``
    yields ``stream``'s events as they are, and ``aclose`` has nothing to release."""

    def stream_pieces(
        self: ChatModel, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[Piece]:
        return self.stream(messages, options)

    async def aclose(self) -> None:
        return None


def stream_pieces(
    model: ChatModel, messages: Sequence[Message], options: ChatOptions | None = None
) -> AsyncIterator[Piece]:
    """``model.stream_pieces``. A gateway relays thousands of tokens a second, and building a
    StreamEvent for each, at each layer, was a measurable share of its CPU: models that can hand
    text on as it came (HTTP chat models, and chains and routers of them) declare
    ``capabilities.streams_pieces``; any other model's events are pieces as they are."""
    return model.stream_pieces(messages, options)


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
    if isinstance(stream, AsyncGenerator):
        await stream.aclose()
