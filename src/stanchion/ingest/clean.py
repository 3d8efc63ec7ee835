"""Cleaning that looks across pages or documents: running headers/footers and duplicate documents."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from stanchion.types import Document

log = logging.getLogger(__name__)

_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")
# A roman page number ("xii") up to 89, as in front-matter headers; larger ones ("c", "mix") are words.
_ROMAN = re.compile(r"(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})")
_NUMBER_RUN = re.compile(r"#(?:[^\w\s]*\s?[^\w\s]*#)+")
_WORD = re.compile(r"\w+")

U64 = npt.NDArray[np.uint64]


def _line_key(line: str) -> str:
    """The form in which two running headers compare equal: "Page 3 of 9" == "Page 4 of 9"."""
    tokens = _DIGITS.sub("#", _SPACE.sub(" ", line.strip().casefold())).split(" ")
    # Only the first and last token count as roman numerals: "vi" mid-line is the editor, not a page.
    for i in {0, len(tokens) - 1}:
        if tokens[i] and _ROMAN.fullmatch(tokens[i]):
            tokens[i] = "#"
    # "xii", "12", "12/233" and "4.6.2.0" all become one "#": front matter and body pages then match.
    return _NUMBER_RUN.sub("#", " ".join(tokens))


def _edge_indices(lines: list[str], edge_lines: int | None) -> set[int]:
    """Indices of the non-blank lines near the top and bottom of a page, where headers live."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if edge_lines is None or len(filled) <= 2 * edge_lines:
        return set(filled)
    return set(filled[:edge_lines] + filled[-edge_lines:])


