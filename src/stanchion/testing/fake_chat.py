"""``FakeChatModel``: an in-process ChatModel that follows a script, for tests of model wrappers.

Each call (``complete`` or ``stream``) consumes the next step of the script:

- ``str``: answer with this text (a stream sends it word by word, whitespace kept);
- an exception instance: raise it before answering;
- ``Delay(seconds, then)``: wait (cancellably, so timeouts fire), then do ``then``;
- ``Tokens(tokens, error=..., stall_s=...)``: stream exactly these tokens, then optionally hang
  for ``stall_s`` and/or raise ``error`` (a stream dying after ``len(tokens)`` tokens).

When the script is used up, the model answers ``default`` or, without one, echoes the last user
message. Every call is recorded in ``calls`` (messages, options, kind). Usage is estimated with
the chars/4 rule of ``stanchion.models.pricing`` unless a step gives it::

    model = FakeChatModel("primary", [RateLimited("busy", retry_after=1.0), "Paris."])
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from stanchion.models.base import BaseChatModel, Capabilities, ChatOptions
from stanchion.models.pricing import estimate_message_tokens, estimate_tokens
from stanchion.types import Completion, Message, StreamEvent, Usage

__all__ = ["Call", "Delay", "FakeChatModel", "Step", "Tokens"]


@dataclass(frozen=True, slots=True)
class Tokens:
    """Stream ``tokens``; afterwards hang ``stall_s`` seconds, then raise ``error`` if one is given."""

    tokens: Sequence[str]
    error: BaseException | None = None
    stall_s: float = 0.0
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait ``seconds``, then perform ``then`` (the default answer when ``None``)."""

    seconds: float
    then: Step | None = None


Step = str | BaseException | Delay | Tokens


@dataclass(frozen=True, slots=True)
class Call:
    kind: Literal["complete", "stream"]
    messages: tuple[Message, ...]
    options: ChatOptions | None


class FakeChatModel(BaseChatModel):
    """A scripted ChatModel; see the module docstring for the steps. It declares ``capabilities``
    as given (none by default), so a wrapper's forwarding of them can be tested."""

    def __init__(
        self,
        name: str = "fake",
        script: Iterable[Step] = (),
        *,
        default: str | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        self._name = name
        self.capabilities = capabilities or Capabilities()
        self.script: list[Step] = list(script)
        self.default = default
        self.calls: list[Call] = []

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        step = await self._begin("complete", messages, options)
        if isinstance(step, Tokens):
            if step.stall_s:
                await asyncio.sleep(step.stall_s)
            if step.error is not None:
                raise step.error
            text = "".join(step.tokens)
            return Completion(text=text, model=self._name, usage=step.usage or self._usage(messages, text))
        return Completion(text=step, model=self._name, usage=self._usage(messages, step))

    async def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        step = await self._begin("stream", messages, options)
        if isinstance(step, str):
            step = Tokens(re.findall(r"\s*\S+|\s+$", step) or [step])
        for token in step.tokens:
            yield StreamEvent(text=token, model=self._name)
        if step.stall_s:
            await asyncio.sleep(step.stall_s)
        if step.error is not None:
            raise step.error
        text = "".join(step.tokens)
        usage = step.usage or self._usage(messages, text)
        yield StreamEvent(usage=usage, finish_reason="stop", model=self._name)

    async def _begin(
        self, kind: Literal["complete", "stream"], messages: Sequence[Message], options: ChatOptions | None
    ) -> str | Tokens:
        """Record the call and play the next step up to what it answers: text or tokens."""
        self.calls.append(Call(kind, tuple(messages), options))
        step: Step | None = self.script.pop(0) if self.script else None
        while isinstance(step, Delay):
            await asyncio.sleep(step.seconds)
            step = step.then
        if isinstance(step, BaseException):
            raise step
        if step is None:
            return self.default if self.default is not None else _last_user(messages)
        return step

    @staticmethod
    def _usage(messages: Sequence[Message], text: str) -> Usage:
        return Usage(input_tokens=estimate_message_tokens(messages), output_tokens=estimate_tokens(text))


def _last_user(messages: Sequence[Message]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")
