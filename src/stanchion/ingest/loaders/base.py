"""The loader protocol: one source unit (a file, or a whole Slack export) in, Documents out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from stanchion.types import Document

# Files larger than this are reported as failed rather than read into memory.
DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What a loader needs to know besides the path.

    ``source`` names the spec source (it prefixes document ids); ``relpath`` is the unit's path
    relative to the source root, so ids do not change when the corpus moves on disk.
    """

    source: str
    relpath: str
    access_groups: tuple[str, ...] = ()
    metadata: dict[str, object] = field(default_factory=dict)
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    strip_boilerplate: bool = True  # the spec's cleaning.strip_boilerplate

    def doc_id(self, *parts: str) -> str:
        return ":".join((self.source, self.relpath, *parts)) if parts else f"{self.source}:{self.relpath}"


class Loader(Protocol):
    """Turns one unit into clean Documents; raises ``IngestError`` with a short reason when it cannot."""

    def __call__(self, path: Path, ctx: LoadContext) -> Iterator[Document]: ...
