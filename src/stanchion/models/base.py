"""The ChatModel protocol: one async interface over every provider.

A provider adapter speaks one wire format (OpenAI chat completions, Anthropic messages, llama.cpp
in process, or no model at all) and translates its failures into ``stanchion.errors`` at the
adapter. Behaviour such as fallback, routing or guards wraps a ChatModel and is one itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
