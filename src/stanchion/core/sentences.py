"""Sentences: a regex splitter, and the grouping of sentences by meaning for semantic chunking.

The splitter needs no model and no download, and returns character spans, so chunks built from
sentences stay exact slices of the text. Its rules:

* A blank line always ends a sentence.
* A single newline ends one too (lists, chat lines, table rows, CSV rows, lines of code: either
  line indented), unless it looks like wrapped prose: the line before does not end in ``.!?:;``, the next line does not start a list item,
  table row, heading or ``Speaker:`` line, and it starts in lower case (PDF text) or the line
  before was filled to the wrap width (hard-wrapped mail: "up to\n$5,000").
* Inside a line, ``.``, ``!``, ``?``, ``…`` (optionally followed by closing quotes or brackets)
  and whitespace end a sentence, except after an abbreviation (``Dr.``, ``e.g.``, ``U.S.``,
  ``Fig.``, a single initial) or a list number at the start of a line. Before a lower-case
  letter they end one only after a plain word of four or more letters (``endpoints. kube-proxy``
  splits, ``approx. three`` and ``wait... then`` do not). Periods inside tokens (``3.50``,
  ``example.com``) are never boundaries because no whitespace follows them.
* CJK full stops (``。！？``) end a sentence without needing whitespace.

``quote_spans`` is what an answer quotes or cites as one piece: sentences, except that a code
block (a fenced block, or with ``indented_code`` a paragraph with an indented line or a shell
prompt ``$ `` / ``# ``) is one piece from its first line to its last, never cut at a full stop or
a line break inside it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "adaptive_threshold",
    "adjacent_similarities",
    "group_sentences",
    "is_code_block",
    "line_spans",
    "line_start",
    "quote_spans",
    "sentence_spans",
    "split_sentences",
    "trim",
]

Span = tuple[int, int]

# Lower-case, without the final period. Words that often end a sentence ("etc.", "Inc.") are
# left out: reading them as abbreviations would glue many real sentences together.
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "rev", "gen", "gov", "sen", "rep",
        "capt", "col", "lt", "sgt", "hon", "e.g", "i.e", "cf", "viz", "vs", "approx", "ca", "fig",
        "figs", "eq", "eqs", "pp", "al", "ref", "refs", "dept", "est", "ave", "blvd", "jan", "feb",
        "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "ph.d", "a.m", "p.m",
        "u.s", "u.k", "e.u", "resp", "incl", "esp", "corp", "univ", "govt", "intl", "natl", "assn",
        "abbr", "ibid",
    }
)  # fmt: skip
# Abbreviations only before a number ("No. 5", "5 min. 30 s"): "the answer is no. Then" and
# "wait a sec. Then" end sentences, in chat especially.
_NUMBERED = frozenset({"no", "nos", "vol", "vols", "ch", "sec", "min", "max"})
_DOTTED_INITIALS = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")
_LIST_NUMBER = re.compile(r"\d{1,3}|[ivxlcdm]{1,5}|[a-z]", re.IGNORECASE)
_BOUNDARY = re.compile(r"(?:[.!?]+|\u2026+)[\"'\u201d\u2019)\]]*(\s+)(?=\S)|[\u3002\uff01\uff1f]+(\s*)(?=\S)")
_LINE_BREAK = re.compile(r"[ \t]*\n\s*")
_PLAIN_WORD = re.compile(r"[^\W\d_]{4,}")
_OPENERS = "\"'\u201c\u2018([{"
_CONTINUES_BEFORE = ".!?:;\u2026\u3002\uff01\uff1f"


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped, in order."""
    return [text[a:b] for a, b in sentence_spans(text)]


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Character spans ``(a, b)`` of the sentences in ``text[start:end]``, trimmed of whitespace.

    Every non-whitespace character of the range lies in exactly one span, so a chunker that packs
    the spans loses no text.
    """
    end = len(text) if end is None else end
    spans: list[Span] = []
    for line_a, line_b in line_spans(text, start, end):
        spans.extend(_split_block(text, line_a, line_b))
    return spans


_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# A shell prompt and a command: "$ ls -l", "# apt install foo" (not "# Heading" in Markdown: the
# command word is lower case and something follows it).
_PROMPT_LINE = re.compile(r"^[$#] [a-z][\w.+-]*(?: |$)")


def quote_spans(
    text: str, start: int = 0, end: int | None = None, *, indented_code: bool = True
) -> list[Span]:
    """Spans of ``text[start:end]`` to quote whole: its sentences, with each code block one span.

    A fenced block (```` ``` ```` or ``~~~`` to the closing fence, blank lines and all) is always
    one span. With ``indented_code`` (source text, whose loaders strip prose lines), so is a
    paragraph where ``is_code_block`` holds; an answer's text passes False, since a model's nested
    list is indented too.
    """
    end = len(text) if end is None else end
    spans: list[Span] = []
    at = start
    for a, b in _fenced_blocks(text, start, end):
        spans.extend(_paragraph_quotes(text, at, a, indented_code))
        spans.append(trim(text, a, b))
        at = b
    spans.extend(_paragraph_quotes(text, at, end, indented_code))
    return [span for span in spans if span[0] < span[1]]


def is_code_block(block: str) -> bool:
    """Whether a paragraph is code: a fenced block, a line of it indented (after the first), or
    lines that start with a shell prompt."""
    lines = [line for line in block.strip("\n").split("\n") if line.strip()]
    if not lines:
        return False
    if _FENCE.match(lines[0]):
        return True
    if any(line[0] in " \t" for line in lines[1:]):
        return True
    return _PROMPT_LINE.match(lines[0].lstrip()) is not None


def _fenced_blocks(text: str, start: int, end: int) -> list[Span]:
    """``(a, b)`` of each fenced block, from its opening fence's line to its closing fence's line
    (or ``end``, if it is not closed)."""
    blocks: list[Span] = []
    at = start
    while True:
        opening = _FENCE.search(text, at, end)
        if opening is None:
            return blocks
        line_end = _line_end(text, opening.end(), end)
        closing = re.compile(rf"^[ \t]*{re.escape(opening.group(1))}", re.MULTILINE).search(
            text, line_end, end
        )
        b = end if closing is None else _line_end(text, closing.end(), end)
        blocks.append((line_start(text, opening.start()), b))
        at = b


def _paragraph_quotes(text: str, a: int, b: int, indented_code: bool) -> list[Span]:
    if not indented_code:
        return sentence_spans(text, a, b)
    spans: list[Span] = []
    at = a
    for m in [*_PARAGRAPH_BREAK.finditer(text, a, b), None]:
        p_end = b if m is None else m.start()
        p_a, p_b = trim(text, at, p_end)
        if p_a < p_b:
            if is_code_block(text[p_a:p_b]):
                spans.append((line_start(text, p_a), p_b))
            else:
                spans.extend(sentence_spans(text, p_a, p_b))
        if m is not None:
            at = m.end()
    return spans


def line_spans(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Spans of the lines of ``text[start:end]``, a wrapped prose line joined to the one before."""
    end = len(text) if end is None else end
    blocks: list[Span] = []
    a = start
    for m in _LINE_BREAK.finditer(text, start, end):
        prev = text[a : m.start()].rstrip()
        nxt = text[m.end() : m.end() + 1]
        blank = text.count("\n", m.start(), m.end()) > 1
        # Normalised prose never starts a line with spaces: an indented line is code, never wrapped.
        indented = (
            not m.group().endswith("\n") or text[max(start, text.rfind("\n", start, m.start()) + 1)] in " \t"
        )
        wrapped = not indented and _is_wrapped(prev, text[m.end() : _line_end(text, m.end(), end)], nxt)
        if blank or not wrapped:
            blocks.append((a, m.start()))
            a = m.end()
    blocks.append((a, end))
    return [span for span in (trim(text, a, b) for a, b in blocks) if span[0] < span[1]]


# A line that starts a list item, a table row, a heading or a "Speaker: ..." chat line.
_STRUCTURAL = re.compile(r"^(?:[-*+\u2022>#|]|\d{1,3}[.)]\s|[\w][\w .'-]{0,30}:\s)|\s\|\s")
# Hard-wrapped mail and plain text fill lines to ~72 columns; a shorter line ends on purpose.
_WRAP_WIDTH = 50


def _line_end(text: str, start: int, end: int) -> int:
    newline = text.find("\n", start, end)
    return end if newline < 0 else newline


def _is_wrapped(prev: str, line: str, nxt: str) -> bool:
    """Whether ``line`` continues the sentence of ``prev`` (hard-wrapped prose, PDF text)."""
    if not prev or prev[-1] in _CONTINUES_BEFORE:
        return False
    if _STRUCTURAL.search(line):  # a new item starts here; a wrapped item's own tail still joins
        return False
    fields = _fields(prev)
    if fields >= 2 and fields == _fields(line):
        return False  # rows of a CSV or TSV table, however long
    # Lower case after an unfinished line is always a continuation; anything else (a name, "$5,000")
    # only when the line before was filled to the wrap width.
    return nxt.islower() or len(prev.lstrip()) >= _WRAP_WIDTH


# A field separator of delimited data: a tab, or a comma or semicolon with no space after it (prose
# puts one there; "1,480" has a single one).
_FIELD_SEPARATOR = re.compile(r"\t|[,;](?! )")


def _fields(line: str) -> int:
    return len(_FIELD_SEPARATOR.findall(line))


def _split_block(text: str, a: int, b: int) -> list[Span]:
    spans: list[Span] = []
    sentence_start = a
    for m in _BOUNDARY.finditer(text, a, b):
        cjk = m.group(1) is None
        gap_start = m.start(2) if cjk else m.start(1)
        nxt = text[m.end()]
        if not cjk and _continues(text, sentence_start, m.start(), nxt):
            continue
        spans.append((sentence_start, gap_start))
        sentence_start = m.end()
    spans.append((sentence_start, b))
    return [span for span in (trim(text, x, y) for x, y in spans) if span[0] < span[1]]


def _continues(text: str, sentence_start: int, punct_at: int, nxt: str) -> bool:
    """Whether the punctuation at ``punct_at`` sits inside a sentence rather than ending it."""
    word_start = punct_at
    while word_start > sentence_start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:punct_at].lstrip(_OPENERS)
    if text[punct_at] == "." and not text.startswith("..", punct_at) and word:
        lower = word.lower()
        if lower in _ABBREVIATIONS or _DOTTED_INITIALS.fullmatch(word):
            return True
        if lower in _NUMBERED and nxt.isdigit():
            return True
        # "1. Install" / "iv. Results" at the start of a line is an enumerator, not a sentence.
        if word_start == sentence_start and _LIST_NUMBER.fullmatch(word):
            return True
    if nxt.islower():
        # A lower-case start usually means the sentence goes on ("approx. three", "Wait... then"),
        # but technical prose starts sentences with identifiers ("... endpoints. kube-proxy"):
        # after a plain word of four or more letters, which is no abbreviation, it is a new one.
        return (
            text[punct_at] == "\u2026" or text.startswith("..", punct_at) or not _PLAIN_WORD.fullmatch(word)
        )
    return False


def line_start(text: str, at: int) -> int:
    """``at`` moved back over the spaces and tabs before it when nothing else precedes it on its
    line: a span that starts a line of code then keeps that line's indentation."""
    start = at
    while start > 0 and text[start - 1] in " \t":
        start -= 1
    return start if start == 0 or text[start - 1] == "\n" else at


def trim(text: str, a: int, b: int) -> Span:
    """``[a, b)`` without leading and trailing whitespace."""
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def adjacent_similarities(vectors: npt.NDArray[np.float32], window: int = 2) -> npt.NDArray[np.float32]:
    """Cosine similarity across each gap between consecutive sentences (``len(vectors) - 1`` values).

    Each side of a gap is the mean of up to ``window`` sentences, which smooths over one short
    or off-beat sentence ("See below.") that would otherwise look like a topic change.
    """
    n = len(vectors)
    if n < 2:
        return np.zeros(0, dtype=np.float32)
    sums = np.concatenate([np.zeros((1, vectors.shape[1]), dtype=np.float32), np.cumsum(vectors, axis=0)])
    gaps = np.arange(1, n)
    left = sums[gaps] - sums[np.maximum(gaps - window, 0)]
    right = sums[np.minimum(gaps + window, n)] - sums[gaps]
    left /= np.maximum(np.linalg.norm(left, axis=1, keepdims=True), 1e-12)
    right /= np.maximum(np.linalg.norm(right, axis=1, keepdims=True), 1e-12)
    return np.asarray(np.sum(left * right, axis=1), dtype=np.float32)


def adaptive_threshold(similarities: npt.NDArray[np.float32]) -> float:
    """One standard deviation below the mean of a document's gap similarities.

    Levels differ a lot between documents (0.6 is typical inside a SciFact abstract, much lower
    in a chat thread), so a fixed cut-off either never fires or fires everywhere. A fixed
    percentile cuts a fixed share of gaps even in a one-topic document; a z-score cuts only
    gaps that stand out, and with fewer than three gaps it never cuts (a strict ``<`` against
    the lowest value).
    """
    if len(similarities) == 0:
        return -1.0
    return float(np.mean(similarities) - np.std(similarities))


def group_sentences(
    spans: Sequence[Span],
    similarities: npt.NDArray[np.float32],
    threshold: float,
    size: int,
    min_size: int,
    count: Callable[[int, int], int],
) -> list[Span]:
    """Group consecutive sentences, cutting where the similarity across a gap is below ``threshold``.

    A group under ``min_size`` tokens then joins whichever neighbour it is more similar to, if
    the two fit in ``size``. Groups over ``size`` are left for the caller to split.
    """
    if not spans:
        return []
    cuts = [i + 1 for i, sim in enumerate(similarities) if sim < threshold]
    groups = list(zip([0, *cuts], [*cuts, len(spans)], strict=True))  # sentence index ranges

    def tokens(first: int, end: int) -> int:
        return count(spans[first][0], spans[end - 1][1])

    merged = True
    while merged:
        merged = False
        k = 0
        while k < len(groups):
            first, end = groups[k]
            if len(groups) > 1 and tokens(first, end) < min_size:
                # (similarity across the gap, neighbour index) for neighbours that still fit
                options = [
                    (float(similarities[gap]), other)
                    for other, gap in ((k - 1, first - 1), (k + 1, end - 1))
                    if 0 <= other < len(groups)
                    and tokens(min(first, groups[other][0]), max(end, groups[other][1])) <= size
                ]
                if options:
                    other = max(options)[1]
                    lo, hi = min(k, other), max(k, other)
                    groups[lo : hi + 1] = [(groups[lo][0], groups[hi][1])]
                    merged = True
                    k = lo
            k += 1
    return [(spans[first][0], spans[end - 1][1]) for first, end in groups]
