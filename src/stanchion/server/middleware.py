"""Pure ASGI middleware (no per-request task or body buffering, so streams pass straight through):
request ids, body size limits, metrics, one JSON access-log line per request, and the 500 of an
unhandled exception (answered here so the connection stays open for the client's next request)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stanchion.logs import request_id
from stanchion.server.errors import APIError, error_body, unhandled
from stanchion.server.metrics import Metrics
from stanchion.tracing import span

log = logging.getLogger("stanchion.server.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _TooLarge(Exception):
    pass


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body: int, max_upload: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given, declared = "", ""  # the two headers read here, without decoding all of them
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
            elif name == b"content-length":
                declared = value.decode("latin-1")
        rid = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        limit = (
            self.max_upload
            if scope["path"] == "/v1/documents" and scope["method"] == "POST"
            else self.max_body
        )
        status = 500
        sent_start = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent_start
            if message["type"] == "http.response.start":
                status = message["status"]
                sent_start = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        try:
            if declared.isdigit() and int(declared) > limit:
                raise _TooLarge
            with span("http.request", **{"http.method": scope["method"], "request.id": rid}) as current:
                await self.app(scope, limited_receive, send_with_id)
                current.set_attribute("http.status_code", status)
                current.set_attribute("http.route", getattr(scope.get("route"), "path", "unmatched"))
        except _TooLarge:
            if not sent_start:
                too_large = f"the request body exceeds the limit of {limit / 1e6:.1f} MB for {scope['path']}"
                await _send_error(send_with_id, APIError(413, "payload_too_large", too_large), close=True)
        except Exception as exc:
            if sent_start:
                raise  # a response cut short: the server closes the connection, as it must
            # Answered here, not by Starlette's outermost handler: that one re-raises to the
            # server, which then closes the connection and fails a pooled client's next request.
            await _send_error(send_with_id, unhandled(exc), close=False)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(template, scope["method"], status, seconds)
            if status >= 400:
                self.metrics.error(str(status))
            principal: Any = scope.get("state", {}).get("principal")
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": template,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "tenant": getattr(principal, "tenant", None),
                    "key_id": getattr(principal, "key_id", None),
                },
            )
            request_id.reset(token)


async def _send_error(send: Send, error: APIError, *, close: bool) -> None:
    body = json.dumps(error_body(error.status, error.code, error.message, error.param)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the request body was never read
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
