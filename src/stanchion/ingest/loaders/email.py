"""RFC 822 mail (a single message file, or an mbox of many) -> one Document per message.

The body is the text/plain part (HTML converted to text when there is none), with quoted replies
and the signature removed, because they repeat other messages and add noise to retrieval. Text
attachments are kept as extra sections. Charsets are decoded leniently: old mail routinely
mislabels them, and a readable approximation beats a failed file.
"""

from __future__ import annotations

import codecs
import email
import itertools
import logging
import re
import warnings
from collections.abc import Iterator
from datetime import UTC
from email import policy
from email.errors import MessageError
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, XMLParsedAsHTMLWarning
from bs4.element import NavigableString

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.normalize import normalize_text
from stanchion.ingest.tables import table_as_text, table_delimiter
from stanchion.types import Document, Section

log = logging.getLogger(__name__)

# At least one of these must be present for bytes to count as a mail rather than text with a colon.
_MAIL_HEADERS = ("from", "subject", "message-id", "received", "return-path", "mime-version", "delivered-to")
# Labels that mail in the wild uses for a different, usually wider, charset.
_CHARSET_SIBLINGS: dict[str, tuple[str, ...]] = {
    "iso2022_jp": ("euc_jp", "cp932", "iso2022_jp_ext"),
    "euc_jp": ("cp932",),
    "shift_jis": ("cp932",),
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "big5": ("big5hkscs", "cp950"),
    "euc_kr": ("cp949",),
    "ks_c_5601-1987": ("cp949",),
}
# Browsers read "iso-8859-1" and "us-ascii" as windows-1252 (WHATWG); so does mail software.
_WINDOWS_1252_ALIASES = frozenset({"latin_1", "ascii"})
_MBOX_FROM = re.compile(rb"^From \S", re.MULTILINE)
_MBOX_ESCAPED = re.compile(rb"^>(>*From )", re.MULTILINE)
_BOUNDARY_LINE = re.compile(r"^--\S+[ \t]*$", re.MULTILINE)
_BLANKISH_LINE = re.compile(r"^[ \t]+$", re.MULTILINE)
_HTML_SPACE = re.compile(r"\s+")
_BLOCK_TAGS = [
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "footer", "form", "h1",
    "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "table", "tr", "ul",
]  # fmt: skip
_PREAMBLE = re.compile(r"^\s*This is a multi-?part message in MIME format\.?\s*$", re.IGNORECASE)
_QUOTED = re.compile(r"^\s*(>|[A-Za-z][\w.-]{0,15}> )")  # "> " and supercite "name> "
_ATTRIBUTION = re.compile(
    r"^\s*(On|Am|Le|El|Il|Op) .*(wrote|schrieb|a écrit|escribió|ha scritto|schreef)\s*:\s*$", re.IGNORECASE
)
_ORIGINAL = re.compile(
    r"^\s*-{2,}\s*(Original Message|Ursprüngliche Nachricht|Message d'origine)\s*-{2,}", re.I
)
_HEADER_BLOCK = re.compile(r"^\s*(From|Von|De):\s*\S")
_HEADER_NEXT = re.compile(r"^\s*(Sent|Date|To|Subject|Gesendet|An|Betreff|Envoyé|À|Objet):\s")
_FORWARD = re.compile(r"forward|weitergeleitet|transféré", re.I)
# A bare "--" (no trailing space) is a signature only this close to the end.
_BARE_SIGNATURE_MAX_LINES = 15


def _codec(label: str | None) -> str | None:
    try:
        return codecs.lookup(label).name if label else None
    except LookupError:
        return None


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset, its common stand-ins, then UTF-8; never raise."""
    declared = _codec(charset)
    candidates: list[str] = []
    if declared in _WINDOWS_1252_ALIASES:
        candidates.append("cp1252")
    if declared:
        candidates += [declared, *_CHARSET_SIBLINGS.get(declared, ())]
    candidates += ["utf-8", "cp1252"]
    for name in candidates:
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            continue
    return data.decode(declared or "latin-1", errors="replace")


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body: one line per block element, quoted-reply blocks removed."""
    with warnings.catch_warnings():
        # Short bodies that look like a URL, or XHTML, make bs4 warn; both parse fine as HTML.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(markup, "lxml")
    for tag in soup(["script", "style", "head", "noscript", "template"]):
        tag.decompose()
    for tag in soup.select('blockquote[type="cite"], .gmail_quote, .moz-cite-prefix'):
        tag.decompose()
    # Source line breaks are not text breaks in HTML (except in <pre>); block elements are.
    for node in soup.find_all(string=True):
        if type(node) is NavigableString and node.find_parent("pre") is None:
            node.replace_with(_HTML_SPACE.sub(" ", node))
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_after("\n")
    for tag in soup.find_all(["td", "th"]):
        tag.insert_after(" ")
    return soup.get_text()


