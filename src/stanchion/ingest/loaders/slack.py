"""Slack workspace export (the .zip or its extracted folder) -> one Document per conversation.

A thread (messages sharing a ``thread_ts``) becomes one Document. The remaining top-level messages
of a channel are split into conversations wherever the channel falls silent for ``gap_minutes``.
Joins, bots, integrations and empty messages are dropped; user ids, channel ids and links are
rendered the way Slack shows them, so the text reads like the conversation did.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.normalize import normalize_text
from stanchion.types import Document, Section

log = logging.getLogger(__name__)

DEFAULT_GAP_MINUTES = 30.0

_DAY_FILE = re.compile(r"\d{4}-\d{2}-\d{2}\.json")
# Subtypes that carry no conversation: membership, channel housekeeping, integrations, bots, and
# edit/reply events that only repeat a message the export already holds.
_NOISE_SUBTYPES = frozenset(
    {
        "channel_join", "channel_leave", "group_join", "group_leave", "channel_topic",
        "channel_purpose", "channel_name", "channel_archive", "channel_unarchive", "group_topic",
        "group_purpose", "group_name", "group_archive", "group_unarchive", "bot_message", "bot_add",
        "bot_remove", "bot_enable", "bot_disable", "app_conversation_join", "pinned_item",
        "unpinned_item", "reminder_add", "tombstone", "sh_room_created", "sh_room_shared",
        "joiner_notification", "slackbot_response", "message_changed", "message_deleted",
        "message_replied",
    }
)  # fmt: skip
_SURROGATE = re.compile("[\ud800-\udfff]")
_MARKUP = re.compile(r"<([^<>\n]*)>")
# "<@U1> commented on <@U2>'s file <url|name>: " and "<@U1> uploaded a file: <url|name>" wrappers.
_FILE_WRAPPER = re.compile(r"^<@\w+(?:\|[^>]*)?> (?:commented on .*?file <[^>]*>: |uploaded a file: <[^>]*>)")


@dataclass(frozen=True, slots=True)
class _Message:
    ts: float
    raw_ts: str
    author: str
    text: str
    thread_ts: str | None


class _Export:
    """Read-only view of an export's files, whether zipped or extracted, rooted at channels.json."""

    def __init__(self, path: Path, max_bytes: int, archive: zipfile.ZipFile | None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._zip = archive
        if archive is not None:
            self._sizes = {i.filename: i.file_size for i in archive.infolist() if not i.is_dir()}
            # Some exports wrap everything in one top-level folder; root at the shallowest channels.json.
            roots = sorted(
                (n for n in self._sizes if PurePosixPath(n).name == "channels.json"),
                key=lambda n: n.count("/"),
            )
            self._prefix = roots[0][: -len("channels.json")] if roots else ""

    def size(self, name: str) -> int | None:
        if self._zip is None:
            file = self.path / name
            return file.stat().st_size if file.is_file() else None
        return self._sizes.get(self._prefix + name)

    def read(self, name: str) -> bytes:
        if self._zip is None:
            return (self.path / name).read_bytes()
        return self._zip.read(self._prefix + name)

    def day_files(self, folder: str) -> list[str]:
        if self._zip is None:
            directory = self.path / folder
            names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
        else:
            lead = f"{self._prefix}{folder}/"
            names = [n[len(lead) :] for n in self._sizes if n.startswith(lead)]
        return sorted(f"{folder}/{n}" for n in names if _DAY_FILE.fullmatch(n))


@contextmanager
def _open_export(path: Path, ctx: LoadContext) -> Iterator[_Export]:
    if path.is_dir():
        yield _Export(path, ctx.max_file_bytes, None)
        return
    if not path.is_file():
        raise IngestError(path, "no such file or folder")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, NotImplementedError, OSError) as exc:
        raise IngestError(path, f"not a valid zip archive ({exc})") from exc
    with archive:
        yield _Export(path, ctx.max_file_bytes, archive)


def _read_json(export: _Export, name: str) -> Any:
    """Parse one export file; ValueError says why it cannot be used."""
    size = export.size(name)
    if size is None:
        raise ValueError("missing")
    if size > export.max_bytes:
        raise ValueError(f"{size} bytes exceeds the {export.max_bytes}-byte limit")
    try:
        data = export.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
        # A damaged, truncated, encrypted (RuntimeError) or oddly compressed member.
        raise ValueError(f"unreadable ({exc})") from exc
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed JSON ({exc})") from exc


