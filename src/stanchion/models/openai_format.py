"""The OpenAI chat-completions wire format: request bodies, answers, SSE streams and error bodies.

No I/O happens here; ``openai_compat.py`` holds the connection. One format serves OpenAI, vLLM,
Ollama, llama.cpp's server and anything else that speaks ``/v1/chat/completions``, so what these
servers do differently (vLLM's top-level error objects, llama.cpp's context-size error type,
Ollama's string errors) is absorbed here.

The status-to-exception rules in ``http_error`` and the SSE line decoder are shared with the
Anthropic format, which differs only in how it names its errors and events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from stanchion.errors import (
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    ModelError,
    ModelHTTPError,
    ModelUnavailable,
    RateLimited,
)
from stanchion.models.base import ChatOptions, Piece
from stanchion.types import Completion, Message, StreamEvent, ToolCall, ToolSpec, Usage

__all__ = [
    "ChatStreamParser",
    "ErrorKind",
    "LineBuffer",
    "SSEDecoder",
    "build_request",
    "classify_error",
    "encode_message",
    "http_error",
    "malformed_arguments",
    "parse_arguments",
    "parse_completion",
    "parse_retry_after",
    "tool_call",
]

ErrorKind = type[ContextTooLong] | type[ContentFiltered] | None

# What OpenAI-compatible servers say when the prompt does not fit: OpenAI and vLLM ("maximum
# context length"), llama.cpp ("exceeds the available context size"), Ollama and others.
_CONTEXT_MESSAGE = re.compile(
    r"maximum context length|context[ _]length[ _]exceeded|context window|"
    r"exceeds? the (available )?context|prompt is too long|too many tokens",
    re.IGNORECASE,
)
_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error", "string_above_max_length"}
_FILTER_CODES = {"content_filter", "content_policy_violation"}
_DETAIL_CHARS = 300


# --- requests ------------------------------------------------------------------------------------


def build_request(
    model: str,
    messages: Sequence[Message],
    options: ChatOptions | None = None,
    *,
    stream: bool = False,
    default_max_tokens: int | None = None,
) -> dict[str, Any]:
    """The JSON body of a ``/chat/completions`` request.

    Raises ``ValueError`` for requests that are wrong on our side (a tool result without the call
    it answers, a forced tool that is not offered): those are bugs, not model failures.
    """
    options = options or ChatOptions()
    body: dict[str, Any] = {"model": model, "messages": [encode_message(m) for m in messages]}
    if stream:
        # Without include_usage the stream carries no token counts at all.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if options.temperature is not None:
        body["temperature"] = options.temperature
    max_tokens = options.max_tokens if options.max_tokens is not None else default_max_tokens
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if options.stop:
        body["stop"] = list(options.stop)
    if options.json_mode:
        body["response_format"] = {"type": "json_object"}
    if options.tools:
        body["tools"] = [_encode_tool(tool) for tool in options.tools]
    choice = _encode_tool_choice(options.tool_choice, options.tools)
    if choice is not None:
        body["tool_choice"] = choice
    return body


def encode_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        if not message.tool_call_id:
            raise ValueError("a role='tool' message needs tool_call_id: the id of the call it answers")
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    encoded: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        encoded["name"] = message.name
    if message.role == "assistant" and message.tool_calls:
        # OpenAI wants null, not "", beside tool calls; arguments travel as a JSON string.
        encoded["content"] = message.content or None
        encoded["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.raw_arguments or json.dumps(dict(call.arguments)),
                },
            }
            for call in message.tool_calls
        ]
    return encoded


def _encode_tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)},
    }


def _encode_tool_choice(choice: str | None, tools: Sequence[ToolSpec]) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if not tools:
        # OpenAI rejects tool_choice without tools; "auto" and "none" then mean what no tools mean.
        if choice in ("auto", "none"):
            return None
        raise ValueError(f"tool_choice={choice!r} needs tools to choose from")
    if choice in ("auto", "none", "required"):
        return choice
    if choice not in {tool.name for tool in tools}:
        raise ValueError(f"tool_choice names {choice!r}, which is not among the offered tools")
    return {"type": "function", "function": {"name": choice}}


# --- answers -------------------------------------------------------------------------------------


def parse_completion(payload: Any, *, model: str) -> Completion:
    """A non-streamed ``chat.completion`` body as a Completion; ``model`` is our configured name."""
    try:
        choice = payload["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        raw_calls = message.get("tool_calls") or []
        finish = choice.get("finish_reason") or "stop"
        calls = tuple(
            tool_call(
                str(call.get("id") or f"call_{index}"),
                str(call["function"]["name"]),
                call["function"].get("arguments"),
                model=model,
            )
            for index, call in enumerate(raw_calls)
        )
        usage = _parse_usage(payload.get("usage"))
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ModelError(
            f"unexpected chat completion body ({type(exc).__name__}: {exc})", model=model
        ) from exc
    if finish == "content_filter":
        raise ContentFiltered(
            "the provider's content filter stopped the answer",
            model=model,
            status_code=200,
            body=json.dumps(payload),
        )
    return Completion(text=str(text), model=model, usage=usage, tool_calls=calls, finish_reason=str(finish))


def parse_arguments(raw: Any, *, tool: str, model: str) -> dict[str, Any]:
    """A tool call's arguments, sent as a JSON string, as a dict; models do emit broken JSON.
    Raises ModelError for arguments that are not a JSON object (``tool_call`` keeps them instead)."""
    if raw is None or raw == "":
        return {}  # a call without parameters arrives with empty arguments on some servers
    if isinstance(raw, Mapping):
        return dict(raw)  # Ollama and some others send the object itself
    try:
        value = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"tool call {tool!r} has arguments that are not valid JSON: {str(raw)[:200]!r}", model=model
        ) from exc
    if not isinstance(value, dict):
        raise ModelError(
            f"tool call {tool!r} has arguments that are not a JSON object: {str(raw)[:200]!r}", model=model
        )
    return value


def tool_call(call_id: str, name: str, raw: Any, *, model: str) -> ToolCall:
    """A model's tool call. Arguments that are not a JSON object (broken JSON, a list, a string)
    are kept as ``raw_arguments`` with empty ``arguments``: the call is not the model's failure
    but the tool's bad input, which the caller answers with a tool error the model can correct
    (``malformed_arguments``), or, on a gateway, passes to its client as written."""
    try:
        return ToolCall(call_id, name, parse_arguments(raw, tool=name, model=model))
    except ModelError:
        return ToolCall(call_id, name, {}, raw_arguments=str(raw))


def malformed_arguments(call: ToolCall) -> str | None:
    """Why ``call``'s arguments cannot be used (they are not a JSON object), or None."""
    if call.arguments or not call.raw_arguments.strip():
        return None
    try:
        value = json.loads(call.raw_arguments)
    except ValueError:
        return f"arguments are not valid JSON: {call.raw_arguments[:200]!r}; send one JSON object"
    if isinstance(value, dict):
        return None
    return f"arguments must be one JSON object, not {type(value).__name__}: {call.raw_arguments[:200]!r}"