def strip_reply(text: str) -> str:
    """Remove quoted replies ("> " lines, "On ... wrote:", forwarded-header blocks) and the signature."""
    lines = text.split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        following = [x for x in lines[i + 1 : i + 4] if x.strip()]
        if _ORIGINAL.match(line):
            break
        if _ATTRIBUTION.match(line):
            # Bottom-posted replies follow "> " quotes, which are dropped line by line below;
            # an attribution followed by unmarked text is a top-posted reply: the rest is quote.
            if following and _QUOTED.match(following[0]):
                continue
            break
        if _HEADER_BLOCK.match(line) and any(_HEADER_NEXT.match(x) for x in following):
            above = [x for x in kept[-3:] if x.strip()]
            if not any(_FORWARD.search(x) for x in above):
                break
        if not _QUOTED.match(line):
            kept.append(line)
    for i, line in enumerate(kept):
        bare = line.rstrip("\r") == "--" and len(kept) - i - 1 <= _BARE_SIGNATURE_MAX_LINES
        if line.rstrip("\r") == "-- " or bare:
            kept = kept[:i]
            break
    return "\n".join(kept)


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    text = decode_bytes(payload, part.get_content_charset())
    return html_to_text(text) if part.get_content_subtype() == "html" else text


def _is_attachment(part: Message) -> bool:
    return part.get_filename() is not None or part.get_content_disposition() == "attachment"


def _body_and_attachments(part: Message, attachments: list[tuple[str, str]], depth: int = 0) -> str:
    """The readable body of a MIME tree; text attachments are appended to ``attachments``."""
    if depth > 20:  # hostile nesting
        return ""
    maintype, subtype = part.get_content_maintype(), part.get_content_subtype()
    if part.is_multipart():
        children = [c for c in part.get_payload() if isinstance(c, Message)]
        if subtype == "alternative":
            # Prefer plain text, then HTML, then whatever nested alternative has text.
            ranked = sorted(children, key=lambda c: {"plain": 0, "html": 1}.get(c.get_content_subtype(), 2))
            for child in ranked:
                body = _body_and_attachments(child, attachments, depth + 1)
                if body.strip():
                    return body
            return ""
        bodies = (_body_and_attachments(c, attachments, depth + 1) for c in children)
        return "\n\n".join(b for b in bodies if b.strip())
    if maintype == "message":
        inner = part.get_payload()
        nested = inner[0] if isinstance(inner, list) and inner else None
        return _body_and_attachments(nested, attachments, depth + 1) if isinstance(nested, Message) else ""
    if maintype == "multipart":
        return _recover_multipart(part, attachments, depth)
    if maintype != "text":
        return ""
    if _is_attachment(part):
        text = _part_text(part)
        if text.strip():
            name = _undo_surrogates(part.get_filename() or "attachment", part.get_content_charset())
            delimiter = table_delimiter(name, part.get_content_type())
            table = table_as_text(text, delimiter) if delimiter else None
            attachments.append((name, table or text))  # a spreadsheet's rows, each naming its columns
        return ""
    return _part_text(part)


def _recover_multipart(part: Message, attachments: list[tuple[str, str]], depth: int) -> str:
    """Parts of a multipart whose declared boundary never matches (spam does this on purpose).

    The parser then hands back one opaque string; splitting it on boundary-like lines and parsing
    each piece as a part of its own recovers the text.
    """
    payload = part.get_payload()
    if not isinstance(payload, str):
        return ""
    bodies = []
    for chunk in _BOUNDARY_LINE.split(payload):
        # A whitespace-only line is meant as the header/body separator; make it one.
        chunk = _BLANKISH_LINE.sub("", chunk.strip("\n"))
        sub = email.message_from_string(chunk, policy=policy.default)
        if sub.keys():
            bodies.append(_body_and_attachments(sub, attachments, depth + 1))
        elif not _PREAMBLE.search(chunk):  # headers already eaten by the parser: the chunk is text
            bodies.append(_undo_surrogates(chunk, part.get_content_charset()))
    return "\n\n".join(b for b in bodies if b.strip())


