"""Chunking: cut a Document into Chunks that fit the embedding model's token budget exactly.

Every strategy works on *runs*: maximal stretches of consecutive sections that share both
heading path and page. A chunk never leaves its run, so the ``heading_path`` and ``page`` in its
metadata are exact (sections under a parent heading and its child are not merged, because the
child's path would then be wrong for part of the text). A run's text is its sections' texts
joined by a blank line (by a newline for chat messages under ``structure``), and every chunk is a
slice of it, so chunk text is the document's own text, never re-joined or prefixed.

* ``recursive`` splits a run by paragraphs, then lines, sentences, words and finally tokens, only
  as far as a piece is too big, and packs the pieces greedily. Each chunk after the first in a run
  starts with up to ``overlap`` tokens copied from the end of the one before, cut at a word start
  (never inside a table row: it then starts at the next row), and the overlap counts against ``size``.
* ``semantic`` embeds the run's sentences and cuts where adjacent similarity drops below
  ``semantic_threshold`` (by default an adaptive per-document threshold, see
  ``adaptive_threshold``, mean minus one standard deviation of the document's similarities, each
  side of a gap averaged over two sentences; the sentences of one table row count as one); groups too big are split as ``recursive`` does, and
  groups under ``min_size`` join their more similar neighbour where the two fit.
* ``structure`` keeps sections whole: one chunk per section (a wiki section, a PDF page), or for
  chat-like documents (``channel`` in the document metadata, or an ``author`` on every section)
  whole messages packed up to ``size``, so a short thread is one chunk. Only a section or
  message bigger than ``size`` on its own is split, recursively.

``min_size`` is honoured where the rules allow: a small last chunk of a run takes pieces from the
one before, and small sections or groups join a neighbour in the same run. A run that is small
as a whole stays a small chunk, since merging runs would make heading paths or pages inexact.

``semantic`` and ``structure`` add overlap only inside a piece that had to be split for size:
their cuts fall on a topic or section boundary, and text from across one would blur it.

Sizes are counted from a single tokenisation of each run's text (token offsets give the count of
any slice by bisection), then checked on the finished chunk texts with one batched call. A
tokenizer whose counts are not additive over slices can fail that check; the run is then redone
with a smaller budget until it passes, so ``count(chunk.text) <= size`` holds for every tokenizer.
"""

from __future__ import annotations

import datetime as dt
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from stanchion.core.sentences import (
    Span,
    adaptive_threshold,
    adjacent_similarities,
    group_sentences,
    line_spans,
    line_start,
    sentence_spans,
    trim,
)
from stanchion.errors import EmbeddingError, IngestError
from stanchion.ingest.tables import MAX_ROW_LINE_CHARS, is_row_line
from stanchion.ingest.tokens import Tokenizer
from stanchion.types import Chunk, Document, Section, content_hash

__all__ = ["ChunkingOptions", "SentenceEmbedder", "Strategy", "chunk_document"]

Strategy = Literal["recursive", "semantic", "structure"]
SentenceEmbedder = Callable[[Sequence[str]], npt.NDArray[np.floating[Any]]]
"""Embeds texts as L2-normalised rows, e.g. ``lambda texts: embedder.embed(texts)``."""

_CHAT_KEYS = ("channel",)
# A redo shrinks the budget; this many redos without success means the tokenizer is broken.
_MAX_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    """How to cut documents. Sizes are in the embedding model's tokens."""

    strategy: Strategy = "recursive"
    size: int = 256
    overlap: int = 32
    semantic_threshold: float | None = None
    min_size: int = 32

    def __post_init__(self) -> None:
        if self.strategy not in ("recursive", "semantic", "structure"):
            raise ValueError(f"unknown chunking strategy {self.strategy!r}")
        if self.size < 1:
            raise ValueError(f"chunk size must be at least 1 token, got {self.size}")
        # Same bounds as the spec's ChunkingSpec, so any valid stanchion.yaml is accepted here.
        if not 0 <= self.overlap < self.size:
            raise ValueError(
                f"overlap must be at least 0 and smaller than size ({self.size}), got {self.overlap}"
            )
        if self.min_size < 0:
            raise ValueError(f"min_size must be at least 0, got {self.min_size}")
        if self.semantic_threshold is not None and not -1.0 <= self.semantic_threshold <= 1.0:
            raise ValueError(
                f"semantic_threshold is a cosine similarity in [-1, 1], got {self.semantic_threshold}"
            )


