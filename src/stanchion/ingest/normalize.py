"""Text normalisation every loader applies before a Document leaves it."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n(\s*\n)+")


def normalize_text(text: str) -> str:
    """NFKC-normalise, drop control and zero-width characters, collapse runs of spaces and blank lines.

    Single newlines are kept: they carry structure (list items, table rows, chat lines) that the
    chunkers use.
    """
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


_TRAILING_SPACES = re.compile(r"[ \t\u00a0]+$", re.MULTILINE)


def normalize_code(text: str) -> str:
    """Normalise a code block (``<pre>``, a fenced or indented Markdown block) keeping its layout.

    As ``normalize_text`` for characters (NFKC, control and zero-width characters dropped), but
    indentation, tabs and runs of spaces inside a line stay, since they carry the code's meaning;
    only trailing spaces and the blank lines before and after the block go.
    """
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _TRAILING_SPACES.sub("", _CONTROL.sub("", text))
    return _BLANK_LINES.sub("\n\n", text).strip("\n")