def _parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, Mapping):
        return Usage()
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


# --- streams -------------------------------------------------------------------------------------


class LineBuffer:
    """Network reads as complete lines (without the ``\n``); a line's start waits for its end."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._rest += data
        if b"\n" not in data:
            return []
        *lines, self._rest = self._rest.split(b"\n")
        return lines

    def take_rest(self) -> bytes:
        """What the stream left after its last newline (a last line with no end)."""
        rest, self._rest = self._rest, b""
        return rest


class SSEDecoder:
    """Server-sent events, one line at a time: returns an event's data when its blank line arrives.

    Multi-line data joins with newlines, as the SSE specification says; ``event:``, ``id:`` and
    comment lines are dropped, because both formats we speak repeat the event type in the data.
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    @property
    def pending(self) -> bool:
        """True while an event's data lines are being collected."""
        return bool(self._data)

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        """The pending event, if any: a stream may end without the final blank line."""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatStreamParser:
    """Turns a ``/chat/completions`` SSE stream into StreamEvents.

    ``feed_line`` returns the text deltas a line completes. Tool-call fragments are assembled by
    index and come out, parsed, on the final event from ``finish()``, with usage and the finish
    reason. ``done`` turns true at ``data: [DONE]``.
    """

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.done = False
        self._sse = SSEDecoder()
        self._calls: dict[int, _PartialCall] = {}
        self._usage: Usage | None = None
        self._finish: str | None = None
        self._lines = LineBuffer()

    def feed_bytes(self, data: bytes) -> list[Piece]:
        """The pieces the bytes of one network read complete (``models.base.Piece``).

        A ``data:`` line holding one whole JSON chunk of text and nothing else, which is nearly
        every line of a stream, becomes its text directly; any other line goes through
        ``feed_line``, so multi-line events, usage, tool calls and errors are handled there.
        """
        pieces: list[Piece] = []
        for line in self._lines.feed(data):
            if not self._sse.pending:
                if line.startswith(b"data: {"):
                    try:
                        chunk = orjson.loads(line[6:])
                    except orjson.JSONDecodeError:
                        pass  # perhaps the first line of a multi-line event: the decoder collects it
                    else:
                        text = _text_only(chunk)
                        if text is None:
                            pieces += self.feed(chunk)
                        else:
                            pieces.append(text)
                        continue
                elif not line or line == b"\r":
                    continue  # the blank line that ends an event already taken
            pieces += self.feed_line(line.decode("utf-8", "replace"))
        return pieces

    def feed_line(self, line: str) -> list[StreamEvent]:
        data = self._sse.feed(line)
        return self._feed_data(data) if data is not None else []

    def _feed_data(self, data: str) -> list[StreamEvent]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise ModelError(
                f"stream sent a line that is not JSON: {data[:200]!r}", model=self.model
            ) from exc
        return self.feed(chunk)

    def feed(self, chunk: Any) -> list[StreamEvent]:
        """One decoded ``chat.completion.chunk``."""
        if not isinstance(chunk, Mapping):
            raise ModelError(f"stream sent an unexpected chunk: {str(chunk)[:200]!r}", model=self.model)
        if chunk.get("error") or chunk.get("object") == "error":
            raise _stream_error(chunk, model=self.model)
        if chunk.get("usage"):
            self._usage = _parse_usage(chunk["usage"])
        events: list[StreamEvent] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # we never ask for n > 1
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events.append(StreamEvent(text=str(delta["content"]), model=self.model))
            for position, piece in enumerate(delta.get("tool_calls") or []):
                self._add_call_piece(position, piece)
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
        return events

    def _add_call_piece(self, position: int, piece: Mapping[str, Any]) -> None:
        index = int(piece.get("index", position))
        call = self._calls.setdefault(index, _PartialCall())
        if piece.get("id"):
            call.id = str(piece["id"])
        function = piece.get("function") or {}
        if function.get("name"):
            call.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):
            call.arguments.append(json.dumps(dict(arguments)))
        elif arguments:
            call.arguments.append(str(arguments))

    def finish(self) -> StreamEvent:
        """The last event, once the stream has ended; raises if it ended before the model finished.
        It carries the text of an event the stream left unterminated (no final newline)."""
        tail: list[StreamEvent] = []
        if rest := self._lines.take_rest():
            tail += self.feed_line(rest.decode("utf-8", "replace"))
        pending = self._sse.flush()
        if pending is not None:
            tail += self._feed_data(pending)
        if self._finish is None and not self.done:
            raise ModelUnavailable("the stream ended before the model finished", model=self.model)
        if self._finish == "content_filter":
            raise ContentFiltered(
                "the provider's content filter stopped the answer", model=self.model, status_code=200
            )
        calls = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            if not partial.name:
                raise ModelError(f"stream sent tool call #{index} without a name", model=self.model)
            raw = "".join(partial.arguments)
            calls.append(tool_call(partial.id or f"call_{index}", partial.name, raw, model=self.model))
        return StreamEvent(
            text="".join(event.text for event in tail),
            tool_calls=tuple(calls),
            usage=self._usage or Usage(),
            finish_reason=self._finish or ("tool_calls" if calls else "stop"),
            model=self.model,
        )