def _undo_surrogates(text: str, charset: str | None) -> str:
    """Strings the parser built from raw 8-bit bytes carry them as surrogates; decode them properly."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    return decode_bytes(text.encode("utf-8", "surrogateescape"), charset)


def _header(msg: Message, name: str, charsets: list[str]) -> str:
    """A decoded header; raw 8-bit headers (undeclared charset) are decoded like the body."""
    raw = next((v for k, v in msg.raw_items() if k.lower() == name), None)
    if raw is None:
        return ""
    value = _undo_surrogates(raw, charsets[0] if charsets else None)
    if value == raw:  # no raw 8-bit bytes: the header parser decodes RFC 2047 words
        try:
            value = str(msg[name])
        except (MessageError, ValueError, IndexError, AttributeError, TypeError):
            value = raw  # the header parser chokes on some malformed address lists
    return normalize_text(" ".join(value.split()))


def _created_at(value: str) -> str | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322's own reading
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _document(msg: Message, doc_id: str, ctx: LoadContext) -> Document | None:
    charsets = [c for c in msg.get_charsets() if c and _codec(c)]
    attachments: list[tuple[str, str]] = []
    body = normalize_text(strip_reply(_body_and_attachments(msg, attachments)))
    sections = [Section(text=body)] if body else []
    for filename, text in attachments:
        if cleaned := normalize_text(text):
            sections.append(Section(text=cleaned, metadata={"attachment": normalize_text(filename)}))
    subject = _header(msg, "subject", charsets)
    if not sections:
        log.info("email.empty", extra={"doc_id": doc_id, "subject": subject})
        return None
    metadata: dict[str, object] = dict(ctx.metadata)
    for key, header in (("from", "from"), ("to", "to"), ("cc", "cc"), ("subject", "subject")):
        if value := _header(msg, header, charsets):
            metadata[key] = value
    if created := _created_at(_header(msg, "date", charsets)):
        metadata["created_at"] = created
    for key, header in (("message_id", "message-id"), ("in_reply_to", "in-reply-to")):
        if value := _header(msg, header, charsets).strip("<> "):
            metadata[key] = value
    if attachments:
        metadata["attachments"] = [normalize_text(name) for name, _ in attachments]
    return Document(
        id=doc_id,
        text="\n\n".join(s.text for s in sections),
        title=subject or "(no subject)",
        source=ctx.source,
        path=ctx.relpath,
        metadata=metadata,
        access_groups=ctx.access_groups,
        sections=tuple(sections),
    )


def _split_mbox(data: bytes) -> list[bytes]:
    """Messages of an mbox: a "From " line at the start or after a blank line opens a message."""
    starts = [
        m.start() for m in _MBOX_FROM.finditer(data) if m.start() == 0 or data[: m.start()].endswith(b"\n\n")
    ]
    chunks = [data[a:b] for a, b in itertools.pairwise([*starts, len(data)])]
    # Drop the envelope line and undo mboxrd's ">From " escaping.
    return [
        _MBOX_ESCAPED.sub(rb"\1", chunk.split(b"\n", 1)[1] if b"\n" in chunk else b"") for chunk in chunks
    ]


def _parse(data: bytes, path: Path) -> Message:
    if b"\x00" in data[:4096]:
        raise IngestError(path, "binary data, not an e-mail message")
    msg = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy.default)
    if not {k.lower() for k in msg} & set(_MAIL_HEADERS):
        raise IngestError(path, "no mail headers (From, Subject, Message-ID, ...) found")
    return msg


def load_email(path: Path, ctx: LoadContext) -> Iterator[Document]:
    """One Document per message in a mail file (.eml, extensionless RFC 822, or mbox).

    Ids are ``ctx.doc_id()`` for a single message and ``ctx.doc_id(str(index))`` for each message
    of an mbox (a file whose first line is a "From " envelope line), which stays stable as the
    mbox grows at the end.
    """
    size = path.stat().st_size
    if size > ctx.max_file_bytes:
        raise IngestError(path, f"{size} bytes exceeds the {ctx.max_file_bytes}-byte limit")
    data = path.read_bytes()
    if not data.strip():
        raise IngestError(path, "empty file")
    if not _MBOX_FROM.match(data):
        if (doc := _document(_parse(data, path), ctx.doc_id(), ctx)) is not None:
            yield doc
        return
    messages = _split_mbox(data)
    failed = 0
    for index, raw in enumerate(messages):
        try:
            msg = _parse(raw, path)
        except IngestError as exc:
            log.warning("email.bad_message", extra={"index": index, "reason": exc.reason})
            failed += 1
            continue
        if (doc := _document(msg, ctx.doc_id(str(index)), ctx)) is not None:
            yield doc
    if failed == len(messages):
        raise IngestError(path, f"none of the {failed} messages in this mbox could be parsed")
