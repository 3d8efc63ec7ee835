"""server/chunks.py: the bytes of a streamed completion."""

from __future__ import annotations

import json

from stanchion.server.chunks import DONE, ChunkFramer


def _decode(frame: bytes) -> list[object]:
    events = [e for e in frame.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e[6:] if e[6:] == "[DONE]" else json.loads(e[6:]) for e in events]


def test_role_rides_on_the_first_delta_only() -> None:
    frames = ChunkFramer("chatcmpl-1", 123, "gw")
    first, second = _decode(frames.text("Hé")), _decode(frames.text(' "quoted"\n'))
    assert first == [
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 123,
            "model": "gw",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hé"}, "finish_reason": None}],
        }
    ]
    assert second[0]["choices"][0]["delta"] == {"content": ' "quoted"\n'}  # type: ignore[index]


def test_a_stream_without_text_still_sends_the_role() -> None:
    frames = ChunkFramer("c", 1, "gw")
    (chunk,) = _decode(frames.chunk({}, "tool_calls"))
    assert chunk["choices"][0] == {"index": 0, "delta": {"role": "assistant"}, "finish_reason": "tool_calls"}  # type: ignore[index]


def test_the_end_is_one_frame() -> None:
    frames = ChunkFramer("c", 1, "gw")
    frames.text("x")
    end = frames.chunk({}, "stop", stanchion={"model": "up"}) + frames.usage({"total_tokens": 3}) + DONE
    final, usage, done = _decode(end)
    assert final["choices"][0]["finish_reason"] == "stop" and usage["usage"] == {"total_tokens": 3}  # type: ignore[index]
    assert done == "[DONE]" and end.endswith(DONE)
