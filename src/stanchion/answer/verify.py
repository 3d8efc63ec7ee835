"""Is each sentence of an answer supported by the source it cites? An entailment proxy, no model.

A cited sentence is *supported* when, for at least one source it cites:

1. its text appears verbatim in the source (after lower-casing and dropping punctuation), or
2. all three hold:
   - **meaning**: the embedding cosine between the sentence and the source's best-matching
     window (one sentence, or two adjacent ones, so a claim that merges two sentences still
     matches) is at least ``min_cosine``;
   - **words**: at least ``min_overlap`` of the sentence's distinct content terms (stemmed,
     stop words and citation talk such as "according", "states" removed) occur in the source;
   - **numbers**: every number in the sentence occurs in the source (``5,000`` equals ``5000``).
     Swapped figures are the commonest grounded-looking hallucination, and embeddings barely
     see them.

A sentence that cites nothing is unsupported, unless it is a *connective*: a greeting, a
lead-in ("Here is what the sources say:"), or a sign-off, i.e. no number and no content words
beyond that vocabulary.

The thresholds come from ``bench/verify_study.py`` (``python bench/verify_study.py
../shared/data``): supported claims are MRPC paraphrases and STS-B pairs scored >= 4 (the
source sentence hidden among three other sentences); unsupported claims are MRPC
non-paraphrases, STS-B pairs scored <= 1.5, and COVID-QA answer sentences checked against
another passage of the same article (same topic, different fact); 400 pairs per family. The
score is balanced accuracy: share of supported claims kept, averaged with the mean share
rejected over the three unsupported families. It peaks at 0.831 (cosine 0.30, overlap 0.5) and
stays within 0.005 of that for every cosine from 0.30 to 0.50 at overlap 0.5, so we ship the
strictest cosine on that plateau: 0.50 / 0.5 scores 0.826, keeping 85% of paraphrases and
rejecting 48% of MRPC non-paraphrases, 98% of unrelated pairs and 94% of other passages of the
same article. Overlap matters most: at 0.4 the same cosine keeps 88% of paraphrases but rejects
only 42% / 91% of the hard negatives; at 0.6 it keeps 77%. The number check alone rejects 60% of
the same-article negatives and costs 6% of paraphrases.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stanchion.answer.prompt import CitedSentence, Source, render_sentence, same_passage
from stanchion.core.analyze import terms
from stanchion.core.embed import Embedder, Vectors
from stanchion.core.sentences import line_start, sentence_spans

__all__ = [
    "MIN_COSINE",
    "MIN_OVERLAP",
    "Assembly",
    "Citation",
    "SentenceCheck",
    "Support",
    "Verifier",
    "content_terms",
    "is_connective",
]

# Chosen with bench/verify_study.py; see the module docstring for what they measured.
MIN_COSINE = 0.5
MIN_OVERLAP = 0.5

_CACHE_SIZE = 4096
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W_]+")
# Loaders strip the lines of prose, so a line that starts with spaces or a tab is code.
_INDENTED_LINE = re.compile(r"^[ \t]+\S", re.MULTILINE)
# Words about the act of answering or citing rather than about the subject.
_META = frozenset(
    terms(
        "according source sources state states stated say says said mention mentions mentioned "
        "note notes noted report reports reported indicate indicates indicated show shows shown "
        "describe describes described document documents answer question also however"
    )
)
_CONNECTIVE = frozenset(
    terms(
        "here what sure certainly hello hi hey thanks thank you hope helps help let me know "
        "summary summarize summarise short brief overall conclusion follow following below above "
        "based provided information find found ok okay great good question answer please glad"
    )
)


@dataclass(frozen=True, slots=True)
class Support:
    """How well one source backs one claim."""

    cosine: float
    overlap: float
    numbers_ok: bool
    evidence: str  # the best-matching window of the source
    verbatim: bool = False

    def holds(self, min_cosine: float, min_overlap: float) -> bool:
        return self.verbatim or (
            self.cosine >= min_cosine and self.overlap >= min_overlap and self.numbers_ok
        )


@dataclass(frozen=True, slots=True)
class SentenceCheck:
    sentence: CitedSentence
    supported: bool
    connective: bool = False
    # cited number -> the passage of that source which best matches the sentence
    evidence: Mapping[int, str] | None = None


def content_terms(text: str) -> set[str]:
    return set(terms(text)) - _META


def is_connective(body: str) -> bool:
    """A greeting, lead-in or sign-off, which needs no citation."""
    if not body.strip() or _NUMBER.search(body):
        return False
    words = set(terms(body))
    return not (words - _CONNECTIVE - _META) or (body.rstrip().endswith(":") and len(body.split()) <= 10)


class Verifier:
    """Checks answer sentences against the numbered sources they cite."""

    def __init__(
        self, embedder: Embedder, *, min_cosine: float = MIN_COSINE, min_overlap: float = MIN_OVERLAP
    ) -> None:
        self.embedder = embedder
        self.min_cosine = min_cosine
        self.min_overlap = min_overlap
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()  # answers may be verified from several threads at once

    def check(self, sentences: Sequence[CitedSentence], sources: Mapping[int, str]) -> list[SentenceCheck]:
        with self._lock:
            return self._check(sentences, sources)

    def support(self, claim: str, source: str) -> Support:
        """How well ``source`` supports ``claim`` (used by ``check`` and by the threshold study)."""
        with self._lock:
            return self._support(claim, source)

    def _check(self, sentences: Sequence[CitedSentence], sources: Mapping[int, str]) -> list[SentenceCheck]:
        # One embedding pass for every claim that is not quoted verbatim from a source it cites.
        pending = [
            (s.body, sources[n])
            for s in sentences
            if not any(_verbatim(s.body, sources[n]) for n in s.numbers if n in sources)
            for n in s.numbers
            if n in sources
        ]
        self._embed_missing([t for claim, source in pending for t in (claim, *_windows(source))])
        return [self._check_one(s, sources) for s in sentences]

    def _support(self, claim: str, source: str) -> Support:
        if _verbatim(claim, source):
            return Support(1.0, 1.0, True, claim, verbatim=True)
        windows = _windows(source)
        self._embed_missing([claim, *windows])
        if windows:
            claim_vec = self._vectors[claim]
            sims = np.array([float(self._vectors[w] @ claim_vec) for w in windows])
            best = int(np.argmax(sims))
            cosine, evidence = float(sims[best]), windows[best]
        else:
            cosine, evidence = 0.0, ""
        wanted = content_terms(claim)
        overlap = len(wanted & set(terms(source))) / len(wanted) if wanted else 1.0
        numbers_ok = _numbers(claim) <= _numbers(source)
        return Support(cosine, overlap, numbers_ok, evidence)

    def _check_one(self, sentence: CitedSentence, sources: Mapping[int, str]) -> SentenceCheck:
        cited = [n for n in sentence.numbers if n in sources]
        if not cited:
            connective = is_connective(sentence.body)
            return SentenceCheck(sentence, supported=connective, connective=connective)
        evidence: dict[int, str] = {}
        supported = False
        for n in cited:
            support = self._support(sentence.body, sources[n])
            evidence[n] = support.evidence
            supported = supported or support.holds(self.min_cosine, self.min_overlap)
        return SentenceCheck(sentence, supported=supported, evidence=evidence)

    def _embed_missing(self, texts: Sequence[str]) -> None:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, vector in zip(missing, self._embed(missing), strict=True):
                self._vectors[text] = vector
        for text in texts:
            self._vectors.move_to_end(text)
        while len(self._vectors) > max(_CACHE_SIZE, len(texts)):
            self._vectors.popitem(last=False)

    def _embed(self, texts: Sequence[str]) -> Vectors:
        return self.embedder.embed(texts)


def _windows(source: str) -> list[str]:
    """Every sentence of the source, and every pair of adjacent sentences, as slices of its text:
    a window of code keeps its line breaks and indentation (the embedding sees none of them)."""
    spans = [(line_start(source, a), b) for a, b in sentence_spans(source)]
    pairs = [(a, d) for (a, _), (_, d) in itertools.pairwise(spans)]
    return list(dict.fromkeys(source[a:b] for a, b in (*spans, *pairs)))


def _verbatim(claim: str, source: str) -> bool:
    quoted = _normal(claim)
    return bool(quoted) and quoted in _normal(source)


def _normal(text: str) -> str:
    return " ".join(_WORD.findall(text.casefold()))


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


# --- citing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Citation:
    number: int  # as cited in the final text
    document_id: str
    chunk_id: str
    title: str
    snippet: str  # the passage of the source that best matches the sentence citing it
    path: str = ""
    page: int | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "number": self.number,
            "document_id": self.document_id,
            "chunk_id": self.chunk_id,
            "title": self.title,
            "snippet": self.snippet,
            "path": self.path,
            "page": self.page,
        }


class Assembly:
    """The final text and citations, built from accepted sentences in order.

    Sources are renumbered in order of first citation as sentences arrive, so a stream can send
    each sentence as soon as it is accepted. With ``hold_uncited``, a sentence citing nothing (a
    connective) waits for the next cited sentence and is dropped if none comes.
    """

    def __init__(self, sources: Mapping[int, Source], *, hold_uncited: bool) -> None:
        self.sources = sources
        self.hold_uncited = hold_uncited
        self.renumber: dict[int, int] = {}
        self.parts: list[tuple[str, str]] = []  # (separator, rendered sentence)
        self.accepted: list[SentenceCheck] = []
        self.pending: list[SentenceCheck] = []
        self.snippets: dict[int, str] = {}
        self.cited = 0

    def add(self, check: SentenceCheck) -> str:
        """Accept a sentence; returns the text this adds to the answer ('' while it is held)."""
        numbers = [n for n in check.sentence.numbers if n in self.sources]
        if not numbers and self.hold_uncited:
            self.pending.append(check)
            return ""
        delta = ""
        for item in [*self.pending, check]:
            for n in item.sentence.numbers:
                if n in self.sources and n not in self.renumber:
                    self.renumber[n] = len(self.renumber) + 1
                    self.snippets[n] = _clip((item.evidence or {}).get(n) or self.sources[n].text, 300)
            piece = render_sentence(item.sentence, self.renumber)
            delta += piece if not self.parts else item.sentence.separator + piece
            self.parts.append((item.sentence.separator, piece))
            self.accepted.append(item)
        self.pending.clear()
        self.cited += 1 if numbers else 0
        return delta

    @property
    def text(self) -> str:
        return "".join(piece if i == 0 else sep + piece for i, (sep, piece) in enumerate(self.parts))

    def repeats(self, sentence: CitedSentence) -> bool:
        """Whether an accepted sentence already says this (used when adding a retry's sentences)."""
        return any(same_passage(sentence.body, c.sentence.body) for c in self.accepted)

    def citations(self) -> tuple[Citation, ...]:
        out = []
        for old, new in sorted(self.renumber.items(), key=lambda item: item[1]):
            chunk = self.sources[old].hit.chunk
            page = chunk.metadata.get("page")
            out.append(
                Citation(
                    number=new,
                    document_id=chunk.document_id,
                    chunk_id=chunk.id,
                    title=self.sources[old].title,
                    snippet=self.snippets[old],
                    path=str(chunk.metadata.get("path") or ""),
                    page=page if isinstance(page, int) and not isinstance(page, bool) else None,
                )
            )
        return tuple(out)


def _clip(text: str, limit: int) -> str:
    """A snippet: prose on one line; code (indented lines) as laid out, cut at a line's end."""
    if _INDENTED_LINE.search(text):
        lines = text.strip("\n").rstrip().split("\n")
        n, size = 0, -1
        while n < len(lines) and size + 1 + len(lines[n]) <= limit:
            size += 1 + len(lines[n])
            n += 1
        if n:
            return "\n".join(lines[:n]) + ("\n..." if n < len(lines) else "")
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat.rfind(" ", 0, limit)
    return flat[: cut if cut > 0 else limit] + " ..."