def _text_only(chunk: Any) -> str | None:
    """The text of a chunk that carries a text delta and nothing else ``feed`` looks at."""
    try:
        (choice,) = chunk["choices"]
        delta = choice["delta"]
        text = delta["content"]
    except (KeyError, TypeError, ValueError):
        return None
    if (
        type(text) is not str
        or not text
        or choice.get("finish_reason")
        or choice.get("index", 0) != 0
        or delta.get("tool_calls")
        or chunk.get("usage")
        or "error" in chunk
        or chunk.get("object") == "error"
    ):
        return None
    return text


def _stream_error(chunk: Mapping[str, Any], *, model: str) -> ModelHTTPError:
    """An error object sent inside a stream (OpenAI and vLLM do this after a 200 status)."""
    error = chunk.get("error", chunk)
    code = error.get("code") if isinstance(error, Mapping) else None
    # vLLM puts the HTTP status it would have sent in "code"; otherwise treat it as a server fault.
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    body = json.dumps(dict(chunk))
    kind, detail = classify_error(body)
    return http_error(status, body, model=model, kind=kind, detail=detail)


# --- errors --------------------------------------------------------------------------------------


def classify_error(body: str) -> tuple[ErrorKind, str]:
    """Which specific error an error body names, if any, and the provider's message in short."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None, body.strip()[:_DETAIL_CHARS]
    error: Any = payload.get("error", payload) if isinstance(payload, Mapping) else payload
    if isinstance(error, str):
        message, code, kind = error, "", ""  # Ollama: {"error": "message"}
    elif isinstance(error, Mapping):
        message = str(error.get("message") or "")
        code, kind = str(error.get("code") or ""), str(error.get("type") or "")
    else:
        return None, body.strip()[:_DETAIL_CHARS]
    detail = (message or body.strip())[:_DETAIL_CHARS]
    if code in _CONTEXT_CODES or kind in _CONTEXT_CODES or _CONTEXT_MESSAGE.search(message):
        return ContextTooLong, detail
    if code in _FILTER_CODES or kind in _FILTER_CODES:
        return ContentFiltered, detail
    return None, detail


def http_error(
    status_code: int,
    body: str,
    *,
    model: str,
    headers: Mapping[str, str] | None = None,
    api_key_env: str | None = None,
    kind: ErrorKind = None,
    detail: str = "",
) -> ModelHTTPError:
    """The exception for an error status, after the format's ``classify_error`` read the body.

    429 is RateLimited (Retry-After honoured); a body naming the context window or the content
    filter wins next; 401/403 are BadRequest naming the key's variable, since retrying with the
    same key cannot help; 408 and 409 are transient, as OpenAI documents; other 4xx are BadRequest;
    everything else (5xx, Anthropic's 529 overloaded) is a plain, retryable ModelHTTPError.
    """
    suffix = f": {detail}" if detail else ""
    if status_code == 429:
        retry_after = parse_retry_after(headers or {})
        return RateLimited(
            f"rate limited (HTTP 429){suffix}", model=model, retry_after=retry_after, body=body
        )
    if kind is ContextTooLong:
        return ContextTooLong(
            f"the prompt does not fit the context window (HTTP {status_code}){suffix}",
            model=model,
            status_code=status_code,
            body=body,
        )
    if kind is ContentFiltered:
        return ContentFiltered(
            f"the provider's content filter refused (HTTP {status_code}){suffix}",
            model=model,
            status_code=status_code,
            body=body,
        )
    if status_code in (401, 403):
        where = (
            f"check the key in ${api_key_env}" if api_key_env else "the endpoint wants a key: set api_key_env"
        )
        return BadRequest(
            f"authentication failed (HTTP {status_code}); {where}{suffix}",
            model=model,
            status_code=status_code,
            body=body,
        )
    if 400 <= status_code < 500 and status_code not in (408, 409):
        return BadRequest(
            f"request rejected (HTTP {status_code}){suffix}", model=model, status_code=status_code, body=body
        )
    return ModelHTTPError(
        f"provider error (HTTP {status_code}){suffix}", model=model, status_code=status_code, body=body
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass  # fall through to Retry-After
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
