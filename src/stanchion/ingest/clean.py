"""Cleaning that looks across pages or documents: running headers/footers and duplicate documents."""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

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
_BATCH_SHINGLES = 2_000_000  # bounds memory: one uint64 array of this many values per permutation pass


def _mix(x: U64) -> U64:
    """splitmix64 finaliser: a bijection on uint64 that spreads small integer ids over 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _shingle_hashes(word_ids: list[int], weights: U64) -> U64:
    """64-bit hashes of every run of ``_SHINGLE`` consecutive words (one shingle for short texts)."""
    ids = _mix(np.asarray(word_ids, dtype=np.uint64))
    n = max(1, len(ids) - _SHINGLE + 1)
    acc = np.zeros(n, dtype=np.uint64)
    for j in range(min(_SHINGLE, len(ids))):
        acc += ids[j : j + n] * weights[j]
    return _mix(acc)


def _signatures(shingles: list[U64]) -> U64:
    """MinHash signatures, one row per document, using multiply-add permutations of the shingle hashes."""
    rng = np.random.default_rng(_RNG_SEED)
    mult = rng.integers(1, 2**63, size=_NUM_PERM, dtype=np.uint64) | np.uint64(1)  # odd: a bijection
    add = rng.integers(0, 2**63, size=_NUM_PERM, dtype=np.uint64)
    sig = np.empty((len(shingles), _NUM_PERM), dtype=np.uint64)
    start = 0
    while start < len(shingles):
        # Gather documents until the batch holds enough shingles to amortise the per-permutation loop.
        stop, total = start, 0
        while stop < len(shingles) and (stop == start or total + len(shingles[stop]) <= _BATCH_SHINGLES):
            total += len(shingles[stop])
            stop += 1
        flat = np.concatenate(shingles[start:stop])
        offsets = np.cumsum([0] + [len(s) for s in shingles[start : stop - 1]])
        for k in range(_NUM_PERM):
            sig[start:stop, k] = np.minimum.reduceat(flat * mult[k] + add[k], offsets)
        start = stop
    return sig


def _band_shape(threshold: float) -> tuple[int, int]:
    """Bands x rows for LSH: the most selective split that still finds 99% of pairs at ``threshold``."""
    for rows in (16, 8, 4, 2, 1):
        bands = _NUM_PERM // rows
        if 1 - (1 - threshold**rows) ** bands >= 0.99:
            return bands, rows
    return _NUM_PERM, 1


def dedupe_documents(docs: Sequence[Document], near_threshold: float = 0.9) -> DedupeResult:
    """Drop exact and near-duplicate documents, keeping the first of each group in input order.

    Exact duplicates share a hash of their lower-cased word sequence (so whitespace and punctuation
    differences from two renderings of one page do not matter). Near duplicates are found with
    MinHash over word 5-shingles and LSH banding, which keeps the work about linear in the number
    of documents, then confirmed by an estimated Jaccard similarity >= ``near_threshold``.
    Documents without words are kept as they are: there is nothing to compare.
    """
    if not 0.0 < near_threshold <= 1.0:
        raise ValueError(f"near_threshold must be in (0, 1], got {near_threshold}")
    started = time.perf_counter()
    merged_into: dict[str, str] = {}
    by_hash: dict[bytes, int] = {}
    survivors: list[int] = []  # indices into docs that passed the exact stage and have words
    kept_flags = [True] * len(docs)
    # Word ids in order of first appearance: deterministic, unlike str hash(), which is salted per process.
    vocab: defaultdict[str, int] = defaultdict(itertools.count().__next__)
    word_ids: list[list[int]] = []
    for i, doc in enumerate(docs):
        words = _WORD.findall(doc.text.casefold())
        if not words:
            continue
        digest = hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).digest()
        first = by_hash.setdefault(digest, i)
        if first != i:
            merged_into[doc.id] = docs[first].id
            kept_flags[i] = False
            continue
        survivors.append(i)
        word_ids.append(list(map(vocab.__getitem__, words)))
    exact = len(merged_into)

    near = 0
    if near_threshold < 1.0 and len(survivors) > 1:
        weights = _mix(np.arange(1, _SHINGLE + 1, dtype=np.uint64))
        sig = _signatures([_shingle_hashes(ids, weights) for ids in word_ids])
        near = _merge_near(docs, survivors, sig, near_threshold, kept_flags, merged_into)

    kept = [doc for doc, keep in zip(docs, kept_flags, strict=True) if keep]
    log.info(
        "clean.dedupe",
        extra={
            "documents": len(docs),
            "kept": len(kept),
            "exact_merged": exact,
            "near_merged": near,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return DedupeResult(kept=kept, exact_merged=exact, near_merged=near, merged_into=merged_into)


def _merge_near(
    docs: Sequence[Document],
    survivors: list[int],
    sig: U64,
    threshold: float,
    kept_flags: list[bool],
    merged_into: dict[str, str],
) -> int:
    """Walk documents in input order; merge each into the earliest kept document it nearly duplicates."""
    bands, rows = _band_shape(threshold)
    band_weights = _mix(np.arange(1, rows + 1, dtype=np.uint64))
    # One 64-bit key per (document, band); a collision only costs a Jaccard check.
    keys = (sig[:, : bands * rows].reshape(len(survivors), bands, rows) * band_weights).sum(
        axis=2, dtype=np.uint64
    )
    key_rows: list[list[int]] = keys.tolist()
    buckets: list[dict[int, list[int]]] = [{} for _ in range(bands)]
    merged = 0
    for row, doc_index in enumerate(survivors):
        candidates: set[int] = set()
        for b, key in enumerate(key_rows[row]):
            candidates.update(buckets[b].get(key, ()))
        if candidates:
            ordered = sorted(candidates)
            similarity = (sig[ordered] == sig[row]).mean(axis=1)
            hits = np.flatnonzero(similarity >= threshold)
            if hits.size:
                target = survivors[ordered[int(hits[0])]]
                merged_into[docs[doc_index].id] = docs[target].id
                kept_flags[doc_index] = False
                merged += 1
                continue
        for b, key in enumerate(key_rows[row]):
            buckets[b].setdefault(key, []).append(row)
    return merged
