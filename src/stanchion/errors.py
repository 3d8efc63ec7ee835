"""One exception tree for the whole package.

    StanchionError
     ├── SpecError            invalid stanchion.yaml (key path, bad value, what is allowed)
     ├── IngestError          a source or file that cannot be ingested (path, reason)
     ├── EmbeddingError       an embedder failed or is misconfigured
     ├── StoreError           a store (index, control-plane state, rate limits) cannot be read or
     │    │                   written (``backend``; ``detail``, the driver's words, for the log only)
     │    ├── BackendUnavailable      unreachable, connection lost, or no answer in time
     │    │    ├── RateLimitBackendDown   the rate-limit store (Redis or SQLite; ``url``) is down
     │    │    └── RedisUnavailable       Redis refused or dropped the connection, or did not reply
     │    ├── Conflict                a write that another one, still in progress, excludes
     │    └── RedisError              an error reply from Redis (the server is up)
     ├── SearchError          a bad query, mode or filter
     ├── ToolError            a tool call with arguments its schema refuses (``tool`` names it)
     ├── GuardError           a guard (PII detection) could not check the text: the request is
     │                        refused, nothing is sent (503 ``guard_unavailable``; ``detail`` for logs)
     ├── InputBlocked         a guard refused the caller's input: a prompt injection under the
     │                        ``block`` policy (400 ``prompt_injection``; ``reasons``)
     └── ModelError           a chat model failed (``model`` names which)
          ├── ModelHTTPError      the provider answered with an error status (``status_code``, ``body``)
          │    ├── RateLimited        429; ``retry_after`` seconds when the provider said
          │    ├── BadRequest         400/404/422: our request is wrong; never retried or failed over
          │    ├── ContextTooLong     the prompt exceeds the model's context window
          │    └── ContentFiltered    the provider refused the content
          ├── ModelTimeout        no answer within the attempt's time limit
          ├── ModelUnavailable    connection refused/reset, DNS, circuit breaker open
          └── AllModelsFailed     every attempt of a fallback chain failed (``attempts``)

Context travels as attributes, not only inside the message, so callers (CLI exit codes, API
status codes, summaries) never parse strings. Messages of store errors are short and name no
server, DSN or SQL: a job's ``error`` shows them. What the driver said is in ``detail``, for logs.
Every class here maps to an HTTP status in ``server/errors.py`` (a test walks the tree).
"""

from __future__ import annotations

from pathlib import Path


class StanchionError(Exception):
    """Base class of every error Stanchion raises on purpose."""


class SpecError(StanchionError):
    """The spec is invalid. ``key_path`` locates the bad key, e.g. ``sources[1].chunking.overlap``."""

    def __init__(self, message: str, *, key_path: str = "", file: Path | None = None) -> None:
        self.key_path = key_path
        self.file = file
        where = f"{file}: " if file else ""
        super().__init__(f"{where}{message}")


class IngestError(StanchionError):
    """A file or source could not be ingested; ``reason`` is short enough for a summary line."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class EmbeddingError(StanchionError):
    """The embedding model could not be loaded or failed on input."""


class StoreError(StanchionError):
    """A store could not be opened, read or written. ``backend`` is ``postgres``, ``sqlite`` or
    ``redis`` when known; ``detail`` holds the driver's message (it may name hosts, SQL or values:
    log it, never show it to a client)."""

    def __init__(self, message: str, *, backend: str = "", detail: str = "") -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(message)


class BackendUnavailable(StoreError):
    """The backend could not be reached, the connection broke, or it did not answer in time:
    retrying later may succeed (the API answers 503 with Retry-After)."""


class RateLimitBackendDown(BackendUnavailable):
    """The rate-limit store cannot be reached. ``url`` holds no password."""

    def __init__(self, message: str, *, backend: str, url: str, detail: str = "") -> None:
        self.url = url
        super().__init__(message, backend=backend, detail=detail)


class RedisUnavailable(BackendUnavailable):
    """Redis could not be reached, the connection broke, or the reply did not come in time."""

    def __init__(self, message: str) -> None:
        super().__init__(message, backend="redis")


class Conflict(StoreError):
    """A write refused because another one in progress excludes it (a unique constraint): say
    what holds it, and try again once that is done (the API answers 409)."""


class RedisError(StoreError):
    """An error reply from Redis (``-ERR ...``); the server is up."""

    def __init__(self, message: str) -> None:
        super().__init__(message, backend="redis")


class SearchError(StanchionError):
    """A search request is invalid (unknown mode, malformed filter, k out of range)."""


class ToolError(StanchionError):
    """A tool was called with arguments its schema refuses; ``tool`` names it. The message says
    which argument is wrong and what is allowed (a model reads it and may correct its call)."""

    def __init__(self, message: str, *, tool: str) -> None:
        self.tool = tool
        super().__init__(f"tool {tool}: {message}")


class GuardError(StanchionError):
    """A guard could not check a text (its model failed to load, the analyzer raised): fail
    closed, never "nothing found". The API answers 503 ``guard_unavailable``: the request was
    fine, this server could not vouch for it. ``detail`` holds the cause, for the log only (it
    may quote the text)."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        self.detail = detail
        super().__init__(message)


class InputBlocked(StanchionError):
    """A guard refused what the caller sent (``guards.injection.input: block``): the request is
    refused before any model or tool sees it. ``code`` is the API's stable error code
    (``prompt_injection``), ``reasons`` what matched (rule names, ``classifier``)."""

    def __init__(
        self, message: str, *, code: str = "prompt_injection", reasons: tuple[str, ...] = ()
    ) -> None:
        self.code = code
        self.reasons = reasons
        super().__init__(message)


class ModelError(StanchionError):
    """A chat model call failed. ``model`` is the configured model name (never a secret)."""

    def __init__(self, message: str, *, model: str = "") -> None:
        self.model = model
        super().__init__(f"{model}: {message}" if model else message)


class ModelHTTPError(ModelError):
    def __init__(self, message: str, *, model: str = "", status_code: int, body: str = "") -> None:
        self.status_code = status_code
        self.body = body
        super().__init__(message, model=model)


class RateLimited(ModelHTTPError):
    def __init__(
        self, message: str, *, model: str = "", retry_after: float | None = None, body: str = ""
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, model=model, status_code=429, body=body)


class BadRequest(ModelHTTPError):
    """Our request was wrong (4xx other than 429): retrying or failing over would not help."""


class ContextTooLong(BadRequest):
    """The prompt does not fit the model's context window."""


class ContentFiltered(ModelHTTPError):
    """The provider's content filter refused the request or the answer."""


class ModelTimeout(ModelError):
    """The model did not answer within the attempt's time limit."""


class ModelUnavailable(ModelError):
    """The provider could not be reached (connection refused or reset), or its circuit is open."""


class AllModelsFailed(ModelError):
    """Every attempt in a fallback chain failed; ``attempts`` holds (model, error) in order."""

    def __init__(self, attempts: list[tuple[str, ModelError]]) -> None:
        self.attempts = attempts
        lines = "; ".join(f"{name}: {type(err).__name__}: {err}" for name, err in attempts)
        super().__init__(f"all {len(attempts)} attempts failed ({lines})")
