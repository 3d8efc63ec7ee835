"""``MaskingModel``: a remote ChatModel that never reads raw PII.

It wraps one provider model (the app wraps each remote model the spec declares when
``guards.pii`` is on). Before a call, every text it would send (messages, tool-call arguments,
tool results) is masked through the request's ``PiiSession`` (``guards/session.py``); what comes
back is restored: the text, streamed piece by piece (a pseudonym cut across pieces is restored
whole), and the arguments of the tool calls it asks for, so a tool runs on the real values. The
structured grounding a local extractive model reads is dropped, since no wire carries it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from stanchion.guards.session import CURRENT, PiiGuard, PiiSession, without_grounding
from stanchion.models.base import Capabilities, ChatModel, ChatOptions, Piece, aclose_quietly
from stanchion.types import Completion, Message, StreamEvent

__all__ = ["MaskingModel"]


class MaskingModel:
    def __init__(self, inner: ChatModel, guard: PiiGuard) -> None:
        self.inner = inner
        self.guard = guard

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _session(self) -> PiiSession:
        return CURRENT.get() or self.guard.session()

    async def _masked(self, session: PiiSession, messages: Sequence[Message]) -> list[Message]:
        sent = messages if self.inner.capabilities.extractive else without_grounding(messages)
        return await session.mask_messages(sent)

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        session = self._session()
        completion = await self.inner.complete(await self._masked(session, messages), options)
        return replace(
            completion,
            text=session.restore(completion.text),
            tool_calls=session.restore_tool_calls(completion.tool_calls),
        )

    async def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        session = self._session()
        restoring = _Restoring(session)
        events = self.inner.stream(await self._masked(session, messages), options)
        try:
            async for event in events:
                last = event.finish_reason is not None or event.usage is not None
                text = restoring.feed(event.text, last=last)
                if text or event.tool_calls or last:
                    yield replace(event, text=text, tool_calls=session.restore_tool_calls(event.tool_calls))
            rest = restoring.feed("", last=True)
            if rest:
                yield StreamEvent(text=rest)
        finally:
            await aclose_quietly(events)

    async def stream_pieces(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[Piece]:
        session = self._session()
        restoring = _Restoring(session)
        pieces = self.inner.stream_pieces(await self._masked(session, messages), options)
        try:
            async for piece in pieces:
                if isinstance(piece, str):
                    text = restoring.feed(piece, last=False)
                    if text:
                        yield text
                    continue
                last = piece.finish_reason is not None or piece.usage is not None
                text = restoring.feed(piece.text, last=last)
                yield replace(piece, text=text, tool_calls=session.restore_tool_calls(piece.tool_calls))
            rest = restoring.feed("", last=True)
            if rest:
                yield rest
        finally:
            await aclose_quietly(pieces)


class _Restoring:
    """A stream's restorer until its last event (usage or finish reason), then plain restore:
    a provider may send text after the event that carried the finish reason."""

    def __init__(self, session: PiiSession) -> None:
        self.session = session
        self.restorer = session.restorer()
        self.finished = False

    def feed(self, text: str, *, last: bool) -> str:
        if self.finished:
            return self.session.restore(text) if text else ""
        out = self.restorer.feed(text) if text else ""
        if last:
            out += self.restorer.finish()
            self.finished = True
        return out