def strip_repeated_lines(
    pages: list[str], min_share: float = 0.5, min_pages: int = 3, *, edge_lines: int | None = 3
) -> list[str]:
    """Remove running headers and footers: lines that recur on at least ``min_share`` of the pages.

    Lines compare after case-folding and replacing numbers (arabic, or roman at either end) with
    ``#``, so "Page 3 of 9" matches "Page 4 of 9". A line that carries a page number at its start
    or end ("8 Chapter 2. The Archive") needs only ``min_pages`` pages: such per-chapter footers
    never reach a share of the whole book. Only the first and last ``edge_lines`` non-blank lines
    of a page are candidates (``None``: every line), so text that legitimately recurs in the body,
    such as a closing brace in code listings, stays. With fewer than ``min_pages`` pages there is
    no evidence of repetition and the pages come back unchanged.
    """
    if len(pages) < min_pages:
        return list(pages)
    split = [page.split("\n") for page in pages]
    edges = [_edge_indices(lines, edge_lines) for lines in split]
    counts: Counter[str] = Counter()
    for lines, idx in zip(split, edges, strict=True):
        counts.update({_line_key(lines[i]) for i in idx})
    needed = max(2, math.ceil(min_share * len(pages)))
    needed_numbered = min(needed, max(2, min_pages))
    repeated = {
        key
        for key, n in counts.items()
        if n >= needed or (n >= needed_numbered and (key.startswith("#") or key.endswith("#")))
    }
    if not repeated:
        return list(pages)
    return [
        "\n".join(ln for i, ln in enumerate(lines) if i not in idx or _line_key(ln) not in repeated)
        for lines, idx in zip(split, edges, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class DedupeResult:
    """What ``dedupe_documents`` kept, and where each dropped document went."""

    kept: list[Document]
    exact_merged: int
    near_merged: int
    merged_into: dict[str, str] = field(default_factory=dict)


# MinHash parameters. Fixed seeds make results identical across runs and machines.
_NUM_PERM = 128
_SHINGLE = 5
_RNG_SEED = 0x5EED
_BLOCK = 4096  # shingles per vectorised step: a (block x permutations) uint64 array, 4 MiB
_RNG = np.random.default_rng(_RNG_SEED)
_MULT = _RNG.integers(1, 2**63, size=_NUM_PERM, dtype=np.uint64) | np.uint64(1)  # odd: a bijection
_ADD = _RNG.integers(0, 2**63, size=_NUM_PERM, dtype=np.uint64)


def _mix(x: U64) -> U64:
    """splitmix64 finaliser: a bijection on uint64 that spreads small integer ids over 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_WEIGHTS = _mix(np.arange(1, _SHINGLE + 1, dtype=np.uint64))


@lru_cache(maxsize=1 << 16)
def _word_id(word: str) -> int:
    """A stable 64-bit id per word (str hash() is salted per process); no vocabulary to grow."""
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def _shingle_hashes(words: list[str]) -> U64:
    """64-bit hashes of every run of ``_SHINGLE`` consecutive words (one shingle for short texts)."""
    ids = _mix(np.fromiter(map(_word_id, words), dtype=np.uint64, count=len(words)))
    n = max(1, len(ids) - _SHINGLE + 1)
    acc = np.zeros(n, dtype=np.uint64)
    for j in range(min(_SHINGLE, len(ids))):
        acc += ids[j : j + n] * _WEIGHTS[j]
    return _mix(acc)


def _signature(shingles: U64) -> U64:
    """The MinHash signature of one document: per permutation, the least permuted shingle hash."""
    sig = np.full(_NUM_PERM, np.iinfo(np.uint64).max, dtype=np.uint64)
    for start in range(0, len(shingles), _BLOCK):
        block = shingles[start : start + _BLOCK]
        np.minimum(sig, (block[:, None] * _MULT[None, :] + _ADD[None, :]).min(axis=0), out=sig)
    return sig


def _band_shape(threshold: float) -> tuple[int, int]:
    """Bands x rows for LSH: the most selective split that still finds 99% of pairs at ``threshold``."""
    for rows in (16, 8, 4, 2, 1):
        bands = _NUM_PERM // rows
        if 1 - (1 - threshold**rows) ** bands >= 0.99:
            return bands, rows
    return _NUM_PERM, 1


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Why ``Deduper.check`` dropped a document: an ``exact`` or ``near`` copy of document ``of``."""

    kind: Literal["exact", "near"]
    of: str


class Deduper:
    """Exact and near-duplicate detection one document at a time, in arrival order.

    Exact duplicates share a hash of their lower-cased word sequence (so whitespace and punctuation
    differences from two renderings of one page do not matter). Near duplicates are found with
    MinHash over word 5-shingles and LSH banding, which keeps the work about linear in the number
    of documents, then confirmed by an estimated Jaccard similarity >= ``near_threshold`` with the
    earliest kept document. This is what lets ingestion stream: what it keeps per document is a
    16-byte hash and a 1 KiB signature, never the text. Documents without words are kept as they
    are: there is nothing to compare.
    """

    def __init__(self, near_threshold: float = 0.9) -> None:
        if not 0.0 < near_threshold <= 1.0:
            raise ValueError(f"near_threshold must be in (0, 1], got {near_threshold}")
        self._threshold = near_threshold
        self._bands, self._rows = _band_shape(near_threshold)
        self._band_weights = _mix(np.arange(1, self._rows + 1, dtype=np.uint64))
        self._by_hash: dict[bytes, str] = {}  # word-sequence hash -> first document with it
        self._ids: list[str] = []  # per signature row: the kept document it belongs to
        self._alive: list[bool] = []
        self._sigs = np.empty((0, _NUM_PERM), dtype=np.uint64)
        self._buckets: list[dict[int, list[int]]] = [{} for _ in range(self._bands)]

    def check(self, doc: Document) -> Duplicate | None:
        """None if ``doc`` is kept (and remembered), else the document it duplicates."""
        words = _WORD.findall(doc.text.casefold())
        if not words:
            return None
        digest = hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).digest()
        first = self._by_hash.setdefault(digest, doc.id)
        if first != doc.id:
            return Duplicate("exact", first)
        if self._threshold >= 1.0:
            return None
        sig = _signature(_shingle_hashes(words))
        keys = (sig[: self._bands * self._rows].reshape(self._bands, self._rows) * self._band_weights).sum(
            axis=1, dtype=np.uint64
        )
        key_list: list[int] = keys.tolist()
        candidates: set[int] = set()
        for band, key in enumerate(key_list):
            candidates.update(self._buckets[band].get(key, ()))
        ordered = sorted(c for c in candidates if self._alive[c])
        if ordered:
            similarity = (self._sigs[ordered] == sig).mean(axis=1)
            hits = np.flatnonzero(similarity >= self._threshold)
            if hits.size:
                return Duplicate("near", self._ids[ordered[int(hits[0])]])
        row = len(self._ids)
        if row == len(self._sigs):  # grow by doubling: amortised O(1) per document
            grown = np.empty((max(64, 2 * row), _NUM_PERM), dtype=np.uint64)
            grown[:row] = self._sigs
            self._sigs = grown
        self._sigs[row] = sig
        self._ids.append(doc.id)
        self._alive.append(True)
        for band, key in enumerate(key_list):
            self._buckets[band].setdefault(key, []).append(row)
        return None

    def forget(self, ids: Collection[str]) -> None:
        """Stop matching against these documents (their file failed, so they were never written)."""
        if not ids:
            return
        for row, doc_id in enumerate(self._ids):
            if doc_id in ids:
                self._alive[row] = False
        for digest in [d for d, doc_id in self._by_hash.items() if doc_id in ids]:
            del self._by_hash[digest]


def dedupe_documents(docs: Sequence[Document], near_threshold: float = 0.9) -> DedupeResult:
    """Drop exact and near-duplicate documents, keeping the first of each group in input order
    (``Deduper`` says how they are found)."""
    started = time.perf_counter()
    deduper = Deduper(near_threshold)
    kept: list[Document] = []
    merged_into: dict[str, str] = {}
    counts = {"exact": 0, "near": 0}
    for doc in docs:
        verdict = deduper.check(doc)
        if verdict is None:
            kept.append(doc)
        else:
            merged_into[doc.id] = verdict.of
            counts[verdict.kind] += 1
    log.info(
        "clean.dedupe",
        extra={
            "documents": len(docs),
            "kept": len(kept),
            "exact_merged": counts["exact"],
            "near_merged": counts["near"],
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return DedupeResult(
        kept=kept, exact_merged=counts["exact"], near_merged=counts["near"], merged_into=merged_into
    )
