"""Which units (files, or whole Slack exports) a source holds, their loader type and signature."""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stanchion.errors import IngestError

EXTENSION_TYPES = {
    ".txt": "text",
    ".text": "text",
    ".log": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".jsonl": "beir",
    ".eml": "email",
    ".mbox": "email",
}
# What a source of a given type takes by default when the spec gives no glob.
DEFAULT_GLOBS = {
    "text": "**/*.txt",
    "markdown": "**/*.md",
    "html": "**/*.htm*",
    "pdf": "**/*.pdf",
    "beir": "**/corpus.jsonl",
    "email": "**/*",
    "irc": "**/*.txt",
    "auto": "**/*",
}
# Files that describe a data set rather than belong to it.
DEFAULT_EXCLUDES = ("*.annotation.txt", "*.tok.txt", ".*", "*/.*", "SOURCE.txt", "LICENSE*", "COPYRIGHT*")


@dataclass(frozen=True, slots=True)
class Unit:
    path: Path
    relpath: str
    type: str


def is_slack_export(path: Path) -> bool:
    if path.is_dir():
        return (path / "channels.json").is_file() and (path / "users.json").is_file()
    return path.suffix.lower() == ".zip"


def sniff_type(path: Path) -> str | None:
    """Type of a file by extension, else by its first bytes (mail files often have no extension)."""
    by_ext = EXTENSION_TYPES.get(path.suffix.lower())
    if by_ext:
        return by_ext
    if path.suffix.lower() == ".zip":
        return "slack"
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError:
        return None
    if head.startswith(b"From ") or any(
        head.lower().startswith(h)
        for h in (b"return-path:", b"received:", b"from:", b"delivered-to:", b"message-id:")
    ):
        return "email"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "html"
    if head.startswith(b"%PDF"):
        return "pdf"
    return None


def enumerate_units(
    root: Path, source_type: str, glob: str | None = None, exclude: list[str] | None = None
) -> Iterator[Unit]:
    """Units under ``root`` in a stable order. A Slack export is one unit, never its files."""
    if not root.exists():
        raise IngestError(root, "path does not exist (check the source's path in the spec)")
    if source_type == "slack" or (source_type == "auto" and is_slack_export(root)):
        yield Unit(root, root.name, "slack")
        return
    if root.is_file():
        kind = source_type if source_type != "auto" else sniff_type(root)
        yield Unit(root, root.name, kind or "text")
        return
    patterns = list(DEFAULT_EXCLUDES) + list(exclude or [])
    slack_roots = [p.parent for p in root.glob("**/channels.json") if is_slack_export(p.parent)]
    if source_type == "auto":
        for slack_root in slack_roots:
            yield Unit(slack_root, slack_root.relative_to(root).as_posix() or ".", "slack")
    for path in sorted(root.glob(glob or DEFAULT_GLOBS.get(source_type, "**/*"))):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(path.name, p) for p in patterns):
            continue
        if source_type == "auto" and any(s in path.parents for s in slack_roots):
            continue
        if source_type == "auto":
            kind = sniff_type(path)
            if kind is None or kind == "slack":
                continue
        else:
            kind = source_type
        yield Unit(path, rel, kind)


def signature(path: Path, fingerprint: str) -> str:
    """Content hash of a unit (every file of a directory unit) plus the spec settings it was built with."""
    digest = hashlib.sha256(fingerprint.encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]
