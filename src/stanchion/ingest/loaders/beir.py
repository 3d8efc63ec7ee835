"""BEIR corpus loader: a JSONL file of {"_id", "title", "text", "metadata"?} lines, one Document each.

A record's id is scoped to its file (``source:file:_id``, ``LoadContext.doc_id``) like every other
loader's: an ``_id`` is the file's own text, so it must never name a document of another file (an
uploaded corpus whose ``_id`` spells another upload's id would otherwise overwrite that document).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.text import to_meta_value
from stanchion.ingest.normalize import normalize_text
from stanchion.types import Document, MetaValue, unstorable

log = logging.getLogger(__name__)

# Up to this share of malformed lines is skipped (a few broken records in a scraped corpus);
# more than that means the file is not the corpus it claims to be.
MAX_BAD_SHARE = 0.01
# Give up early once this many lines are bad and the share is already over the limit.
_EARLY_ABORT = 100


class _BadLineError(ValueError):
    """A line that is not a usable BEIR record; the message says why."""


def _parse(line: bytes, seen: set[str]) -> tuple[str, str, str, dict[str, MetaValue]]:
    try:
        record: Any = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _BadLineError(f"not UTF-8 ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise _BadLineError(f"invalid JSON ({exc.msg})") from exc
    if not isinstance(record, dict):
        raise _BadLineError("not a JSON object")
    raw_id = record.get("_id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or str(raw_id).strip() == "":
        raise _BadLineError("missing or invalid _id")
    doc_id = str(raw_id).strip()
    if problem := unstorable(doc_id):
        raise _BadLineError(f"_id {problem}")
    if doc_id in seen:
        raise _BadLineError(f"duplicate _id {doc_id!r}")
    title, text = record.get("title", ""), record.get("text")
    if not isinstance(text, str) or not isinstance(title, str | None):
        raise _BadLineError("text (and title, when present) must be strings")
    extra = record.get("metadata") or {}
    if not isinstance(extra, dict):
        raise _BadLineError("metadata must be an object")
    meta = {str(k): to_meta_value(v) for k, v in extra.items()}
    return doc_id, normalize_text(title or ""), normalize_text(text), meta


def load_beir(path: Path, ctx: LoadContext) -> Iterator[Document]:
    """Stream one Document per corpus line, with id ``{source}:{file}:{_id}`` and ``metadata["beir_id"]``.

    Malformed lines (bad JSON, no ``_id``, non-string text, a repeated ``_id``) are skipped and
    counted; if more than 1% of the lines are malformed, or none is valid, ``IngestError`` names the
    first bad line. Because the file is streamed, that error can come after documents were
    yielded: the pipeline then drops those not yet committed and leaves the file unmarked, so the
    next run reads it again.
    A record with an empty text keeps its title as text so that every corpus id stays searchable.
    """
    started = time.perf_counter()
    seen: set[str] = set()
    total = bad = empty = 0
    first_bad: tuple[int, str] | None = None
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            total += 1
            try:
                doc_id, title, text, meta = _parse(raw.removeprefix(b"\xef\xbb\xbf"), seen)
            except _BadLineError as exc:
                bad += 1
                first_bad = first_bad or (number, str(exc))
                if bad >= _EARLY_ABORT and bad > MAX_BAD_SHARE * total:
                    break
                continue
            seen.add(doc_id)
            if not text and not title:
                empty += 1
                continue
            yield Document(
                id=ctx.doc_id(doc_id),
                text=text or title,
                title=title,
                source=ctx.source,
                path=ctx.relpath,
                metadata={**ctx.metadata, **meta, "beir_id": doc_id, "title": title},
                access_groups=ctx.access_groups,
            )
    if first_bad is not None and (not seen or bad > MAX_BAD_SHARE * total):
        line_no, reason = first_bad
        raise IngestError(path, f"{bad} of {total} lines malformed; first at line {line_no}: {reason}")
    if len(seen) == empty:
        raise IngestError(path, "no records with text in the corpus file")
    log.info(
        "ingest.beir.loaded",
        extra={
            "path": str(path),
            "documents": len(seen) - empty,
            "skipped_malformed": bad,
            "skipped_empty": empty,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
