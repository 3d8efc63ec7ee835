"""PII in a source's documents at ingestion (``sources[].pii: mask | drop``).

- ``mask``: every value found is replaced by its type, ``<EMAIL_ADDRESS>``, before the document is
  chunked: in its text, its sections, its title, heading paths and the string values of its
  metadata (mail headers, message authors). So the chunk text, the keyword terms, the title and
  the vectors are all computed from masked text, and nothing of a value is stored. Not
  reversible, on purpose (the request-time masking is the reversible one).
- ``drop``: chunks whose text holds any value are left out of the index; the title, headings and
  metadata are masked as above (they are on every chunk, and a mail header alone would otherwise
  drop a whole mailbox).

Fail closed: detection errors raise ``GuardError``, and the pipeline fails that document (its
indexed version, if any, stays; the file is read again next run). Paths and ids are kept as they
are: they name files, and the store tracks files by them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from stanchion.guards.pii import PiiDetector, PiiSpan
from stanchion.types import TENANT_KEY, Chunk, Document, Section

__all__ = ["DETECT_CHARS", "IngestPii", "mask_text"]

DETECT_CHARS = 20_000  # text is checked in pieces of at most this size, cut at line ends
_SEPARATOR = "\n\n\n"  # between the strings checked in one detector call
_KEEP_KEYS = frozenset({TENANT_KEY, "_fingerprint"})  # stamped by the pipeline, never PII


def mask_text(text: str, spans: Sequence[PiiSpan]) -> str:
    """``text`` with every span replaced by its type in angle brackets."""
    out, end = [], 0
    for span in sorted(spans, key=lambda s: s.start):
        if span.start < end:
            continue
        out.append(text[end : span.start])
        out.append(f"<{span.entity}>")
        end = span.end
    out.append(text[end:])
    return "".join(out)


class IngestPii:
    """Masks or drops PII in documents and chunks of one source; see the module docstring.
    ``keep_metadata``: keys whose values are the spec's own (the source's ``metadata:``)."""

    def __init__(
        self,
        action: Literal["mask", "drop"],
        detector: PiiDetector,
        *,
        keep_metadata: Mapping[str, object] | None = None,
    ) -> None:
        self.action = action
        self.detector = detector
        self._spec_metadata = dict(keep_metadata or {})

    def document(self, doc: Document) -> tuple[Document, int]:
        """The document as it may be indexed, and how many values were masked in it. Every string
        to check (sections, title, headings, metadata) goes to the detector in as few calls as
        fit ``DETECT_CHARS``: one call per short string would cost its fixed overhead each."""
        wanted: dict[str, None] = {}

        def note(value: str) -> str:
            wanted[value] = None
            return value

        self._rebuild(doc, note)
        found = self._detect_many(list(wanted))
        masked = self._rebuild(
            doc, lambda value: mask_text(value, found[value]) if found.get(value) else value
        )
        return masked, sum(len(spans) for spans in found.values())

    def chunks(self, chunks: Sequence[Chunk]) -> tuple[list[Chunk], int]:
        """``drop``: the chunks whose text holds no PII, and how many were left out. ``mask``:
        the chunks as they are (their document was masked before chunking)."""
        if self.action != "drop":
            return list(chunks), 0
        found = self._detect_many([c.text for c in chunks])
        kept = [c for c in chunks if not found.get(c.text)]
        return kept, len(chunks) - len(kept)

    def _rebuild(self, doc: Document, each: Callable[[str], str]) -> Document:
        """``doc`` with ``each`` applied to every string that may hold PII."""

        def one(value: str) -> str:
            return each(value) if value.strip() else value

        sections = tuple(
            replace(
                s,
                text=one(s.text) if self.action == "mask" else s.text,
                heading_path=tuple(one(h) for h in s.heading_path),
                metadata=self._metadata(s.metadata, one),
            )
            for s in doc.sections
        )
        text = doc.text
        if self.action == "mask" and not doc.sections:
            text = one(doc.text)
        elif self.action == "mask":
            # The chunks come from the sections; the whole text only feeds the document's hash and
            # the deduplicator, so the values found there are replaced in it.
            text = _replace_values(doc.text, doc.sections, sections)
        return replace(
            doc,
            text=text,
            title=one(doc.title),
            metadata=self._metadata(doc.metadata, one),
            sections=sections,
        )

    def _metadata(self, metadata: Mapping[str, Any], each: Callable[[str], str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in metadata.items():
            if key in _KEEP_KEYS or (key in self._spec_metadata and self._spec_metadata[key] == value):
                out[key] = value
            else:
                out[key] = _each_string(value, each)
        return out

    def _detect_many(self, texts: Sequence[str]) -> dict[str, list[PiiSpan]]:
        """The spans of each distinct text. Texts are joined (``_SEPARATOR`` between them) into
        pieces of at most ``DETECT_CHARS``; a span that runs across a separator sends the texts
        it touches to the detector alone."""
        found: dict[str, list[PiiSpan]] = {t: [] for t in texts}
        batch: list[str] = []

        def flush() -> None:
            if not batch:
                return
            starts, at = [], 0
            for text in batch:
                starts.append(at)
                at += len(text) + len(_SEPARATOR)
            alone: set[int] = set()
            for span in self.detector.detect(_SEPARATOR.join(batch)):
                i = bisect_right(starts, span.start) - 1
                if span.end > starts[i] + len(batch[i]):  # across a separator
                    alone.update(range(i, bisect_right(starts, span.end - 1)))
                    continue
                offset = starts[i]
                found[batch[i]].append(
                    PiiSpan(span.start - offset, span.end - offset, span.entity, span.score, span.text)
                )
            for i in sorted(alone):
                found[batch[i]] = self._detect(batch[i])
            batch.clear()

        size = 0
        for text in found:
            if not text.strip():
                continue
            if len(text) > DETECT_CHARS:
                found[text] = self._detect(text)
                continue
            if size + len(text) > DETECT_CHARS:
                flush()
                size = 0
            batch.append(text)
            size += len(text) + len(_SEPARATOR)
        flush()
        return found

    def _detect(self, text: str) -> list[PiiSpan]:
        found: list[PiiSpan] = []
        for offset, piece in _pieces(text):
            found += [
                PiiSpan(s.start + offset, s.end + offset, s.entity, s.score, s.text)
                for s in self.detector.detect(piece)
            ]
        return found


def _each_string(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value) if value.strip() else value
    if isinstance(value, list | tuple):
        return [_each_string(v, mask) for v in value]
    if isinstance(value, Mapping):
        return {k: _each_string(v, mask) for k, v in value.items()}
    return value


def _pieces(text: str) -> Iterable[tuple[int, str]]:
    """``(offset, piece)`` of ``text`` in pieces of at most ``DETECT_CHARS``, cut after a line end
    (or a space) where one is near, so a value is rarely cut in two."""
    start = 0
    while len(text) - start > DETECT_CHARS:
        limit = start + DETECT_CHARS
        cut = max(text.rfind("\n", start, limit), text.rfind(" ", start + DETECT_CHARS // 2, limit))
        end = cut + 1 if cut > start else limit
        yield start, text[start:end]
        start = end
    yield start, text[start:]


def _replace_values(text: str, before: Sequence[Section], after: Sequence[Section]) -> str:
    """``text`` with each section's text replaced by its masked version where it occurs whole."""
    for old, new in zip(before, after, strict=True):
        if old.text != new.text and old.text:
            text = text.replace(old.text, new.text)
    return text
