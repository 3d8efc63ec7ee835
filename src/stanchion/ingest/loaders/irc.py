"""IRC channel logs -> one Document per conversation.

An IRC channel interleaves several conversations at once, so a log is split into threads rather
than time windows. When a reply-link annotation file sits beside the log (``X.annotation.txt``
next to ``X.raw.txt``, the irc-disentanglement format "line_a line_b -"), its linked components
are the threads; otherwise a heuristic follows who addresses whom. ``pairwise_scores`` measures the
heuristic against annotated threads.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.normalize import normalize_text
from stanchion.types import Document, Section

log = logging.getLogger(__name__)

DEFAULT_GAP_MINUTES = 15.0
DEFAULT_GAP_MESSAGES = 40

# Optional "channel YYYY-MM-DD " prefix (ALTA 2023 logs), then "[HH:MM(:SS)]" or "HH:MM(:SS)".
_PREFIX = re.compile(r"^(?:(?P<chan>[#&]?[\w.-]+) (?P<date>\d{4}-\d{2}-\d{2}) )?(?P<rest>.*)$")
_STAMP = re.compile(r"^\[?(?P<time>\d{1,2}:\d{2}(?::\d{2})?)\]?\s+(?P<body>.*)$")
_SAY = re.compile(r"^<[ @+%~&]?(?P<nick>[^\s>]+)>\s?(?P<text>.*)$")
_ACTION = re.compile(r"^\*\s+(?P<nick>[^\s*]+)\s+(?P<text>.*)$")
# "=== x has joined", irssi "-!- x has quit", xchat "*** x has left", "--> x", "<-- x".
_SYSTEM = re.compile(r"^(===|-!-|\*\*\*|-->|<--|--)\s")
_RENAME = re.compile(r"^(?:===|-!-|\*\*\*)\s+(?P<old>\S+) is now known as (?P<new>\S+)")
_JOINED = re.compile(r"has joined (?P<chan>[#&]\S+)")
_FILE_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")
# "nick: ...", "nick, ...", "@nick ..." at the start of a message name its addressee.
_ADDRESSEE = re.compile(r"^@?(?P<nick>[^\s:,]+)[:,]?(\s|$)")
_SIDECAR_SUFFIXES = (".annotation.txt", ".tok.txt")


@dataclass(frozen=True, slots=True)
class IrcMessage:
    """One spoken line of a log; ``line`` is its 0-based line number in the file."""

    line: int
    nick: str
    text: str
    when: datetime | None


@dataclass(frozen=True, slots=True)
class ParsedLog:
    """A log's spoken messages, its channel if the log names one, and old -> new nick renames."""

    messages: list[IrcMessage]
    channel: str | None
    renames: dict[str, str]


def parse_log(text: str, default_date: str | None = None) -> ParsedLog:
    """Spoken messages of a log; joins, parts, quits, nick changes and other system lines are dropped.

    Lines are split on "\\n" only, so line numbers match annotation files. Timestamps without a
    date take ``default_date``; a clock that jumps back more than an hour means midnight passed.
    """
    messages: list[IrcMessage] = []
    channel: str | None = None
    renames: dict[str, str] = {}
    last: datetime | None = None
    for number, raw in enumerate(text.split("\n")):
        line = raw.rstrip("\r")
        prefix = _PREFIX.match(line)
        date, rest = (prefix.group("date"), prefix.group("rest")) if prefix else (None, line)
        if prefix and prefix.group("chan") and channel is None:
            channel = prefix.group("chan").lstrip("#&")
        stamp = _STAMP.match(rest)
        body = stamp.group("body") if stamp else rest
        if _SYSTEM.match(body):
            if rename := _RENAME.match(body):
                renames[rename.group("old").casefold()] = rename.group("new").casefold()
            if channel is None and (joined := _JOINED.search(body)):
                channel = joined.group("chan").lstrip("#&")
            continue
        said = _SAY.match(body)
        action = None if said else _ACTION.match(body)
        match = said or action
        if match is None:
            continue
        nick, words = match.group("nick"), normalize_text(match.group("text"))
        if not words:
            continue
        when = _timestamp(stamp.group("time") if stamp else None, date or default_date, last)
        last = when or last
        messages.append(IrcMessage(number, nick, f"* {words}" if action else words, when))
    return ParsedLog(messages, channel, renames)