@dataclass(frozen=True, slots=True)
class _Run:
    """Consecutive sections with one heading path and page, joined into one text."""

    text: str
    sections: tuple[Section, ...]
    spans: tuple[Span, ...]  # where each section lies in ``text``
    heading_path: tuple[str, ...]
    page: int | None


# (run index, token budget, overlap) -> chunk spans in that run's text
RunChunker = Callable[[int, int, int], list[Span]]


def chunk_document(
    doc: Document, options: ChunkingOptions, tokenizer: Tokenizer, embed: SentenceEmbedder | None = None
) -> list[Chunk]:
    """Cut ``doc`` into chunks of at most ``options.size`` tokens, in document order.

    Raises ``ValueError`` for the semantic strategy without an embedder, and ``IngestError`` if
    the tokenizer's counts cannot be met (one that counts a slice very differently from the same
    text in context).
    """
    if options.strategy == "semantic" and embed is None:
        raise ValueError(
            "semantic chunking needs a sentence embedder: pass embed=... (for example the index "
            "embedder's embed method), or choose the 'recursive' or 'structure' strategy"
        )
    chat = _is_chat(doc)
    runs = _runs(doc, "\n" if chat and options.strategy == "structure" else "\n\n")
    if not runs:
        return []
    tokens = [_TokenSpans(tokenizer.offsets(run.text)) for run in runs]
    chunker: RunChunker
    if options.strategy == "recursive":
        chunker = _recursive(runs, tokens, options)
    elif options.strategy == "structure":
        chunker = _structure(runs, tokens, options, chat)
    else:
        assert embed is not None
        chunker = _semantic(runs, tokens, options, embed)
    chunks: list[Chunk] = []
    for run, spans in zip(runs, _fit(doc, runs, chunker, options, tokenizer), strict=True):
        for a, b in spans:
            text = run.text[a:b]
            position = len(chunks)
            chunks.append(
                Chunk(
                    id=f"{doc.id}#{position}",
                    document_id=doc.id,
                    text=text,
                    position=position,
                    metadata=_metadata(doc, run, (a, b), position, text),
                    access_groups=doc.access_groups,
                )
            )
    return chunks


def _fit(
    doc: Document, runs: list[_Run], chunker: RunChunker, options: ChunkingOptions, tokenizer: Tokenizer
) -> list[list[Span]]:
    """Chunk every run, then check the real token counts and redo any run that overshoots."""
    budgets = [options.size] * len(runs)
    result: list[list[Span]] = [[] for _ in runs]
    pending = list(range(len(runs)))
    for _ in range(_MAX_ATTEMPTS):
        for r in pending:
            spans = chunker(r, budgets[r], min(options.overlap, budgets[r] - 1))
            result[r] = [(line_start(runs[r].text, a), b) for a, b in spans]
        counts = iter(tokenizer.count_many([runs[r].text[a:b] for r in pending for a, b in result[r]]))
        over: list[int] = []
        for r in pending:
            excess = max([next(counts) - options.size for _ in result[r]], default=0)
            if excess > 0:
                budgets[r] -= excess
                over.append(r)
        if not over:
            return result
        if any(budgets[r] < 1 for r in over):
            break
        pending = over
    raise IngestError(
        doc.id,
        f"cannot fit chunks into {options.size} tokens: the tokenizer counts slices inconsistently",
    )


def _recursive(runs: list[_Run], tokens: list[_TokenSpans], options: ChunkingOptions) -> RunChunker:
    def chunk_run(r: int, size: int, overlap: int) -> list[Span]:
        text = runs[r].text
        pieces = _split_to_fit(text, (0, len(text)), size - overlap, tokens[r])
        return _pack(text, pieces, size, overlap, options.min_size, tokens[r])

    return chunk_run


