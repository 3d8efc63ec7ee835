"""``ChatStreamParser.feed_bytes``: the byte-level reader a gateway relays streams with must give
exactly what the line-by-line reader gives, however the network splits the stream."""

from __future__ import annotations

import json
import random

import pytest

from stanchion.errors import ModelError
from stanchion.models.openai_format import ChatStreamParser
from stanchion.types import StreamEvent


def _chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> str:
    payload = {
        "id": "x",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return "data: " + json.dumps(payload) + "\n\n"


STREAMS = {
    "plain": _chunk({"role": "assistant", "content": ""})
    + _chunk({"content": "Hel"})
    + _chunk({"content": "lo ✓"})
    + _chunk({}, "stop")
    + "data: "
    + json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    + "\n\ndata: [DONE]\n\n",
    "crlf": (_chunk({"content": "a"}) + _chunk({"content": "b"}, "stop") + "data: [DONE]\n\n").replace(
        "\n", "\r\n"
    ),
    "tools": _chunk(
        {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"x":'}}]}
    )
    + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]})
    + _chunk({}, "tool_calls")
    + "data: [DONE]\n\n",
    "multi-line event": 'data: {"choices": [{"index": 0,\ndata: "delta": {"content": "joined"}}]}\n\n'
    + _chunk({}, "stop")
    + "data: [DONE]\n\n",
    "comments and ids": ": keep-alive\n\nid: 7\n" + _chunk({"content": "x"}) + _chunk({}, "stop"),
    "text without a final newline": _chunk({"content": "x"})
    + 'data: {"choices": [{"index": 0, "delta": {"content": "end"}, "finish_reason": "stop"}]}',
    "no final newline": _chunk({"content": "x"})
    + 'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}',
}


def _by_lines(stream: str) -> list[StreamEvent]:
    parser = ChatStreamParser(model="m")
    events = [e for line in stream.split("\n") for e in parser.feed_line(line)]
    return [*events, parser.finish()]


def _by_bytes(stream: bytes, cuts: list[int]) -> list[StreamEvent]:
    parser = ChatStreamParser(model="m")
    pieces = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        pieces += parser.feed_bytes(stream[start:end])
    events = [p if isinstance(p, StreamEvent) else StreamEvent(text=p, model="m") for p in pieces]
    return [*events, parser.finish()]


@pytest.mark.parametrize("name", list(STREAMS))
def test_any_split_gives_the_line_readers_events(name: str) -> None:
    stream = STREAMS[name]
    expected = _by_lines(stream)
    data = stream.encode()
    rng = random.Random(name)
    splits = [[], list(range(1, len(data)))]  # whole, and one byte per read
    splits += [sorted(rng.sample(range(1, len(data)), k)) for k in (1, 3, 10) for _ in range(5)]
    for cuts in splits:
        assert _by_bytes(data, cuts) == expected, cuts


def test_plain_text_deltas_come_out_as_strings() -> None:
    parser = ChatStreamParser(model="m")
    pieces = parser.feed_bytes(STREAMS["plain"].encode())
    assert pieces == ["Hel", "lo ✓"] and parser.done


def test_text_in_an_unterminated_last_event_is_kept() -> None:
    events = _by_bytes(STREAMS["text without a final newline"].encode(), [])
    assert "".join(e.text for e in events) == "xend" and events[-1].finish_reason == "stop"


def test_an_error_chunk_still_raises() -> None:
    parser = ChatStreamParser(model="m")
    with pytest.raises(ModelError, match="overloaded"):
        parser.feed_bytes(b'data: {"error": {"message": "overloaded", "code": 503}}\n\n')


def test_a_line_that_is_not_json_still_raises() -> None:
    parser = ChatStreamParser(model="m")
    with pytest.raises(ModelError, match="not JSON"):
        parser.feed_bytes(b"data: {broken\n\n")
