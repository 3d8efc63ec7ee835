"""Streaming chat completions on gateway routes, served in front of FastAPI's routing.

A gateway stream is the request a production deployment sends most, and at 1,000 concurrent
streams FastAPI's per-request work (routing, dependency solving, body parsing, validation) was
about a sixth of a worker's CPU. This middleware sits inside ``RequestMiddleware`` (request id,
body limit, metrics, access log) and takes a request only when it is sure to start a stream: a
JSON body that validates as ``ChatCompletionRequest`` with ``stream: true``, a route with
``grounded: false``, and a valid API key. It then calls the same endpoint function FastAPI would,
so a fast stream runs through the same request pipeline (admission, stages, accounting).
Anything else, errors included, is replayed to FastAPI unchanged, so every error is rendered by
one set of handlers and the OpenAPI schema describes what is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stanchion.errors import StanchionError
from stanchion.server.context import ServerContext
from stanchion.server.errors import APIError, error_response, from_stanchion
from stanchion.server.schemas import ChatCompletionRequest

PATH = "/v1/chat/completions"
Endpoint = Callable[..., Awaitable[object]]


class GatewayStreams:
    def __init__(self, app: ASGIApp, *, ctx: ServerContext, endpoint: Endpoint, route: BaseRoute) -> None:
        self.app = app
        self.ctx = ctx
        self.endpoint = endpoint
        self.route = route  # what the access log and metrics name the request by

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not headers.get("content-type", "").startswith("application/json"):
            await self.app(scope, receive, send)
            return
        raw, ended = await _read_body(receive)
        response = await self._stream(scope, headers, raw) if ended else None
        if response is None:
            await self.app(scope, _replay(raw, ended, receive), send)
        else:
            await response(scope, receive, send)

    async def _stream(self, scope: Scope, headers: Headers, raw: bytes) -> Response | None:
        """The stream's response, an error response once the key was admitted, or None to let
        FastAPI answer."""
        try:
            body = ChatCompletionRequest.model_validate_json(raw)
        except ValidationError:
            return None
        route = self.ctx.app.spec.routes.get(body.model)
        if not body.stream or route is None or route.grounded:
            return None
        try:
            principal = await self.ctx.keys.principal(headers)
        except APIError:
            return None
        except StanchionError as exc:  # the key store is down: a 503 here, not a 500 outside the handlers
            return error_response(from_stanchion(exc))
        scope.setdefault("state", {})["principal"] = principal
        scope["route"] = self.route
        try:
            # No Response to set headers on: a stream's headers go on its EventStreamResponse.
            response = await self.endpoint(body, self.ctx, principal, Request(scope), Response())
        except APIError as exc:
            return error_response(exc)
        except StanchionError as exc:
            return error_response(from_stanchion(exc))
        assert isinstance(response, Response)
        return response


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole request body, and False if the client left before sending it."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts), False
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), True


def _replay(raw: bytes, ended: bool, receive: Receive) -> Receive:
    """``receive`` that hands over the body already read, then defers to the server's."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent and ended:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        if not sent:
            sent = True
            return {"type": "http.disconnect"}
        return await receive()

    return replayed
