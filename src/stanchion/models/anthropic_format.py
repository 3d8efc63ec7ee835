"""The Anthropic Messages API wire format: request bodies, answers, SSE streams and error bodies.

No I/O happens here; ``anthropic.py`` holds the connection. Where the Messages API differs from
chat completions: the system prompt is a field of its own; tool calls and their results are
``tool_use`` / ``tool_result`` content blocks; tool results travel in a user turn; ``max_tokens``
is required; there is no JSON mode. Stop reasons are translated to the OpenAI vocabulary
(``stop``, ``length``, ``tool_calls``) so callers see one set of finish reasons.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stanchion.errors import ContentFiltered, ContextTooLong, ModelError, ModelHTTPError, ModelUnavailable
from stanchion.models.base import ChatOptions
from stanchion.models.openai_format import ErrorKind, SSEDecoder, http_error, parse_arguments
from stanchion.types import Completion, Message, StreamEvent, ToolCall, ToolSpec, Usage

__all__ = [
    "ANTHROPIC_VERSION",
    "MessageStreamParser",
    "build_request",
    "classify_error",
    "parse_message",
    "stream_error",
]

ANTHROPIC_VERSION = "2023-06-01"

# The Messages API has no JSON mode; an instruction in the system prompt is the documented way.
JSON_INSTRUCTION = "Answer with a single JSON object and nothing else: no prose, no code fences."

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    # The context window filled while generating: the answer is cut short, as with max_tokens.
    "model_context_window_exceeded": "length",
}
# In-stream error events carry a type instead of a status; these are the statuses Anthropic
# documents for each type, so a stream error is classified like the same error before the stream.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_TOO_LONG = re.compile(r"prompt is too long|context window|too many tokens", re.IGNORECASE)
_DETAIL_CHARS = 300


# --- requests ------------------------------------------------------------------------------------


def build_request(
    model: str,
    messages: Sequence[Message],
    options: ChatOptions | None = None,
    *,
    stream: bool = False,
    default_max_tokens: int = 1024,
) -> dict[str, Any]:
    """The JSON body of a ``/v1/messages`` request; ``ValueError`` for requests wrong on our side."""
    options = options or ChatOptions()
    system = [m.content for m in messages if m.role == "system" and m.content]
    if options.json_mode:
        system.append(JSON_INSTRUCTION)
    max_tokens = options.max_tokens if options.max_tokens is not None else default_max_tokens
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": _encode_turns(m for m in messages if m.role != "system"),
    }
    if system:
        body["system"] = "\n\n".join(system)
    if stream:
        body["stream"] = True
    if options.temperature is not None:
        body["temperature"] = options.temperature
    if options.stop:
        body["stop_sequences"] = list(options.stop)
    if options.tools:
        body["tools"] = [_encode_tool(tool) for tool in options.tools]
    choice = _encode_tool_choice(options.tool_choice, options.tools)
    if choice is not None:
        body["tool_choice"] = choice
    return body


def _encode_turns(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Messages as turns of content blocks, neighbouring turns of one role merged.

    Tool results are user turns here, and several results for one assistant turn must arrive in
    one user turn, ahead of any text the user adds.
    """
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue  # the API rejects empty text blocks, and an empty turn says nothing
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if len(turn["content"]) == 1 and turn["content"][0]["type"] == "text":
            turn["content"] = turn["content"][0]["text"]  # the plain form, as the docs write it
    return turns


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        if not message.tool_call_id:
            raise ValueError("a role='tool' message needs tool_call_id: the id of the call it answers")
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)})
    return blocks


