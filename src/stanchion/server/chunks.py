"""The bytes of one streamed completion: ``chat.completion.chunk`` events, then ``[DONE]``.

Every text delta of a completion is the same bytes around the text, so those are encoded once and
each token costs one string escape. The assistant role rides on the first delta rather than an
event of its own, and the last chunk, the usage chunk and ``[DONE]`` leave as one piece: at a
gateway's thousands of tokens a second each write to a socket is a measurable share of the CPU.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

DONE = b"data: [DONE]\n\n"


def event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class ChunkFramer:
    """Server-sent events for one completion, with the id, creation time and model given."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self.opened = False  # whether the role has been sent
        template = event(
            {**self.head, "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": None}]}
        )
        before, _, self._after = template.partition(b'"content":""')
        self._before = before + b'"content":'

    def chunk(self, delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
        if not self.opened:
            delta = {"role": "assistant", **delta}
            self.opened = True
        return event(
            {**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        )

    def text(self, text: str) -> bytes:
        """A content delta: the first one also carries the role."""
        if not self.opened:
            return self.chunk({"content": text})
        return self._before + encode_basestring_ascii(text).encode() + self._after

    def usage(self, usage: dict[str, int]) -> bytes:
        return event({**self.head, "choices": [], "usage": usage})