def _structure(
    runs: list[_Run], tokens: list[_TokenSpans], options: ChunkingOptions, chat: bool
) -> RunChunker:
    """Whole sections: chat messages are packed up to ``size``; other sections stand alone.

    A section smaller than ``min_size`` still joins its neighbour in the run when both fit, so a
    one-line section does not become a chunk of its own.
    """

    def chunk_run(r: int, size: int, overlap: int) -> list[Span]:
        text, count = runs[r].text, tokens[r].count
        out: list[Span] = []
        current: Span | None = None
        for unit in runs[r].spans:
            n = count(*unit)
            if n > size:
                # Only a message or section too big on its own is split, with overlap inside it.
                if current is not None:
                    out.append(current)
                    current = None
                pieces = _split_to_fit(text, unit, size - overlap, tokens[r])
                out.extend(_pack(text, pieces, size, overlap, options.min_size, tokens[r]))
            elif current is None:
                current = unit
            elif (chat or min(count(*current), n) < options.min_size) and count(current[0], unit[1]) <= size:
                current = (current[0], unit[1])
            else:
                out.append(current)
                current = unit
        if current is not None:
            out.append(current)
        return out

    return chunk_run


def _semantic(
    runs: list[_Run], tokens: list[_TokenSpans], options: ChunkingOptions, embed: SentenceEmbedder
) -> RunChunker:
    """Embed every sentence of the document in one call; group per run at whatever budget is asked."""
    sentences = [_rows_whole(run.text, sentence_spans(run.text)) for run in runs]
    texts = [run.text[a:b] for run, spans in zip(runs, sentences, strict=True) for a, b in spans]
    vectors = np.asarray(embed(texts), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise EmbeddingError(
            f"the sentence embedder returned shape {vectors.shape} for {len(texts)} sentences"
        )
    sims: list[npt.NDArray[np.float32]] = []
    row = 0
    for spans in sentences:
        sims.append(adjacent_similarities(vectors[row : row + len(spans)]))
        row += len(spans)
    threshold = options.semantic_threshold
    if threshold is None:
        threshold = adaptive_threshold(np.concatenate(sims))

    def chunk_run(r: int, size: int, overlap: int) -> list[Span]:
        text = runs[r].text
        groups = group_sentences(sentences[r], sims[r], threshold, size, options.min_size, tokens[r].count)
        out: list[Span] = []
        for group in groups:
            if tokens[r].count(*group) <= size:
                out.append(group)
            else:
                pieces = _split_to_fit(text, group, size - overlap, tokens[r])
                out.extend(_pack(text, pieces, size, overlap, options.min_size, tokens[r]))
        return _merge_small(out, size, options.min_size, tokens[r])

    return chunk_run


def _rows_whole(text: str, spans: list[Span]) -> list[Span]:
    """Sentences, with those of one table row joined: a cut after "Answer: Yes." would leave the
    rest of the row without its label and column names."""
    out: list[Span] = []
    for a, b in spans:
        if out and "\n" not in text[out[-1][0] : b] and _in_row_line(text, a):
            out[-1] = (out[-1][0], b)
            continue
        out.append((a, b))
    return out


def _in_row_line(text: str, at: int) -> bool:
    """Whether ``at`` lies in a table row line. Only ``MAX_ROW_LINE_CHARS`` around ``at`` are read:
    a longer line is no row, and reading all of a long line at every cut would be quadratic."""
    low = max(0, at - MAX_ROW_LINE_CHARS - 1)
    begin = text.rfind("\n", low, at) + 1
    if begin == 0 and low > 0:
        return False
    high = min(len(text), at + MAX_ROW_LINE_CHARS + 1)
    stop = text.find("\n", at, high)
    if stop < 0:
        if high < len(text):
            return False
        stop = len(text)
    return is_row_line(text[begin:stop])  # no longer than MAX_ROW_LINE_CHARS, or no row


def _merge_small(spans: list[Span], size: int, min_size: int, tokens: _TokenSpans) -> list[Span]:
    """Join a chunk under ``min_size`` to a neighbour across a semantic cut, if the two fit.

    ``group_sentences`` already merges small groups, but only whole groups; a small group next to
    one that was split for size can still join that group's last (or first) piece.
    """
    out: list[Span] = []
    for span in spans:
        if (
            out
            and out[-1][1] <= span[0]  # a semantic cut; split pieces overlap and stay apart
            and min(tokens.count(*out[-1]), tokens.count(*span)) < min_size
            and tokens.count(out[-1][0], span[1]) <= size
        ):
            out[-1] = (out[-1][0], span[1])
        else:
            out.append(span)
    return out


class _TokenSpans:
    """Token counts for any slice of one text, from a single tokenisation.

    A slice's count is the number of tokens lying wholly inside it, found by bisection on the
    token offsets; for WordPiece and other whitespace-pre-tokenised models this equals the count
    of the slice tokenised alone, and ``_fit`` checks that it did.
    """

    __slots__ = ("ends", "starts")

    def __init__(self, offsets: Sequence[tuple[int, int]]) -> None:
        self.starts = [a for a, _ in offsets]
        self.ends = [b for _, b in offsets]

    def span(self, a: int, b: int) -> range:
        """Indices of the tokens inside ``[a, b)``."""
        return range(bisect_left(self.starts, a), bisect_right(self.ends, b))

    def count(self, a: int, b: int) -> int:
        return max(0, bisect_right(self.ends, b) - bisect_left(self.starts, a))


_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")
_WORD = re.compile(r"\S+")


def _split_to_fit(text: str, span: Span, limit: int, tokens: _TokenSpans) -> list[Span]:
    """Cut ``span`` into pieces of at most ``limit`` tokens, at the coarsest boundary that works.

    Paragraphs, then lines (wrapped prose lines count as one), then sentences, then words; a single word longer than ``limit`` (a
    hash, a URL, base64) is cut between tokens. Only pieces that are too big are cut further.
    """
    out: list[Span] = []
    stack: list[tuple[Span, int]] = [(span, 0)]
    while stack:
        (a, b), level = stack.pop()
        if tokens.count(a, b) <= limit:
            out.append((a, b))
            continue
        pieces: list[Span] = []
        while level < 4 and len(pieces) < 2:
            pieces = _pieces(text, a, b, level)
            level += 1
        if len(pieces) < 2:
            out.extend(_token_pieces(a, b, limit, tokens))
            continue
        stack.extend((piece, level) for piece in reversed(pieces))
    return out


def _pieces(text: str, a: int, b: int, level: int) -> list[Span]:
    if level == 2:
        return sentence_spans(text, a, b)
    if level == 3:
        return [m.span() for m in _WORD.finditer(text, a, b)]
    if level == 1:
        return line_spans(text, a, b)
    spans: list[Span] = []
    at = a
    for m in _PARAGRAPH.finditer(text, a, b):
        spans.append(trim(text, at, m.start()))
        at = m.end()
    spans.append(trim(text, at, b))
    return [(x, y) for x, y in spans if x < y]


def _token_pieces(a: int, b: int, limit: int, tokens: _TokenSpans) -> list[Span]:
    inside = tokens.span(a, b)
    if len(inside) <= limit:
        return [(a, b)]
    cuts = [tokens.starts[i] for i in inside[limit::limit]]
    return list(zip([a, *cuts], [*cuts, b], strict=True))


def _pack(
    text: str, pieces: list[Span], size: int, overlap: int, min_size: int, tokens: _TokenSpans
) -> list[Span]:
    """Pack pieces greedily into chunks of at most ``size`` tokens, overlap included.

    ``pieces`` each hold at most ``size - overlap`` tokens, so a piece always fits after the
    overlap. If the last chunk ends up smaller than ``min_size``, pieces move into it from the one
    before while both stay within the rules, rather than leaving a scrap.
    """
    count = tokens.count
    plan: list[tuple[int, int, int]] = []  # first piece, end piece (exclusive), chunk start
    i = 0
    while i < len(pieces):
        start = pieces[i][0]
        if plan:
            start = _overlap_start(text, (plan[-1][2], pieces[plan[-1][1] - 1][1]), overlap, tokens)
            if count(start, pieces[i][1]) > size:  # only if counts are not additive; _fit checks
                start = pieces[i][0]
        j = i + 1
        while j < len(pieces) and count(start, pieces[j][1]) <= size:
            j += 1
        plan.append((i, j, start))
        i = j
    if len(plan) > 1 and count(pieces[plan[-1][0]][0], pieces[-1][1]) < min_size:
        first, middle, start = plan[-2]
        end = pieces[-1][1]
        for m in range(middle - 1, first, -1):
            if count(pieces[first][0], pieces[m - 1][1]) < min_size:
                break
            moved = _overlap_start(text, (start, pieces[m - 1][1]), overlap, tokens)
            if count(moved, end) > size:
                break
            plan[-2:] = [(first, m, start), (m, len(pieces), moved)]
            if count(pieces[m][0], end) >= min_size:
                break
    return [(start, pieces[j - 1][1]) for _, j, start in plan]


def _overlap_start(text: str, previous: Span, overlap: int, tokens: _TokenSpans) -> int:
    """Where the chunk after ``previous`` starts: up to ``overlap`` tokens back into it.

    The cut is at the first token within the allowance that starts a word, so the overlap never
    begins mid-word; with no such token (one giant word), the next chunk starts after it.
    """
    after = _trim_start(text, previous[1])
    inside = tokens.span(*previous)
    for k in inside[max(0, len(inside) - overlap) :] if overlap > 0 else ():
        at = tokens.starts[k]
        if at == previous[0] or text[at - 1].isspace():
            return _past_row_tail(text, at, previous[1], after)
    return after


def _past_row_tail(text: str, at: int, end: int, after: int) -> int:
    """``at``, or the next line when ``at`` falls inside a table row: a row's tail without its
    label and column names (``ingest/tables.py``) would be a chunk's misleading first line."""
    if at == 0 or text[at - 1] == "\n" or not _in_row_line(text, at):
        return at
    stop = text.find("\n", at)
    return _trim_start(text, stop) if 0 <= stop < end else after


def _trim_start(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _is_chat(doc: Document) -> bool:
    """A thread or channel export: the document says so, or every section names an author."""
    if any(key in doc.metadata for key in _CHAT_KEYS):
        return True
    return bool(doc.sections) and all("author" in s.metadata for s in doc.sections)


def _runs(doc: Document, joiner: str) -> list[_Run]:
    runs: list[_Run] = []
    group: list[Section] = []

    def flush() -> None:
        if not group:
            return
        parts: list[str] = []
        spans: list[Span] = []
        at = 0
        for section in group:
            text = _LEADING_BLANK_LINES.sub("", section.text.rstrip())  # a code block's indentation stays
            if parts:
                at += len(joiner)
            parts.append(text)
            spans.append((at, at + len(text)))
            at += len(text)
        runs.append(
            _Run(joiner.join(parts), tuple(group), tuple(spans), group[0].heading_path, group[0].page)
        )
        group.clear()

    for section in doc.parts:
        if not section.text.strip():
            continue
        if group and (section.heading_path, section.page) != (group[0].heading_path, group[0].page):
            flush()
        group.append(section)
    flush()
    return runs


def _metadata(doc: Document, run: _Run, span: Span, position: int, text: str) -> dict[str, Any]:
    """Document metadata, then what the chunk's sections agree on, then the chunker's own keys."""
    a, b = span
    sections = [s for s, (x, y) in zip(run.sections, run.spans, strict=True) if x < b and y > a]
    meta: dict[str, Any] = {str(k): _jsonable(v) for k, v in doc.metadata.items()}
    shared = {str(k): _jsonable(v) for k, v in sections[0].metadata.items()}
    for section in sections[1:]:
        for key in list(shared):
            if key not in section.metadata or _jsonable(section.metadata[key]) != shared[key]:
                del shared[key]
    meta.update(shared)
    authors = [str(s.metadata["author"]) for s in sections if "author" in s.metadata]
    if len(sections) > 1 and authors:
        meta["authors"] = list(dict.fromkeys(authors))
    # A chunk's time range is that of its own messages: the first one's time to the last one's.
    # One section's creation time alone says nothing about updates, so it leaves updated_at be.
    first = _timestamp(sections[0], "created_at", "ts")
    last = _timestamp(sections[-1], "updated_at", "ts", *(("created_at",) if len(sections) > 1 else ()))
    if first is not None:
        meta["created_at"] = first
    if last is not None:
        meta["updated_at"] = last
    meta.update(
        source=doc.source,
        document_id=doc.id,
        title=doc.title,
        path=doc.path,
        heading_path=list(run.heading_path),
        page=run.page,
        position=position,
        content_hash=content_hash(text),
    )
    return meta


def _timestamp(section: Section, *keys: str) -> Any:
    for key in keys:
        if section.metadata.get(key) is not None:
            return _jsonable(section.metadata[key])
    return None


def _jsonable(value: Any) -> Any:
    """Metadata must survive a JSON round trip in every store backend."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=str)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