def _encode_tool(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": dict(tool.parameters)}


def _encode_tool_choice(choice: str | None, tools: Sequence[ToolSpec]) -> dict[str, Any] | None:
    if choice is None:
        return None
    if not tools:
        if choice in ("auto", "none"):
            return None
        raise ValueError(f"tool_choice={choice!r} needs tools to choose from")
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if choice not in {tool.name for tool in tools}:
        raise ValueError(f"tool_choice names {choice!r}, which is not among the offered tools")
    return {"type": "tool", "name": choice}


# --- answers -------------------------------------------------------------------------------------


def parse_message(payload: Any, *, model: str) -> Completion:
    """A non-streamed ``message`` body as a Completion; ``model`` is our configured name."""
    try:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in payload["content"]:
            if block["type"] == "text":
                texts.append(str(block["text"]))
            elif block["type"] == "tool_use":
                arguments = parse_arguments(block.get("input"), tool=block["name"], model=model)
                calls.append(ToolCall(id=str(block["id"]), name=str(block["name"]), arguments=arguments))
        stop_reason = payload.get("stop_reason")
        usage = _parse_usage(payload.get("usage"))
    except (KeyError, TypeError) as exc:
        raise ModelError(f"unexpected message body ({type(exc).__name__}: {exc})", model=model) from exc
    return Completion(
        text="".join(texts),
        model=model,
        usage=usage,
        tool_calls=tuple(calls),
        finish_reason=_finish_reason(stop_reason, model=model, body=json.dumps(payload)),
    )


def _finish_reason(stop_reason: Any, *, model: str, body: str = "") -> str:
    if stop_reason == "refusal":
        raise ContentFiltered(
            "the model refused to answer (stop_reason=refusal)", model=model, status_code=200, body=body
        )
    return _STOP_REASONS.get(str(stop_reason), str(stop_reason or "stop"))


def _parse_usage(raw: Any) -> Usage:
    """Prompt-cache reads and writes are prompt tokens too; Anthropic counts them apart."""
    if not isinstance(raw, Mapping):
        return Usage()
    prompt = sum(
        int(raw.get(key) or 0)
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Usage(prompt, int(raw.get("output_tokens") or 0))


# --- streams -------------------------------------------------------------------------------------


@dataclass
class _Block:
    kind: str
    id: str = ""
    name: str = ""
    json_parts: list[str] = field(default_factory=list)
    start_input: Mapping[str, Any] = field(default_factory=dict)


class MessageStreamParser:
    """Turns a Messages API SSE stream into StreamEvents, like ``openai_format.ChatStreamParser``.

    ``feed_line`` returns text deltas; tool_use blocks are assembled from ``input_json_delta``
    pieces and come out, parsed, on the final event from ``finish()``. ``done`` turns true at
    ``message_stop``.
    """

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.done = False
        self._sse = SSEDecoder()
        self._blocks: dict[int, _Block] = {}
        self._calls: list[tuple[int, ToolCall]] = []
        self._raw_usage: dict[str, Any] = {}
        self._stop_reason: str | None = None

    def feed_line(self, line: str) -> list[StreamEvent]:
        data = self._sse.feed(line)
        return self._feed_data(data) if data is not None else []

    def _feed_data(self, data: str) -> list[StreamEvent]:
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise ModelError(f"stream sent data that is not JSON: {data[:200]!r}", model=self.model) from exc
        return self.feed(event)

    def feed(self, event: Any) -> list[StreamEvent]:
        """One decoded stream event (its ``type`` field names it)."""
        if not isinstance(event, Mapping):
            raise ModelError(f"stream sent an unexpected event: {str(event)[:200]!r}", model=self.model)
        kind = event.get("type")
        if kind == "message_start":
            self._raw_usage.update((event.get("message") or {}).get("usage") or {})
        elif kind == "content_block_start":
            return self._start_block(int(event["index"]), event.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._block_delta(int(event["index"]), event.get("delta") or {})
        elif kind == "content_block_stop":
            self._stop_block(int(event["index"]))
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop_reason = str(delta["stop_reason"])
            # message_delta's counts are cumulative: they replace what message_start said.
            self._raw_usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise stream_error(event, model=self.model)
        return []  # ping, and event types added after this was written

    def _start_block(self, index: int, block: Mapping[str, Any]) -> list[StreamEvent]:
        kind = str(block.get("type", ""))
        self._blocks[index] = _Block(
            kind=kind,
            id=str(block.get("id", "")),
            name=str(block.get("name", "")),
            start_input=block.get("input") or {},
        )
        if kind == "text" and block.get("text"):
            return [StreamEvent(text=str(block["text"]), model=self.model)]
        return []

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> list[StreamEvent]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [StreamEvent(text=str(delta["text"]), model=self.model)]
        if kind == "input_json_delta":
            block = self._blocks.get(index)
            if block is None:
                raise ModelError(f"stream sent a delta for unknown block #{index}", model=self.model)
            block.json_parts.append(str(delta.get("partial_json") or ""))
        return []  # thinking, signature and citation deltas are not part of the answer text

    def _stop_block(self, index: int) -> None:
        block = self._blocks.pop(index, None)
        if block is None or block.kind != "tool_use":
            return
        raw = "".join(block.json_parts)
        arguments = parse_arguments(raw or block.start_input, tool=block.name, model=self.model)
        self._calls.append((index, ToolCall(id=block.id, name=block.name, arguments=arguments)))

    def finish(self) -> StreamEvent:
        """The last event, once the stream has ended; raises if it ended before the model finished."""
        pending = self._sse.flush()
        if pending is not None:
            self._feed_data(pending)
        if self._stop_reason is None and not self.done:
            raise ModelUnavailable("the stream ended before the model finished", model=self.model)
        calls = tuple(call for _, call in sorted(self._calls, key=lambda item: item[0]))
        finish = _finish_reason(self._stop_reason, model=self.model)
        return StreamEvent(
            tool_calls=calls, usage=_parse_usage(self._raw_usage), finish_reason=finish, model=self.model
        )


def stream_error(event: Mapping[str, Any], *, model: str) -> ModelHTTPError:
    """An ``error`` event sent after the stream began, classified as if it had been the status."""
    error = event.get("error") or {}
    status = _ERROR_STATUS.get(str(error.get("type")), 500) if isinstance(error, Mapping) else 500
    body = json.dumps(dict(event))
    kind, detail = classify_error(body)
    return http_error(status, body, model=model, kind=kind, detail=detail)


# --- errors --------------------------------------------------------------------------------------


def classify_error(body: str) -> tuple[ErrorKind, str]:
    """Which specific error an Anthropic error body names, if any, and its message in short."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None, body.strip()[:_DETAIL_CHARS]
    error = payload.get("error") if isinstance(payload, Mapping) else None
    if not isinstance(error, Mapping):
        return None, body.strip()[:_DETAIL_CHARS]
    message = str(error.get("message") or "")
    detail = f"{error.get('type', 'error')}: {message}"[:_DETAIL_CHARS]
    if error.get("type") == "invalid_request_error" and _TOO_LONG.search(message):
        return ContextTooLong, detail
    return None, detail
