"""Plain-text and Markdown loaders, plus the file checks and heading sections other loaders share.

Encoding policy: a BOM wins (UTF-8, UTF-16, UTF-32); otherwise strict UTF-8. Bytes that are not
valid UTF-8 are decoded as UTF-8 with U+FFFD replacements when the file is mostly UTF-8 (a
damaged UTF-8 file), and as Windows-1252 (Latin-1 for its five undefined bytes) when it holds no
valid multi-byte UTF-8 at all (a legacy 8-bit file). Either way the document says so in
``metadata["encoding"]`` and, for replacements, ``metadata["encoding_errors"]``, and a warning is
logged; nothing is dropped silently. Files with NUL bytes (other than BOM-less UTF-16) or many
control characters are binary and rejected.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.normalize import normalize_code, normalize_text
from stanchion.types import Document, MetaValue, Section

log = logging.getLogger(__name__)

_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# C0 controls other than tab, newline, form feed, carriage return and escape (colour codes in
# logs), plus DEL.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
_MAX_CONTROL_SHARE = 0.05

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_INDENTED_CODE = re.compile(r"^(?: {4}|\t)[ \t]*\S")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s")
_SETEXT_MD = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_ADORNMENT = re.compile(r"^([=\-~^*+#])\1{2,}[ \t]*$")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_DECODED_NON_ASCII = re.compile(r"[^\x00-\x7f\ufffd]")


def check_size(path: Path, ctx: LoadContext) -> int:
    """The file's size in bytes; ``IngestError`` when it is over ``ctx.max_file_bytes``."""
    size = path.stat().st_size
    if size > ctx.max_file_bytes:
        mb, limit = size / 1_048_576, ctx.max_file_bytes / 1_048_576
        raise IngestError(path, f"file too large ({mb:.1f} MB > limit {limit:.1f} MB)")
    return size


def decode_bytes(data: bytes, path: Path) -> tuple[str, str, int]:
    """Decode a text file: returns (text, encoding name, number of undecodable bytes replaced)."""
    if not data.strip():
        raise IngestError(path, "empty file")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = data[len(bom) :].decode(encoding, errors="replace")
            return text, encoding, text.count("\ufffd")
    if b"\x00" in data:
        utf16 = _bom_less_utf16(data)
        if utf16 is None:
            raise IngestError(path, "binary file, not text")
        text = data.decode(utf16, errors="replace")
        return text, utf16, text.count("\ufffd")
    controls = len(data) - len(data.translate(None, _CONTROL_BYTES))
    if controls > _MAX_CONTROL_SHARE * len(data):
        raise IngestError(path, "binary file, not text")
    try:
        return data.decode("utf-8"), "utf-8", 0
    except UnicodeDecodeError:
        pass
    lenient = data.decode("utf-8", errors="replace")
    bad = lenient.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    multibyte = len(_DECODED_NON_ASCII.findall(lenient))
    if multibyte > bad:
        return lenient, "utf-8", bad
    try:
        return data.decode("cp1252"), "cp1252", 0
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1", 0


