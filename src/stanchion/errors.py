"""One exception tree for the whole package.

    StanchionError
     ├── SpecError            invalid stanchion.yaml (key path, bad value, what is allowed)
     ├── IngestError          a source or file that cannot be ingested (path, reason)
     ├── EmbeddingError       an embedder failed or is misconfigured
     ├── StoreError           the index cannot be read or written
     ├── SearchError          a bad query, mode or filter
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
status codes, summaries) never parse strings.
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
    """The index could not be opened, read or written."""


class SearchError(StanchionError):
    """A search request is invalid (unknown mode, malformed filter, k out of range)."""


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
