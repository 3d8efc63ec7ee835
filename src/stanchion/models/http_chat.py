"""The request/response loop every HTTP chat provider shares, parameterised by its wire format.

A provider is a ``WireFormat`` (how to build a request body, parse a whole answer, and parse a
server-sent-event stream) plus a ``ProviderClient`` (where to send it, auth, error translation).
``HTTPChatModel`` joins the two into a ChatModel; the OpenAI-compatible and Anthropic adapters
only configure it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from stanchion.models.base import Capabilities, ChatOptions, Piece, events_from_pieces
from stanchion.types import Completion, Message, StreamEvent

if TYPE_CHECKING:
    from stanchion.models.provider_http import ProviderClient


class StreamParser(Protocol):
    @property
    def done(self) -> bool: ...

    def feed_line(self, line: str) -> list[StreamEvent]: ...

    def finish(self) -> StreamEvent: ...


class WireFormat(Protocol):
    def build_request(
        self,
        model: str,
        messages: Sequence[Message],
        options: ChatOptions,
        *,
        stream: bool = False,
        default_max_tokens: int | None = None,
    ) -> dict[str, Any]: ...

    def parse(self, payload: Any, *, model: str) -> Completion: ...

    def stream_parser(self, *, model: str) -> StreamParser: ...


class HTTPChatModel:
    """A ChatModel over one HTTP endpoint. ``name`` is the configured name, ``model`` the provider's id."""

    # Both wire formats carry tools and JSON mode. A format whose stream parser reads bytes
    # (``feed_bytes``) hands text on as it arrives, and its adapter declares ``streams_pieces``.
    capabilities = Capabilities(tools=True, json_mode=True)

    def __init__(
        self, name: str, *, model: str, wire: WireFormat, http: ProviderClient, default_max_tokens: int | None
    ) -> None:
        self._name = name
        self.model = model
        self.default_max_tokens = default_max_tokens
        self._wire = wire
        self._http = http

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        options = options or ChatOptions()
        body = self._wire.build_request(
            self.model, messages, options, default_max_tokens=self.default_max_tokens
        )
        payload = await self._http.post_json(body, timeout_s=options.timeout_s)
        return self._wire.parse(payload, model=self._name)

    def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        return events_from_pieces(self.stream_pieces(messages, options), self._name)

    async def stream_pieces(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncGenerator[Piece, None]:
        """``stream`` as pieces (``models.base.stream_pieces``). A wire format whose parser reads
        bytes (``feed_bytes``) gets the body as it arrives; any other gets it line by line."""
        options = options or ChatOptions()
        body = self._wire.build_request(
            self.model, messages, options, stream=True, default_max_tokens=self.default_max_tokens
        )
        parser = self._wire.stream_parser(model=self._name)
        feed_bytes: Callable[[bytes], list[Piece]] | None = getattr(parser, "feed_bytes", None)
        if feed_bytes is not None:
            async with aclosing(self._http.stream_bytes(body, timeout_s=options.timeout_s)) as reads:
                async for data in reads:
                    for piece in feed_bytes(data):
                        yield piece
                    if parser.done:
                        break
        else:
            async with aclosing(self._http.stream_lines(body, timeout_s=options.timeout_s)) as lines:
                async for line in lines:
                    for event in parser.feed_line(line):
                        yield event
                    if parser.done:
                        break
        yield parser.finish()

    async def aclose(self) -> None:
        """Close the connection pool (a later call opens a new one); safe to call twice."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