def _timestamp(clock: str | None, date: str | None, last: datetime | None) -> datetime | None:
    if clock is None or date is None:
        return None
    try:
        when = datetime.fromisoformat(f"{date}T" + ":".join(p.zfill(2) for p in clock.split(":")))
    except ValueError:
        return None
    when = when.replace(tzinfo=UTC)  # logs rarely state their zone; UTC is the usual convention
    if last is not None and when < last - timedelta(hours=1):
        # A time of day without its own date that jumps back has wrapped past midnight.
        when = datetime.combine(last.date(), when.timetz())
        if when < last - timedelta(hours=1):
            when += timedelta(days=1)
    return when


def heuristic_threads(
    messages: Sequence[IrcMessage],
    renames: Mapping[str, str] | None = None,
    *,
    gap_minutes: float = DEFAULT_GAP_MINUTES,
    gap_messages: int = DEFAULT_GAP_MESSAGES,
) -> dict[int, int]:
    """Line -> thread id (the line that started the thread), following who talks to whom.

    A message that addresses a known nick ("nick: ...") joins the thread that nick was last in;
    otherwise it continues its speaker's latest thread; otherwise it starts one. A thread idle
    for more than ``gap_minutes`` or ``gap_messages`` channel messages is closed.
    """
    renames = renames or {}
    latest: dict[str, int] = {}  # nick -> thread it last spoke in or was addressed in
    last_seen: dict[int, tuple[int, datetime | None]] = {}  # thread -> (message index, time)
    assigned: dict[int, int] = {}

    def alive(thread: int | None, index: int, when: datetime | None) -> bool:
        if thread is None:
            return False
        seen_at, seen_when = last_seen[thread]
        if index - seen_at > gap_messages:
            return False
        return when is None or seen_when is None or when - seen_when <= timedelta(minutes=gap_minutes)

    for index, msg in enumerate(messages):
        speaker = msg.nick.casefold()
        addressed = _ADDRESSEE.match(msg.text)
        target = addressed.group("nick").casefold() if addressed else None
        target = renames.get(target, target) if target else None
        if target == speaker or target not in latest:
            target = None
        if target is not None and alive(latest[target], index, msg.when):
            thread = latest[target]
        elif alive(latest.get(speaker), index, msg.when):
            thread = latest[speaker]
        else:
            thread = msg.line
        assigned[msg.line] = thread
        last_seen[thread] = (index, msg.when)
        latest[speaker] = thread
        if target is not None:
            latest[target] = thread
        if speaker in renames:
            latest[renames[speaker]] = thread
    return assigned


