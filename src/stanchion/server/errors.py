"""API errors: a JSON body with a stable machine-readable ``code`` and a human ``message``.

The body follows OpenAI's error shape (``{"error": {"message", "type", "code"}}``) so OpenAI
clients surface it as they would theirs. Bad input never becomes a 500: every Stanchion error that
a request can cause maps to a 4xx here, a failed dependency to a 502/503/504; a 500 means a bug
and says nothing about internals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stanchion.errors import (
    BackendUnavailable,
    BadRequest,
    Conflict,
    ContentFiltered,
    ContextTooLong,
    EmbeddingError,
    GuardError,
    IngestError,
    InputBlocked,
    ModelError,
    ModelTimeout,
    RateLimited,
    SearchError,
    SpecError,
    StanchionError,
    StoreError,
    ToolError,
)
from stanchion.logs import request_id
from stanchion.state.secrets import redact

log = logging.getLogger(__name__)
_LOGGED = "_stanchion_logged"  # set on an error once from_stanchion has logged it

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    502: "upstream_error",
    503: "unavailable",
    504: "upstream_timeout",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.param = param
        super().__init__(message)


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, object]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.status, exc.code, exc.message, exc.param), exc.status, headers=exc.headers
    )


def from_stanchion(exc: StanchionError) -> APIError:
    """Translate a domain error into its HTTP meaning.

    Errors the caller's input caused (a bad filter, a document that cannot be read) keep their
    message: it is about what the caller sent. The others (an upstream model, a store, the
    embedder) are failures of this server's dependencies: the client gets a stable code, a short
    message and the request id; what the provider or driver said goes to the log (it can name
    internal hosts, SQL or another tenant's values).
    """
    if isinstance(exc, SearchError | SpecError | ToolError):
        return APIError(400, "invalid_request", redact(str(exc)))
    if isinstance(exc, InputBlocked):  # the caller's own input: a 4xx with a stable code
        return APIError(400, exc.code, str(exc))
    if isinstance(exc, IngestError):
        return APIError(422, "unprocessable_document", redact(str(exc)))
    if isinstance(exc, Conflict):  # our own words: what holds the write, and to try again later
        return APIError(409, "conflict", str(exc))
    status, code, message, headers = _failure(exc)
    rid = request_id.get()
    if not getattr(exc, _LOGGED, False):  # a route that reads the status first translates it twice
        setattr(exc, _LOGGED, True)
        fields = {"status": status, "code": code, "error": type(exc).__name__, "detail": redact(str(exc))}
        if isinstance(exc, StoreError) and exc.detail:
            fields["driver_detail"] = redact(exc.detail)  # what PostgreSQL, SQLite or Redis said
        log.warning("server.error", extra=fields)
    return APIError(status, code, f"{message} (request id {rid})" if rid else message, headers=headers)


def _failure(exc: StanchionError) -> tuple[int, str, str, dict[str, str]]:
    """Status, code, client message and headers of a failure of a dependency (or of a bug)."""
    if isinstance(exc, ContextTooLong):
        return 400, "context_length_exceeded", "the conversation does not fit the model's context window", {}
    if isinstance(exc, ContentFiltered):
        return 400, "content_filtered", "the model provider's content filter refused the request", {}
    if isinstance(exc, BadRequest):  # our request to the provider was refused
        return 502, "upstream_rejected", "the model provider rejected the request", {}
    if isinstance(exc, RateLimited):
        retry = str(math.ceil(exc.retry_after)) if exc.retry_after else "1"
        return 503, "upstream_rate_limited", "the model provider is rate limiting", {"Retry-After": retry}
    if isinstance(exc, ModelTimeout):
        return 504, "upstream_timeout", "the model did not answer in time", {}
    if isinstance(exc, ModelError):  # ModelUnavailable, AllModelsFailed, any other provider error
        return 502, "upstream_error", "the model provider failed", {}
    if isinstance(exc, EmbeddingError):
        return 503, "embedding_unavailable", "the embedding model failed", {}
    if isinstance(exc, GuardError):  # fail closed: unchecked text is never sent on
        return 503, "guard_unavailable", "the request could not be checked for PII; nothing was sent", {}
    if isinstance(exc, BackendUnavailable):
        return (
            503,
            "backend_unavailable",
            "a backend of this server is unavailable; retry shortly",
            {"Retry-After": "1"},
        )
    if isinstance(exc, StoreError):
        return 503, "backend_unavailable", "a backend of this server failed", {}
    return 500, "internal_error", "internal error", {}


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StanchionError)
    async def _domain(_: Request, exc: StanchionError) -> JSONResponse:
        return error_response(from_stanchion(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(invalid_request(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI's "error parsing the body" for a JSON body json.loads could not read
            return error_response(_unreadable_json(exc.__cause__))
        code = _STATUS_CODES.get(exc.status_code, "error")
        headers = dict(exc.headers or {})
        return error_response(APIError(exc.status_code, code, str(exc.detail), headers=headers))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        return error_response(unhandled(exc))


def unhandled(exc: Exception) -> APIError:
    """A bug: logged with its traceback; the client gets a 500 that names nothing internal."""
    log.error("server.unhandled", exc_info=exc, extra={"error": type(exc).__name__})
    return APIError(500, "internal_error", "internal error; the request id is in the logs")


def invalid_request(errors: Sequence[Mapping[str, Any]]) -> APIError:
    """A validation failure as one 422 that names the first field at fault and counts the rest.

    A value that fits no member of a union fails once per member, each error's path ending in the
    member's type (``metadata.team.str``, ``metadata.team.int`` ...). Those are one problem: the
    field is named without the member, and the members' complaints are joined.
    """
    if not errors:
        return APIError(422, "invalid_request", "invalid request")
    if errors[0].get("type") == "json_invalid":  # its "path" is a character position
        return _unreadable_json(errors[0])
    path = _path(errors[0])
    first = [errors[0], *(e for e in errors[1:] if _one_union(errors[0], e))]  # one problem
    if len(first) > 1:
        path = path[:-1]
    complaint = " or ".join(dict.fromkeys(str(e.get("msg", "invalid value")) for e in first))
    where = ".".join(path)
    message = f"{where}: {complaint}" if where else complaint
    others = len(errors) - len(first)
    if others:
        message += f" (and {others} more problem{'s' if others > 1 else ''})"
    return APIError(422, "invalid_request", message, param=where or None)


def _unreadable_json(cause: Mapping[str, Any] | Exception) -> APIError:
    """A 422 for a body that is not JSON: FastAPI's decode error (a mapping whose ``loc`` ends in
    the character position), or what json.loads raised besides (invalid UTF-8, too deep, a number
    too long)."""
    if isinstance(cause, Mapping):
        # FastAPI's ends in the position; pydantic's ``model_validate_json`` has none (its error says where).
        loc, error = cause.get("loc") or (), cause.get("ctx", {}).get("error", "invalid JSON")
        reason = f"{error} at character {loc[-1]}" if loc else str(error)
    elif isinstance(cause, UnicodeDecodeError):
        reason = f"it is not UTF-8 text (byte {cause.start})"
    elif isinstance(cause, RecursionError):
        reason = "it nests arrays or objects too deeply"
    else:
        reason = str(cause)
    return APIError(422, "invalid_request", f"the request body is not valid JSON: {reason}")


def _path(error: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(p) for p in error.get("loc", ()) if p != "body")


def _one_union(first: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether two errors are two members of one union rejecting the same value (sibling fields
    have their own values; two missing fields share their parent as input, hence the type check)."""
    a, b = _path(first), _path(other)
    return (
        len(a) > 1
        and len(a) == len(b)
        and a[:-1] == b[:-1]
        and first.get("type") != "missing"
        and other.get("type") != "missing"
        and first.get("input") == other.get("input")
    )