def _bom_less_utf16(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when NULs sit in alternate bytes, as in ASCII-range UTF-16."""
    sample = data[:4096]
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    half = len(sample) // 2
    if odd > 0.4 * half and even < 0.05 * half:
        return "utf-16-le"
    if even > 0.4 * half and odd < 0.05 * half:
        return "utf-16-be"
    return None


def read_text(path: Path, ctx: LoadContext) -> tuple[str, dict[str, MetaValue]]:
    """Size-check and decode a file; the metadata records the encoding and any replacements."""
    check_size(path, ctx)
    text, encoding, errors = decode_bytes(path.read_bytes(), path)
    meta: dict[str, MetaValue] = {"encoding": encoding}
    if errors:
        meta["encoding_errors"] = errors
        log.warning("ingest.text.undecodable_bytes", extra={"path": str(path), "replaced": errors})
    elif encoding in ("cp1252", "latin-1"):
        log.warning("ingest.text.legacy_encoding", extra={"path": str(path), "encoding": encoding})
    return text, meta


class SectionBuilder:
    """Collects blocks under headings and turns them into Sections with a heading path."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []
        self._parts: list[tuple[tuple[str, ...], list[str]]] = [((), [])]
        self._tight_open = False

    def heading(self, level: int, title: str) -> None:
        title = normalize_text(title)
        if not title:
            return
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self._parts.append((tuple(t for _, t in self._stack), []))
        self._tight_open = False

    def block(self, text: str, *, tight: bool = False) -> None:
        """Add a paragraph; ``tight`` blocks (list items, table rows) follow each other on single lines."""
        self._add(normalize_text(text), tight=tight)

    def code(self, text: str, *, tight: bool = False) -> None:
        """Add a code block (``<pre>``, fenced or indented Markdown): its indentation and spacing stay."""
        self._add(normalize_code(text), tight=tight)

    def _add(self, text: str, *, tight: bool) -> None:
        if not text.strip():
            return
        blocks = self._parts[-1][1]
        if tight and self._tight_open and blocks:
            blocks[-1] += "\n" + text
        else:
            blocks.append(text)
        self._tight_open = tight

    def sections(self) -> list[Section]:
        # Each block is normalised as it comes (code its own way), so joining them is all that is left.
        return [
            Section(text="\n\n".join(blocks), heading_path=path) for path, blocks in self._parts if blocks
        ]

    def document_text(self) -> str:
        """The whole text, each section preceded by its own heading line (empty sections keep theirs)."""
        pieces = []
        for path, blocks in self._parts:
            if path:
                pieces.append(path[-1])
            pieces.extend(blocks)
        return "\n\n".join(pieces)


def _document(
    ctx: LoadContext, title: str, builder: SectionBuilder, meta: dict[str, MetaValue], path: Path
) -> Document:
    sections = builder.sections()
    if not sections:
        raise IngestError(path, "no text content")
    return Document(
        id=ctx.doc_id(),
        text=builder.document_text(),
        title=normalize_text(title),
        source=ctx.source,
        path=ctx.relpath,
        metadata={**ctx.metadata, **meta, "title": normalize_text(title)},
        access_groups=ctx.access_groups,
        sections=tuple(sections),
    )


def load_text(path: Path, ctx: LoadContext) -> Iterator[Document]:
    """One Document per .txt file; reST-style underlined headings ("Title" over "=====") become sections."""
    text, meta = read_text(path, ctx)
    builder = SectionBuilder()
    styles: list[str] = []  # adornment styles in order of first use: the reST rule for levels
    lines = text.splitlines()
    paragraph: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        underline = _ADORNMENT.match(nxt)
        if (
            line.strip()
            and not _ADORNMENT.match(line)
            and underline
            and len(nxt.rstrip()) >= len(line.strip())
        ):
            over = bool(paragraph) and _ADORNMENT.match(paragraph[-1]) is not None
            if over:
                paragraph.pop()
            style = ("over" if over else "") + underline.group(1)
            if style not in styles:
                styles.append(style)
            builder.block("\n".join(paragraph))
            paragraph = []
            builder.heading(styles.index(style) + 1, line)
            i += 2
            continue
        if line.strip():
            paragraph.append(line)
        else:
            builder.block("\n".join(paragraph))
            paragraph = []
        i += 1
    builder.block("\n".join(paragraph))
    title = next((ln.strip() for ln in lines if ln.strip() and not _ADORNMENT.match(ln)), "")
    if not title or len(title) > 100:
        title = path.stem
    yield _document(ctx, title, builder, meta, path)


def _front_matter(text: str) -> tuple[dict[str, MetaValue], str]:
    """Split a leading ``---`` YAML block off; text that is not a YAML mapping stays in the body."""
    if not text.startswith("---"):
        return {}, text
    match = re.match(r"---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|$)", text, re.DOTALL)
    if not match:
        return {}, text
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        # A horizontal rule followed by prose is not front matter; keep it as text.
        return {}, text
    if not isinstance(data, dict):
        return {}, text
    return {str(k): to_meta_value(v) for k, v in data.items()}, text[match.end() :]


def to_meta_value(value: Any) -> MetaValue:
    """Coerce a YAML value into something every store can hold as JSON (``.inf`` and ``.nan``, which
    no store's JSON holds, as their text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple | set):
        return [str(v) for v in value]
    return json.dumps(value, default=str, sort_keys=True)


def load_markdown(path: Path, ctx: LoadContext) -> Iterator[Document]:
    """One Document per Markdown file, one Section per heading; YAML front matter goes to metadata.

    Link and image syntax is reduced to its text (URLs are noise for retrieval); fenced code is
    kept as it is and never scanned for headings.
    """
    text, meta = read_text(path, ctx)
    front, body = _front_matter(text)
    builder = SectionBuilder()
    first_h1 = ""
    paragraph: list[str] = []
    fence = ""
    code: list[str] = []  # an indented code block being read
    in_list = False  # the last non-blank line was a list item or its indented continuation
    for line in _HTML_COMMENT.sub("", body).splitlines():
        if fence:
            paragraph.append(line)
            if line.strip().startswith(fence):
                builder.code("\n".join(paragraph))
                paragraph, fence = [], ""
            continue
        if code:
            if not line.strip() or _INDENTED_CODE.match(line):
                code.append(line)
                continue
            builder.code(_dedent(code))
            code = []
        if not paragraph and not in_list and _INDENTED_CODE.match(line):
            code = [line]  # after a blank line, outside a list: an indented code block
            continue
        if line.strip():
            in_list = bool(_LIST_ITEM.match(line)) or (in_list and line[:1] in " \t")
        opener = _FENCE.match(line)
        if opener:
            builder.block("\n".join(paragraph))
            paragraph, fence = [line], opener.group(1)[0] * 3
            continue
        atx = _ATX.match(line)
        setext = _SETEXT_MD.match(line) if paragraph and not paragraph[-1].lstrip().startswith("-") else None
        if atx or (setext and len(paragraph) == 1):
            if atx:
                level, title = len(atx.group(1)), atx.group(2)
                builder.block("\n".join(paragraph))
            else:
                assert setext is not None
                level, title = (1 if setext.group(1)[0] == "=" else 2), paragraph.pop()
            paragraph, title = [], _LINK.sub(r"\1", title)
            builder.heading(level, title)
            if level == 1 and not first_h1:
                first_h1 = title
            continue
        if line.strip():
            paragraph.append(_LINK.sub(r"\1", _IMAGE.sub(r"\1", line)))
        else:
            builder.block("\n".join(paragraph))
            paragraph = []
    if code:
        builder.code(_dedent(code))
    (builder.code if fence else builder.block)("\n".join(paragraph))
    title = str(front.get("title") or first_h1 or path.stem)
    yield _document(ctx, title, builder, {**meta, **front}, path)


def _dedent(lines: list[str]) -> str:
    """An indented Markdown code block without the four columns that mark it as code."""
    return "\n".join(line[4:] if line.startswith("    ") else line.removeprefix("\t") for line in lines)
