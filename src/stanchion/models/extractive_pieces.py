"""The pieces of a source the extractive model may quote, and how each is read when scored.

A source is cut into sentences and whole code blocks (``core.sentences.quote_spans``). Each piece
keeps its paragraph, whether it is code, a list item, or a heading (a short line of its own
without a full stop, or a cross-reference such as "Example: INC-2291 (...)"), and its *reading*:
what is embedded and matched against the question. The reading adds what the piece leans on: the
heading above it, the line introducing a list item, the sentence before a code block or before a
sentence whose first words point back ("To modify it, use ..."). The quoted text is always the
piece itself, exactly as the source has it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stanchion.core.sentences import is_code_block, quote_spans

__all__ = ["LIST_ITEM", "SourcePiece", "refers_back", "source_pieces"]

# A cross-reference, not a fact: the label says so ("Example:", "See also:", "Figure 3:").
_LABEL = re.compile(
    r"^(examples?|see( also)?|notes?|figure|fig|table|source|related|references?|tip|cf)\b[\w .]{0,12}:"
    r"\s+(?P<rest>[^;]*)$",
    re.IGNORECASE,
)
_PARENTHESES = re.compile(r"\([^()]*\)")
_PROSE_WORD = re.compile(r"\b[a-z]{3,}\b")
_HEADING_WORDS = 12  # a line alone of at most this many words, without a full stop, is a heading
# A sentence that leans on the one before it.
_REFERS_BACK = re.compile(
    r"(this|that|these|those|it|its|they|their|such|the latter|the former|then|thus|so|however|"
    r"therefore|otherwise|instead|also|alternatively)\b",
    re.IGNORECASE,
)
# "To modify it, use ...", "For at tasks, it is ...": a pronoun in the first words stands for
# something in the sentence before.
_EARLY_PRONOUN = re.compile(r"^(?:[\w'-]+\W+){1,3}(it|this|these|those|they|them)\b", re.IGNORECASE)
# A bullet or numbered item.
LIST_ITEM = re.compile(r"[-*+\u2022]\s|\d{1,3}[.)]\s")


@dataclass(frozen=True, slots=True)
class SourcePiece:
    """What an answer may quote from one source: a sentence, a list item or a whole code block."""

    position: int  # index among the source's pieces
    paragraph: int  # index of its paragraph (blank-line separated block) in the source
    text: str
    reading: str  # what is scored: the text, with its section's heading, the line introducing an item or code
    code: bool
    heading: bool = False  # a heading, caption or label line: context for what follows, never an answer
    item: bool = False  # a list item


def source_pieces(text: str) -> list[SourcePiece]:
    """The pieces of one source's text an answer may quote, in order (see ``SourcePiece``)."""
    pieces: list[SourcePiece] = []
    lead_in = ""
    previous, previous_paragraph = "", -1
    section = ""  # the heading above, read with every piece under it
    paragraph, last_end = 0, 0
    for position, (a, b) in enumerate(quote_spans(text)):
        if re.search(r"\n[ \t]*\n", text[last_end:a]):
            paragraph += 1
        last_end = b
        piece = text[a:b]
        code = is_code_block(piece)
        item = not code and LIST_ITEM.match(piece) is not None
        heading = not code and not item and (_is_heading_line(text, a, b) or _is_label(piece))
        if heading:
            reading = piece
            if _is_heading_line(text, a, b):
                section = piece
        elif code:
            reading = f"{previous} {_code_reading(piece)}" if previous else _code_reading(piece)
        elif item and lead_in:
            reading = f"{lead_in} {piece}"
        elif previous and previous_paragraph == paragraph and refers_back(piece):
            reading = f"{previous} {piece}"  # quoted with it too (``select``)
        else:
            reading = piece
        if section and not heading:
            reading = f"{section}: {reading}"
        if not item and not code:
            lead_in = piece if piece.endswith(":") else ""
        previous, previous_paragraph = ("" if code or heading else piece), paragraph
        pieces.append(SourcePiece(position, paragraph, piece, reading, code, heading, item))
    return pieces


def _is_heading_line(text: str, a: int, b: int) -> bool:
    """Whether ``text[a:b]`` is a short line of its own that does not end a sentence ("Root cause",
    "BACK TO BASICS Device access permissions"); the end of a hard-wrapped line is not one."""
    start = text.rfind("\n", 0, a) + 1
    end = text.find("\n", b)
    line = text[a:b].strip()
    # A colon inside is a "Speaker: message" chat line or a "key: value" row, not a heading.
    return (
        bool(line)
        and "\n" not in line
        and text[start : len(text) if end < 0 else end].strip() == line
        and (line[0].isupper() or line[0].isdigit())
        and len(line.split()) <= _HEADING_WORDS
        and ":" not in line
        and not line.endswith((".", "!", "?", ";", ",", "\u2026", '"', "'", ")"))
        and any(c.isalpha() for c in line)
    )


def _is_label(piece: str) -> bool:
    """A cross-reference and a name, no statement: "Example: INC-2291 (Waypoint dispatch outage, ...)"."""
    match = _LABEL.match(piece.rstrip("."))
    return match is not None and len(_PROSE_WORD.findall(_PARENTHESES.sub("", match["rest"]))) < 2


def refers_back(text: str) -> bool:
    """A sentence that leans on the one before it ("This command ...", "To modify it, ...")."""
    return _REFERS_BACK.match(text) is not None or _EARLY_PRONOUN.match(text) is not None


def _code_reading(code: str) -> str:
    """What of a code block is embedded and matched: its first lines, flattened."""
    return " ".join(" ".join(code.split("\n")[:4]).split())
