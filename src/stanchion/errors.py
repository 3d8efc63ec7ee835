"""One exception tree for the whole package.

    StanchionError
     ├── SpecError            invalid stanchion.yaml (key path, bad value, what is allowed)
     ├── IngestError          a source or file that cannot be ingested (path, reason)
     ├── EmbeddingError       an embedder failed or is misconfigured
     ├── StoreError           the index cannot be read or written
     └── SearchError          a bad query, mode or filter

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