def annotation_threads(text: str) -> dict[int, int]:
    """Line -> thread id from "line_a line_b -" reply links: the connected components."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for row in text.split("\n"):
        fields = row.split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            a, b = find(int(fields[0])), find(int(fields[1]))
            parent[max(a, b)] = min(a, b)
    return {line: find(line) for line in parent}


@dataclass(frozen=True, slots=True)
class PairScores:
    precision: float
    recall: float
    f1: float
    messages: int


def pairwise_scores(predicted: Mapping[int, Hashable], gold: Mapping[int, Hashable]) -> PairScores:
    """Pairwise precision/recall/F1 of "these two messages share a thread", over messages in both."""
    common = [line for line in gold if line in predicted]

    def pairs(counts: Counter[Hashable]) -> int:
        return sum(n * (n - 1) // 2 for n in counts.values())

    pred_pairs = pairs(Counter(predicted[x] for x in common))
    gold_pairs = pairs(Counter(gold[x] for x in common))
    both = pairs(Counter((predicted[x], gold[x]) for x in common))
    precision = both / pred_pairs if pred_pairs else 1.0
    recall = both / gold_pairs if gold_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairScores(precision, recall, f1, len(common))


def score_heuristic(
    log_path: Path,
    annotation_path: Path,
    *,
    gap_minutes: float = DEFAULT_GAP_MINUTES,
    gap_messages: int = DEFAULT_GAP_MESSAGES,
) -> PairScores:
    """How well ``heuristic_threads`` recovers the annotated threads of one log.

    Only annotated messages count: the annotation covers lines from its first linked line on.
    """
    parsed = parse_log(_read_text(log_path), _file_date(log_path))
    gold = annotation_threads(annotation_path.read_text(encoding="utf-8"))
    first_annotated = min((line for line, thread in gold.items() if line != thread), default=0)
    spoken = {m.line for m in parsed.messages if m.line >= first_annotated}
    predicted = heuristic_threads(
        parsed.messages, parsed.renames, gap_minutes=gap_minutes, gap_messages=gap_messages
    )
    return pairwise_scores({k: v for k, v in predicted.items() if k in spoken}, gold)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # older logs are mostly latin-1/cp1252


def _file_date(path: Path) -> str | None:
    found = _FILE_DATE.search(path.name)
    return found.group(1) if found else None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".raw.txt", ".ascii.txt", ".txt", ".log"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _channel_from_name(path: Path) -> str | None:
    head = _stem(path).split(".")[0]
    return None if _FILE_DATE.search(head) or head.isdigit() else head


def _document(
    ctx: LoadContext, label: str, channel: str | None, messages: list[IrcMessage], by: str
) -> Document:
    sections = tuple(
        Section(
            text=f"{m.nick}: {m.text}",
            metadata={"author": m.nick, "line": m.line} | ({"ts": _iso(m.when)} if m.when else {}),
        )
        for m in messages
    )
    first, last = messages[0], messages[-1]
    started = f" — {first.when:%Y-%m-%d %H:%M}" if first.when else f" — line {first.line}"
    metadata: dict[str, object] = {
        **ctx.metadata,
        "author": first.nick,
        "participants": list(dict.fromkeys(m.nick for m in messages)),
        "message_count": len(messages),
        "line_start": first.line,
        "line_end": last.line,
        "threaded_by": by,
    }
    if channel:
        metadata["channel"] = channel
    if first.when and last.when:
        metadata["created_at"], metadata["updated_at"] = _iso(first.when), _iso(last.when)
    return Document(
        id=ctx.doc_id(str(first.line)),
        text="\n".join(s.text for s in sections),
        title=f"{label}{started} ({first.nick})",
        source=ctx.source,
        path=ctx.relpath,
        metadata=metadata,
        access_groups=ctx.access_groups,
        sections=sections,
    )


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def load_irc(
    path: Path,
    ctx: LoadContext,
    *,
    gap_minutes: float = DEFAULT_GAP_MINUTES,
    gap_messages: int = DEFAULT_GAP_MESSAGES,
) -> Iterator[Document]:
    """One Document per conversation of an IRC log (``*.raw.txt``, ``*.ascii.txt``, ``*.log``, ``*.txt``).

    Annotation and token sidecars (``*.annotation.txt``, ``*.tok.txt``) yield nothing. Messages an
    annotation file covers are threaded by its links; the rest by ``heuristic_threads``.
    """
    if path.name.endswith(_SIDECAR_SUFFIXES):
        return
    size = path.stat().st_size
    if size > ctx.max_file_bytes:
        raise IngestError(path, f"{size} bytes exceeds the {ctx.max_file_bytes}-byte limit")
    text = _read_text(path)
    if b"\x00" in text[:4096].encode("utf-8", "replace"):
        raise IngestError(path, "binary data, not an IRC log")
    parsed = parse_log(text, _file_date(path))
    if not parsed.messages:
        raise IngestError(path, "no IRC messages found (expected lines like '[12:34] <nick> text')")
    threads = {
        line: ("heuristic", thread)
        for line, thread in heuristic_threads(
            parsed.messages, parsed.renames, gap_minutes=gap_minutes, gap_messages=gap_messages
        ).items()
    }
    sidecar = path.with_name(_stem(path) + ".annotation.txt")
    if sidecar.is_file():
        gold = annotation_threads(sidecar.read_text(encoding="utf-8", errors="replace"))
        threads.update({line: ("annotation", thread) for line, thread in gold.items() if line in threads})
    grouped: dict[tuple[str, int], list[IrcMessage]] = {}
    for msg in parsed.messages:
        grouped.setdefault(threads[msg.line], []).append(msg)
    channel = parsed.channel or _channel_from_name(path)
    label = f"#{channel}" if channel else _stem(path)
    log.info(
        "irc.loaded",
        extra={
            "messages": len(parsed.messages),
            "conversations": len(grouped),
            "annotated": sidecar.is_file(),
        },
    )
    for (by, _), members in sorted(grouped.items(), key=lambda item: item[1][0].line):
        yield _document(ctx, label, channel, members, by)
