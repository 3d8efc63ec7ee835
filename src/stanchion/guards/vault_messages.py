"""Masking and restoring through the shapes a model call carries: JSON tool arguments, messages.

``mask_messages`` masks what a remote model would read: every message's content, its tool calls'
arguments (each string in the JSON, keys included, at any depth) and the grounding it carries
(question, sources, previous question). ``restore_json`` and ``restore_tool_call`` put the originals
back in a model's tool calls before a tool runs. Raw arguments (a client's JSON text) are parsed,
masked or restored string by string and written again, so an original holding a quote or a
backslash cannot break the JSON and a model's ``\\u003c`` escapes still restore; raw text that is
not JSON is treated as text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from stanchion.guards.vault import PseudonymVault, SpanLike
from stanchion.types import Grounding, Message, ToolCall

Detect = Callable[[str], Sequence[SpanLike]]


def map_json_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` (parsed JSON) with ``fn`` applied to every string, dict keys included."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {fn(k) if isinstance(k, str) else k: map_json_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_json_strings(v, fn) for v in value]
    return value


def restore_json(vault: PseudonymVault, value: Any) -> Any:
    """``value`` with every string restored (``restore_json(v, mask_json(v, x, d)) == x``)."""
    return map_json_strings(value, vault.restore)


def mask_json(vault: PseudonymVault, value: Any, detect: Detect) -> Any:
    return map_json_strings(value, lambda s: vault.mask(s, detect(s)))


def _raw(raw: str, fn: Callable[[str], str]) -> str:
    if not raw:
        return raw
    try:
        parsed = json.loads(raw)
    except ValueError:
        return fn(raw)
    return json.dumps(map_json_strings(parsed, fn), ensure_ascii=False)


def mask_tool_call(vault: PseudonymVault, call: ToolCall, detect: Detect) -> ToolCall:
    def fn(s: str) -> str:
        return vault.mask(s, detect(s))

    return replace(
        call, arguments=map_json_strings(dict(call.arguments), fn), raw_arguments=_raw(call.raw_arguments, fn)
    )


def restore_tool_call(vault: PseudonymVault, call: ToolCall) -> ToolCall:
    """A model's tool call with the originals back in its arguments, before the tool runs."""
    return replace(
        call,
        arguments=restore_json(vault, dict(call.arguments)),
        raw_arguments=_raw(call.raw_arguments, vault.restore),
    )


def _mask_grounding(vault: PseudonymVault, grounding: Grounding, fn: Callable[[str], str]) -> Grounding:
    return replace(
        grounding,
        question=fn(grounding.question),
        sources=tuple(replace(s, title=fn(s.title), text=fn(s.text)) for s in grounding.sources),
        correction=fn(grounding.correction),
        previous_question=fn(grounding.previous_question),
    )


def mask_messages(vault: PseudonymVault, messages: Sequence[Message], detect: Detect) -> list[Message]:
    """New messages with content, tool-call arguments and grounding masked; ``name`` and ids are
    left as they are (a participant name must stay ``[A-Za-z0-9_-]`` on OpenAI's wire)."""

    def fn(s: str) -> str:
        return vault.mask(s, detect(s)) if s else s

    masked = []
    for message in messages:
        masked.append(
            replace(
                message,
                content=fn(message.content),
                tool_calls=tuple(mask_tool_call(vault, c, detect) for c in message.tool_calls),
                grounding=None
                if message.grounding is None
                else _mask_grounding(vault, message.grounding, fn),
            )
        )
    return masked