def _required_list(export: _Export, name: str) -> list[dict[str, Any]]:
    try:
        data = _read_json(export, name)
    except ValueError as exc:
        raise IngestError(export.path, f"not a Slack export: {name} {exc}") from exc
    if not isinstance(data, list):
        raise IngestError(export.path, f"not a Slack export: {name} is not a JSON array")
    return [item for item in data if isinstance(item, dict)]


class _Names:
    """Resolves user and channel ids, and renders Slack's ``<...>`` markup as readable text."""

    def __init__(self, users: list[dict[str, Any]], channels: Mapping[str, str]) -> None:
        self.users: dict[str, str] = {}
        self.bots: set[str] = {"USLACKBOT"}
        for user in users:
            uid = str(user.get("id", ""))
            profile = _dict(user.get("profile"))
            # Real names read best in answers and citations; handles are the fallback.
            candidates = (user.get("real_name"), profile.get("real_name"), profile.get("display_name"))
            self.users[uid] = next((str(c) for c in candidates if c), str(user.get("name") or uid))
            if user.get("is_bot") or user.get("is_app_user"):
                self.bots.add(uid)
        self.channels = channels

    def user(self, uid: str, fallback: str = "") -> str:
        return self.users.get(uid) or fallback or uid

    def render(self, text: str) -> str:
        # Slack escapes exactly these three; a full html.unescape would also eat a literal "&copy".
        text = _MARKUP.sub(self._markup, text)
        return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

    def _markup(self, match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            return "@" + self.user(target[1:], label.lstrip("@"))
        if target.startswith("#"):
            return "#" + (self.channels.get(target[1:]) or label or target[1:])
        if target.startswith("!"):
            # <!here>, <!channel>, <!subteam^S1|@team>, <!date^...|fallback>
            return label or "@" + target[1:].split("^")[0]
        if not label or label in (target, target.split(":", 1)[-1]):
            return label or target
        return f"{label} ({target})"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _clean(text: str) -> str:
    """Normalised text; lone surrogates (JSON "\\ud83d" halves of a broken emoji) become U+FFFD."""
    return normalize_text(_SURROGATE.sub("\ufffd", text))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _message(raw: dict[str, Any], names: _Names) -> _Message | None:
    """One rendered message, or None for noise (system events, bots, empty text)."""
    subtype = raw.get("subtype")
    uid = str(raw.get("user") or "")
    if subtype in _NOISE_SUBTYPES or uid in names.bots or (raw.get("bot_id") and not uid):
        return None
    try:
        ts = float(raw["ts"])
    except (KeyError, TypeError, ValueError):
        return None
    text = str(raw.get("text") or "")
    if subtype == "file_comment":
        # The comment body is content; "X commented on Y's file ..." around it is not.
        comment = _dict(raw.get("comment"))
        uid = str(comment.get("user") or uid)
        text = str(comment.get("comment") or _FILE_WRAPPER.sub("", text))
    elif subtype == "file_share":
        file = _dict(raw.get("file"))
        title = file.get("title") or file.get("name") or ""
        initial = _dict(file.get("initial_comment"))
        text = "\n".join(p for p in (f"shared a file: {title}" if title else "", initial.get("comment")) if p)
        text = text or _FILE_WRAPPER.sub("", str(raw.get("text") or ""))
    files = _list(raw.get("files"))
    titles = [str(f.get("title") or f.get("name")) for f in files if isinstance(f, dict) and f.get("name")]
    text = _clean("\n".join([names.render(text), *(f"[file: {t}]" for t in titles)]))
    if not text:
        return None
    profile = _dict(raw.get("user_profile"))
    fallback = str(profile.get("real_name") or raw.get("username") or "")
    thread_ts = raw.get("thread_ts")
    return _Message(
        ts=ts,
        raw_ts=str(raw["ts"]),
        author=_clean(names.user(uid, fallback) if uid else fallback or "unknown"),
        text=text,
        thread_ts=str(thread_ts) if thread_ts else None,
    )


def _document(ctx: LoadContext, channel: str, messages: list[_Message], *, thread_ts: str | None) -> Document:
    sections = tuple(
        Section(text=f"{m.author}: {m.text}", metadata={"author": m.author, "ts": _iso(m.ts)})
        for m in messages
    )
    first, last = messages[0], messages[-1]
    started = datetime.fromtimestamp(first.ts, UTC).strftime("%Y-%m-%d %H:%M")
    title = f"#{channel} — {started}" + (" (thread)" if thread_ts else "")
    return Document(
        id=ctx.doc_id(channel, thread_ts or first.raw_ts),
        text="\n".join(s.text for s in sections),
        title=title,
        source=ctx.source,
        path=ctx.relpath,
        metadata={
            **ctx.metadata,
            "channel": channel,
            "author": first.author,
            "participants": list(dict.fromkeys(m.author for m in messages)),
            "created_at": _iso(first.ts),
            "updated_at": _iso(last.ts),
            "message_count": len(messages),
            "thread": thread_ts is not None,
        },
        access_groups=(*ctx.access_groups, f"slack:{channel}"),
        sections=sections,
    )


def _channel_documents(
    ctx: LoadContext, channel: str, messages: list[_Message], gap_seconds: float
) -> Iterator[Document]:
    messages.sort(key=lambda m: m.ts)
    threads: dict[str, list[_Message]] = defaultdict(list)
    for m in messages:
        if m.thread_ts:
            threads[m.thread_ts].append(m)
    top_level = [m for m in messages if not m.thread_ts]
    for thread_ts, members in threads.items():
        if len(members) == 1 and members[0].raw_ts == thread_ts:
            top_level.append(members[0])  # a root whose replies were all noise is an ordinary message
        else:
            yield _document(ctx, channel, members, thread_ts=thread_ts)
    top_level.sort(key=lambda m: m.ts)
    conversation: list[_Message] = []
    for m in top_level:
        if conversation and m.ts - conversation[-1].ts > gap_seconds:
            yield _document(ctx, channel, conversation, thread_ts=None)
            conversation = []
        conversation.append(m)
    if conversation:
        yield _document(ctx, channel, conversation, thread_ts=None)


def _channel_folders(export: _Export) -> list[tuple[str, str]]:
    """(id, name) of every conversation the export lists; a conversation's folder is its name."""
    listed = _required_list(export, "channels.json")
    for optional in ("groups.json", "mpims.json", "dms.json"):
        if export.size(optional) is None:
            continue
        try:
            data = _read_json(export, optional)
        except ValueError as exc:
            log.warning("slack.bad_file", extra={"file": optional, "reason": str(exc)})
            continue
        if isinstance(data, list):
            listed.extend(c for c in data if isinstance(c, dict))
    # DMs have no name; their folder is named by id. A name that is not a plain folder name could
    # point outside the export, so it is skipped.
    named = [(str(c.get("id", "")), str(c.get("name") or c.get("id", ""))) for c in listed]
    return [
        (cid, name)
        for cid, name in named
        if name not in ("", ".", "..") and "/" not in name and "\\" not in name
    ]


def load_slack(
    path: Path, ctx: LoadContext, *, gap_minutes: float = DEFAULT_GAP_MINUTES
) -> Iterator[Document]:
    """Documents for every thread and every conversation in a Slack export.

    A malformed or oversized day file is skipped with a ``slack.bad_file`` warning; the export fails
    with ``IngestError`` only when it is not a Slack export (no users.json or channels.json), is not
    a valid zip, or none of its day files can be read.
    """
    with _open_export(path, ctx) as export:
        users = _required_list(export, "users.json")
        folders = _channel_folders(export)
        names = _Names(users, dict(folders))
        day_files = read = 0
        for _, channel in folders:
            messages: list[_Message] = []
            for name in export.day_files(channel):
                day_files += 1
                try:
                    day = _read_json(export, name)
                    if not isinstance(day, list):
                        raise ValueError("not a JSON array of messages")
                except ValueError as exc:
                    log.warning("slack.bad_file", extra={"file": name, "reason": str(exc)})
                    continue
                read += 1
                rendered = (_message(raw, names) for raw in day if isinstance(raw, dict))
                messages.extend(m for m in rendered if m is not None)
            yield from _channel_documents(ctx, channel, messages, gap_minutes * 60)
        if day_files and not read:
            raise IngestError(path, f"none of the {day_files} day files could be read")
        log.info(
            "slack.loaded", extra={"channels": len(folders), "day_files": read, "failed": day_files - read}
        )
