"""A lean ``text/event-stream`` response for token streams.

Starlette's StreamingResponse runs a task group per response to watch for the client leaving
(uvicorn announces ASGI 2.3); under 1,000 concurrent streams that bookkeeping showed up as a large
share of the gateway's CPU. Here one pending ``receive()`` per stream is the watch, checked before
each send: a client that hangs up stops the stream at the next event, and closing the event
iterator cancels the upstream request.

Only the response start goes through the middleware chain (which records the status and adds
the request id); body chunks go to the server's own ``send``, which ``StanchionAPI`` leaves in the
scope, instead of through five wrappers per token. A chunk ending in ``data: [DONE]`` ends the
response in the same write.

A stream that fails after its head was sent ends with ``failure_events``: the error in the API's
JSON shape as one event, then ``[DONE]``, so a client always sees how its stream ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from stanchion.server.chunks import DONE, event
from stanchion.server.errors import APIError, error_body

SERVER_SEND = "stanchion.server_send"  # the scope key of the ASGI server's own send


def failure_events(error: APIError) -> bytes:
    """The end of a stream that failed: its error event, then ``[DONE]``, in one write."""
    return event(error_body(error.status, error.code, error.message, error.param)) + DONE


class EventStreamResponse(Response):
    """A Response subclass only so FastAPI passes it through instead of validating a model."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], headers: Mapping[str, str] | None = None) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        send_body: Send = scope.get(SERVER_SEND, send)
        gone = asyncio.ensure_future(receive())  # completes with http.disconnect when the client leaves
        ended = False
        try:
            async for chunk in self.events:
                if gone.done():
                    return  # the finally closes the events, and with them the upstream request
                if not ended:
                    ended = chunk.endswith(DONE)
                    await send_body({"type": "http.response.body", "body": chunk, "more_body": not ended})
            if not ended:
                await send_body({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.events.aclose()
            if not gone.done():
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gone
