"""Test collections of real documents: sources to ingest, questions, and the pages that answer them.

A collection is a folder::

    collection.yaml   name, data_root, sources (as in stanchion.yaml, paths under the data root)
    queries.jsonl     {"_id": "q01", "text": "...", "tags": ["table"]}   (tags optional)
    qrels.tsv         query-id <TAB> document <TAB> passage <TAB> score   (one header line)

``document`` is a source file's path under the data root (``docs-debian/pdf/fhs-3.0.pdf``);
``passage`` is ``page:N`` (1-based page of the file, as the PDF loader numbers it, not the printed
page number), ``section:H`` (an HTML heading: the text under it up to the next heading; a
subsection that also answers is listed on its own line) or empty when the whole document is the
answer. Documents are judged relevant when any of their passages is.

The data root is the collection's own folder when its documents are in it, else
``$STANCHION_DATA_DIR`` when set, else ``data_root`` from the file looked up
from the collection folder upwards (``../shared/data`` is found from anywhere in the checkout).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from stanchion.errors import SpecError
from stanchion.spec import SourceSpec, parse_spec
from stanchion.types import Chunk

COLLECTION_FILE = "collection.yaml"
_KEYS = frozenset({"name", "description", "data_root", "sources"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_WS = re.compile(r"\s+")


def is_collection(folder: Path) -> bool:
    return (folder / COLLECTION_FILE).is_file()


def heading_key(heading: str) -> str:
    """Headings compare case- and space-insensitively: extraction may change either."""
    return _WS.sub(" ", heading).strip().casefold()


def page_passage(document: str, page: int) -> str:
    return f"{document}#page={page}"


def section_passage(document: str, heading: str) -> str:
    return f"{document}#section={heading_key(heading)}"


@dataclass(frozen=True, slots=True)
class Evidence:
    """One judged place: a document, optionally narrowed to a page or a section heading."""

    document: str
    page: int | None = None
    section: str | None = None
    grade: int = 1

    @property
    def passage(self) -> str | None:
        if self.page is not None:
            return page_passage(self.document, self.page)
        if self.section is not None:
            return section_passage(self.document, self.section)
        return None


@dataclass(frozen=True, slots=True)
class Collection:
    name: str
    folder: Path
    data_root: Path
    sources: tuple[SourceSpec, ...]  # paths relative to data_root
    queries: dict[str, str]
    tags: dict[str, tuple[str, ...]]
    evidence: dict[str, tuple[Evidence, ...]]

    @classmethod
    def load(cls, folder: Path, data_root: Path | None = None) -> Collection:
        file = folder / COLLECTION_FILE
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read the collection: {exc}", file=file) from None
        if not isinstance(raw, dict):
            raise SpecError("a collection file is a mapping with name, data_root and sources", file=file)
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise SpecError(
                f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_KEYS))}",
                key_path=unknown[0],
                file=file,
            )
        root = data_root or _find_data_root(folder, str(raw.get("data_root") or ""), file)
        name = str(raw.get("name") or folder.name)
        if not _NAME.fullmatch(name):
            # The name is part of the cached index's file name: no path of its own.
            raise SpecError(
                f"name: {name!r} must be letters, digits, _ . - (starting with a letter or digit)",
                key_path="name",
                file=file,
            )
        sources = parse_spec({"sources": raw.get("sources") or []}, base_dir=root, file=file).sources
        if not sources:
            raise SpecError("sources: a collection needs at least one source", key_path="sources", file=file)
        for n, source in enumerate(sources):
            if not (root / source.path).resolve().is_relative_to(root.resolve()):
                raise SpecError(
                    f"sources[{n}].path: {source.path!r} is outside the data root {root}; "
                    "source paths are relative to it and stay under it",
                    key_path=f"sources[{n}].path",
                    file=file,
                )
        queries, tags = _read_queries(folder / "queries.jsonl")
        evidence = _read_qrels(folder / "qrels.tsv", queries)
        return cls(
            name=name,
            folder=folder,
            data_root=root,
            sources=tuple(sources),
            queries={q: t for q, t in queries.items() if q in evidence},
            tags=tags,
            evidence=evidence,
        )

    def document_qrels(self) -> dict[str, dict[str, int]]:
        """Query -> document -> best grade among its evidence."""
        out: dict[str, dict[str, int]] = {}
        for qid, items in self.evidence.items():
            judged = out.setdefault(qid, {})
            for e in items:
                judged[e.document] = max(judged.get(e.document, 0), e.grade)
        return out

    def passage_qrels(self) -> dict[str, dict[str, int]]:
        """Query -> passage id -> grade, for the queries whose evidence names pages or sections."""
        out: dict[str, dict[str, int]] = {}
        for qid, items in self.evidence.items():
            judged = {e.passage: e.grade for e in items if e.passage is not None}
            if judged:
                out[qid] = judged
        return out

    def source_paths(self) -> dict[str, str]:
        """Source name -> its path under the data root (posix), to name documents by file."""
        return {s.name: Path(s.path).as_posix().strip("/") for s in self.sources}


def chunk_document(chunk: Chunk, source_paths: Mapping[str, str]) -> str:
    """The data-root-relative file a chunk came from (how qrels name documents)."""
    meta = chunk.metadata
    source = str(meta.get("source") or chunk.document_id.split(":", 1)[0])
    relpath = str(meta.get("path") or chunk.document_id.split(":", 2)[1])
    base = source_paths.get(source, source)
    # A source whose path is one file has that file's name as the unit path.
    if base.endswith("/" + relpath) or base == relpath:
        return base
    return f"{base}/{relpath}"


def chunk_passage(chunk: Chunk, document: str) -> str:
    """The passage a chunk lies in: its page, else its deepest heading, else the whole document.

    Chunks never cross a page or a heading (``ingest/chunk.py``), so this is exact.
    """
    meta = chunk.metadata
    page = meta.get("page")
    if isinstance(page, int):
        return page_passage(document, page)
    path = meta.get("heading_path")
    if isinstance(path, list) and path:
        return section_passage(document, str(path[-1]))
    return document


def rank_passages(chunks: Sequence[Chunk], source_paths: Mapping[str, str]) -> list[str]:
    """Retrieved chunks as a ranked list of passages, each at the rank of its best chunk."""
    ranked: list[str] = []
    seen: set[str] = set()
    for chunk in chunks:
        passage = chunk_passage(chunk, chunk_document(chunk, source_paths))
        if passage not in seen:
            seen.add(passage)
            ranked.append(passage)
    return ranked


def _find_data_root(folder: Path, declared: str, file: Path) -> Path:
    """The collection's own documents when it ships them (``data_root`` is its folder or under
    it), else ``$STANCHION_DATA_DIR`` when set, else ``data_root`` looked up from the folder."""
    if Path(declared).is_absolute():
        candidates = [Path(declared)]
    elif declared:
        candidates = [parent / declared for parent in folder.resolve().parents]
    else:
        candidates = []
    found = next((c.resolve() for c in candidates if c.is_dir()), None)
    if found is not None and found.is_relative_to(folder.resolve()):
        return found
    env = os.environ.get("STANCHION_DATA_DIR")
    if env:
        root = Path(env)
        if not root.is_dir():
            raise SpecError(f"STANCHION_DATA_DIR={env} is not a folder", file=file)
        return root
    if not declared:
        raise SpecError(
            "data_root: name the folder the source paths are under", key_path="data_root", file=file
        )
    if found is not None:
        return found
    raise SpecError(
        f"data_root {declared} not found from {folder}; set STANCHION_DATA_DIR to the folder that holds the "
        "sources",
        key_path="data_root",
        file=file,
    )


def _read_queries(file: Path) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    if not file.is_file():
        raise SpecError(f"{file} not found: a collection holds collection.yaml, queries.jsonl and qrels.tsv")
    queries: dict[str, str] = {}
    tags: dict[str, tuple[str, ...]] = {}
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                qid, text = str(item["_id"]), str(item["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise SpecError(f'line {number}: expected {{"_id": ..., "text": ...}}', file=file) from None
            if qid in queries:
                raise SpecError(f"line {number}: query id {qid!r} appears twice", file=file)
            queries[qid] = text
            tags[qid] = tuple(str(t) for t in item.get("tags") or ())
    return queries, tags


def _read_qrels(file: Path, queries: Mapping[str, str]) -> dict[str, tuple[Evidence, ...]]:
    if not file.is_file():
        raise SpecError(f"{file} not found: a collection holds collection.yaml, queries.jsonl and qrels.tsv")
    evidence: dict[str, list[Evidence]] = {}
    with file.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or not "".join(row).strip() or (number == 1 and row[0] == "query-id"):
                continue
            if len(row) != 4 or not row[3].strip().lstrip("-").isdigit():
                raise SpecError(
                    f"line {number}: expected query-id, document, passage (page:N, section:HEADING or "
                    "empty) and an integer score, tab-separated",
                    file=file,
                )
            qid, document, passage, score = (c.strip() for c in row)
            if qid not in queries:
                raise SpecError(f"line {number}: query {qid!r} is not in queries.jsonl", file=file)
            evidence.setdefault(qid, []).append(_evidence(document, passage, int(score), number, file))
    return {q: tuple(items) for q, items in evidence.items()}


def _evidence(document: str, passage: str, grade: int, number: int, file: Path) -> Evidence:
    kind, _, value = passage.partition(":")
    if not passage:
        return Evidence(document, grade=grade)
    if kind == "page" and value.isdigit() and int(value) > 0:
        return Evidence(document, page=int(value), grade=grade)
    if kind == "section" and value.strip():
        return Evidence(document, section=value.strip(), grade=grade)
    raise SpecError(f"line {number}: passage {passage!r} is not page:N, section:HEADING or empty", file=file)
