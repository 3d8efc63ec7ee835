"""Cross-page and cross-document cleaning: running headers and duplicate documents."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from stanchion.ingest.clean import DedupeResult, dedupe_documents, strip_repeated_lines
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.beir import load_beir
from stanchion.types import Document


def _pages(n: int, header: str = "ACME Handbook", body: str = "Body of page {n}: topic {word}.") -> list[str]:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    return [f"{header}\n{body.format(n=i, word=words[i % 8])}\nPage {i} of {n}" for i in range(1, n + 1)]


class TestStripRepeatedLines:
    """Running headers and footers go; body text stays."""

    def test_header_and_page_numbers_removed(self) -> None:
        """A constant header and "Page N of M" footers match across pages once numbers are masked."""
        out = strip_repeated_lines(_pages(5))
        assert out[0] == "Body of page 1: topic bravo."
        assert all("ACME Handbook" not in page and "Page" not in page for page in out)

    def test_too_few_pages(self) -> None:
        """Below min_pages nothing counts as repeated."""
        pages = _pages(2)
        assert strip_repeated_lines(pages) == pages

    def test_below_share_is_kept(self) -> None:
        """A line on 2 of 6 pages is under the default 50% share."""
        pages = [f"Intro to {w}\nunique text on {w}" for w in ("ant", "bee", "cat", "dog", "eel", "fox")]
        pages[0] += "\nSee also the appendix"
        pages[3] += "\nSee also the appendix"
        assert strip_repeated_lines(pages) == pages

    def test_roman_and_arabic_page_numbers_match(self) -> None:
        """Front-matter pages ("Guide xii") and body pages ("Guide 12/40") share one header."""
        words = ("ant", "bee", "cat", "dog")
        pages = [
            f"Guide {n}\nText on {w}.\nMore {w}"
            for n, w in zip(["xi", "xii", "3/40", "4/40"], words, strict=True)
        ]
        out = strip_repeated_lines(pages)
        assert out == [f"Text on {w}.\nMore {w}" for w in words]

    def test_numbered_footer_needs_only_min_pages(self) -> None:
        """A footer carrying a page number ("12 Chapter 2. Setup") repeats within a chapter only."""
        pages = [f"Text {i} alpha.\n{i} Chapter 2. Setup" for i in range(3)]
        pages += [f"Text {i} bravo.\n{i} Chapter 3. Usage" for i in range(3, 10)]
        out = strip_repeated_lines(pages)
        assert all("Chapter" not in page for page in out)

    def test_body_lines_are_never_candidates(self) -> None:
        """A line repeated in the middle of long pages (a closing brace) is not a header."""
        body = "\n".join(
            f"line {w}" for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")
        )
        pages = [f"Head {i}\n{body}\n}}\n{body}\nFoot {i}" for i in range(4)]
        assert all("}" in page for page in strip_repeated_lines(pages))


def _doc(doc_id: str, text: str) -> Document:
    return Document(id=doc_id, text=text, source="s")


def _prose(seed: int, words: int = 300) -> str:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    return " ".join(rng.choice(vocab) for _ in range(words))


class TestDedupe:
    """Exact and MinHash near-duplicate detection, first document wins."""

    def test_exact_duplicate(self) -> None:
        """Same words, different spacing/case/punctuation: merged into the first."""
        docs = [_doc("a", "Hello, World!\nThis is it."), _doc("b", "hello world this   is it")]
        result = dedupe_documents(docs)
        assert [d.id for d in result.kept] == ["a"]
        assert result.exact_merged == 1 and result.near_merged == 0
        assert result.merged_into == {"b": "a"}

    def test_near_duplicate_one_word_changed(self) -> None:
        """One word changed in 300 (Jaccard of 5-shingles 0.97) is a near duplicate; other texts stay."""
        base = _prose(1)
        words = base.split()
        words[150] = "changed"
        docs = [_doc("a", base), _doc("other", _prose(2)), _doc("b", " ".join(words))]
        result = dedupe_documents(docs)
        assert [d.id for d in result.kept] == ["a", "other"]
        assert result.near_merged == 1
        assert result.merged_into == {"b": "a"}

    def test_threshold_is_respected(self) -> None:
        """Half the text rewritten is below 0.9 but above 0.3 estimated Jaccard."""
        base = _prose(3).split()
        half = base[:150] + _prose(4).split()[150:]
        docs = [_doc("a", " ".join(base)), _doc("b", " ".join(half))]
        assert len(dedupe_documents(docs).kept) == 2
        assert len(dedupe_documents(docs, near_threshold=0.5).kept) == 2
        assert dedupe_documents(docs, near_threshold=0.1).near_merged == 1

    def test_deterministic_and_empty_texts_kept(self) -> None:
        """Two runs agree exactly; documents without words are never merged."""
        docs = [_doc(str(i), _prose(i % 7)) for i in range(30)] + [_doc("e1", ""), _doc("e2", "  ")]
        first, second = dedupe_documents(docs), dedupe_documents(docs)
        assert first == second
        assert {"e1", "e2"} <= {d.id for d in first.kept}
        assert len(first.kept) == 7 + 2

    def test_result_is_frozen(self) -> None:
        """DedupeResult is an immutable value."""
        result = dedupe_documents([_doc("a", "x")])
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.near_merged = 3  # type: ignore[misc]
        assert isinstance(result, DedupeResult)

    def test_scifact_edited_copies(self, shared_data: Path) -> None:
        """5,183 abstracts plus 200 one-word edits: the edited copies are found and merged.

        An edited copy should be found when the exact Jaccard of its 5-shingles is >= 0.95; the
        MinHash estimate has a standard error of about 0.02 there, so a rare miss is allowed.
        """
        ctx = LoadContext(source="scifact", relpath="corpus.jsonl")
        docs = list(load_beir(shared_data / "beir-scifact" / "corpus.jsonl", ctx))
        copies = [_doc(f"copy{i}", _edit(d.text)) for i, d in enumerate(docs[:200])]
        result = dedupe_documents(docs + copies)
        assert {d.id for d in docs} <= {d.id for d in result.kept}  # SciFact itself has no duplicates
        assert set(result.merged_into) <= {c.id for c in copies}
        findable = {c.id for c, d in zip(copies, docs[:200], strict=True) if _jaccard(c.text, d.text) >= 0.95}
        assert len(findable) > 50
        assert len(findable & set(result.merged_into)) >= 0.97 * len(findable)
        assert all(
            result.merged_into[c.id] == d.id
            for c, d in zip(copies, docs[:200], strict=True)
            if c.id in findable & set(result.merged_into)
        )


def _edit(text: str) -> str:
    """Replace one word in the middle of a text."""
    words = text.split(" ")
    words[len(words) // 2] = "edited"
    return " ".join(words)


def _jaccard(a: str, b: str) -> float:
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = text.lower().split()
        return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)
