"""``ExtractiveModel``: answers by quoting the best source sentences. No LLM, no network, no keys.

It reads the numbered sources and the question from the grounding the answer stage puts on the
prompt's user message (``Message.grounding``, never the prompt text), scores every source sentence against the question, and answers
with the best few, each followed by its source number::

    Expenses above $5,000 need the CFO's approval. [2] Smaller amounts are approved by the team lead. [1]

A sentence's score is the embedding cosine with the question, plus the share of the question's
content terms it contains (weighted by how rare each term is among the candidate sentences),
plus a bonus when the question asks for a kind of fact the sentence holds: a number for "how
many/much/long", a date or year for "when". The best sentence is taken if it clears an absolute
floor, otherwise the model abstains with the prompt's abstain text. Further sentences are taken,
best first, while they score within ``relative_threshold`` of the best, say something new (cosine
below ``redundancy`` with every sentence taken) and fit ``max_sentences`` and ``max_words``. The
answer lists them in source order.

Because every sentence is copied from the source it cites, verification always finds it
supported; ``capabilities.extractive`` tells the answerer that a corrective retry would change nothing.
Usage counts words, the only tokenizer-free estimate that is honest about being one.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stanchion.core.analyze import contextual_query, terms
from stanchion.core.embed import Embedder
from stanchion.core.sentences import split_sentences
from stanchion.models.base import BaseChatModel, Capabilities, ChatOptions
from stanchion.types import Completion, GroundingSource, Message, StreamEvent, Usage

__all__ = ["ExtractiveModel", "ScoredSentence"]

_NO_SOURCES = "I could not find this in the sources."
# Words that say what kind of answer is wanted, not what it is about.
_QUESTION_WORDS = frozenset(
    terms(
        "what which who whom whose when where why how do does did can could would should much many kind type"
    )
)
_NUMBER = re.compile(r"\d")
_DATE = re.compile(
    r"\b(1[5-9]\d\d|20\d\d)\b|\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d|"
    r"\b\d{1,2}\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)|\b(monday|tuesday|wednesday|thursday|"
    r"friday|saturday|sunday|yesterday|today|tomorrow)\b",
    re.IGNORECASE,
)
_WANTS_NUMBER = re.compile(
    r"\bhow (many|much|long|old|often|far|large|big|high|frequent)\b|\bwhat (percentage|proportion|"
    r"number|rate|fraction|share|dose|amount|size|length)\b|\bnumber of\b",
    re.IGNORECASE,
)
# A bullet or numbered item.
_LIST_ITEM = re.compile(r"[-*+\u2022]\s|\d{1,3}[.)]\s")
_WANTS_DATE = re.compile(r"\bwhen\b|\bwhat (year|date|month|day|time)\b|\bwhich (year|date|month)\b", re.I)


@dataclass(frozen=True, slots=True)
class ScoredSentence:
    source: int
    position: int
    text: str
    score: float
    cosine: float
    lexical: float
    vector: npt.NDArray[np.float32] = field(repr=False, compare=False)


class ExtractiveModel(BaseChatModel):
    """A ChatModel that answers from the prompt's sources by sentence selection."""

    capabilities = Capabilities(extractive=True)

    def __init__(
        self,
        embedder: Embedder,
        name: str = "extractive",
        *,
        max_sentences: int = 3,
        max_words: int = 80,
        relative_threshold: float = 0.8,
        redundancy: float = 0.85,
        min_score: float = 0.75,
        min_cosine: float = 0.3,
        lexical_weight: float = 1.0,
        type_bonus: float = 0.1,
    ) -> None:
        self._embedder = embedder
        self._name = name
        self.max_sentences = max_sentences
        self.max_words = max_words
        self.relative_threshold = relative_threshold
        self.redundancy = redundancy
        self.min_score = min_score
        self.min_cosine = min_cosine
        self.lexical_weight = lexical_weight
        self.type_bonus = type_bonus

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        pieces = await asyncio.to_thread(self.answer_pieces, messages)
        text = " ".join(pieces)
        return Completion(text=text, model=self._name, usage=_usage(messages, text))

    async def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        pieces = await asyncio.to_thread(self.answer_pieces, messages)
        for i, piece in enumerate(pieces):
            yield StreamEvent(text=piece if i == 0 else f" {piece}", model=self._name)
        yield StreamEvent(usage=_usage(messages, " ".join(pieces)), finish_reason="stop", model=self._name)

    def answer_pieces(self, messages: Sequence[Message]) -> list[str]:
        """The answer as its sentences, each ``"sentence [n]"``; or the abstain text alone."""
        prompt = next(
            (m.grounding for m in reversed(messages) if m.role == "user" and m.grounding is not None), None
        )
        if prompt is None:
            return [_NO_SOURCES]
        # In a chat, a follow-up ("and is it paid?") is read in the light of the question before it.
        context = contextual_query(prompt.previous_question, prompt.question)
        chosen = self.select(prompt.question, prompt.sources, context=context)
        if not chosen:
            return [prompt.abstain_text or _NO_SOURCES]
        return [f"{_as_sentence(s.text)} [{s.source}]" for s in chosen]

    def select(
        self, question: str, sources: Sequence[GroundingSource], *, context: str = ""
    ) -> list[ScoredSentence]:
        """The sentences that answer ``question``, in source order; empty when none is good enough."""
        scored = self.score(question, sources, context=context)
        if not scored:
            return []
        ranked = sorted(scored, key=lambda s: -s.score)
        best = ranked[0]
        if best.score < self.min_score or best.cosine < self.min_cosine:
            return []
        taken = [best]
        words = len(best.text.split())
        for candidate in ranked[1:]:
            if len(taken) >= self.max_sentences or candidate.score < self.relative_threshold * best.score:
                break
            size = len(candidate.text.split())
            if words + size > self.max_words:
                continue
            if any(float(candidate.vector @ t.vector) >= self.redundancy for t in taken):
                continue
            taken.append(candidate)
            words += size
        return sorted(taken, key=lambda s: (s.source, s.position))

    def score(
        self, question: str, sources: Sequence[GroundingSource], *, context: str = ""
    ) -> list[ScoredSentence]:
        """Every candidate sentence, scored. ``context`` (a follow-up with the question before it)
        is what the embedding compares with; the words still come from ``question`` itself."""
        candidates: list[tuple[int, int, str]] = []
        readings: list[str] = []  # what is scored: a list item with the line that introduces it
        for source in sources:
            for position, sentence, reading in _readings(source.text):
                candidates.append((source.number, position, sentence))
                readings.append(reading)
        if not candidates:
            return []
        vectors = self._embedder.embed([context or question, *readings])
        cosines = vectors[1:] @ vectors[0]
        sentence_terms = [set(terms(text)) for text in readings]
        wanted = [t for t in dict.fromkeys(terms(question)) if t not in _QUESTION_WORDS] or [
            t for t in dict.fromkeys(terms(context)) if t not in _QUESTION_WORDS
        ]
        df = Counter(t for ts in sentence_terms for t in ts if t in wanted)
        idf = {t: math.log(1 + len(candidates) / (1 + df[t])) for t in wanted}
        total = sum(idf.values())
        check_number = _WANTS_NUMBER.search(question) is not None
        check_date = _WANTS_DATE.search(question) is not None
        out: list[ScoredSentence] = []
        for (number, position, text), cosine, ts, vector in zip(
            candidates, cosines, sentence_terms, vectors[1:], strict=True
        ):
            lexical = sum(idf[t] for t in wanted if t in ts) / total if total else 0.0
            bonus = 0.0
            if (check_number and _NUMBER.search(text)) or (check_date and _DATE.search(text)):
                bonus = self.type_bonus
            score = float(cosine) + self.lexical_weight * lexical + bonus
            out.append(ScoredSentence(number, position, text, score, float(cosine), lexical, vector))
        return out


def _as_sentence(text: str) -> str:
    """One line, ending in a full stop (a line cut at a comma still reads as a sentence)."""
    flat = " ".join(text.split()).rstrip(",;:")
    return flat if flat.endswith((".", "!", "?", "\u2026", '"', "'", ")")) else f"{flat}."


def _usage(messages: Sequence[Message], text: str) -> Usage:
    return Usage(input_tokens=sum(len(m.content.split()) for m in messages), output_tokens=len(text.split()))


def _readings(text: str) -> Iterator[tuple[int, str, str]]:
    """(position, sentence, reading) of one source's candidate sentences; a list item is read with
    the line that introduces it, since "Summary of the lanes (FTL):" says what its figures are."""
    lead_in = ""
    for position, sentence in enumerate(split_sentences(text)):
        item = _LIST_ITEM.match(sentence) is not None
        if not item:
            lead_in = sentence if sentence.endswith(":") else ""
        # A question in a source ("How many days do we get?") restates, it does not answer.
        if len(sentence.split()) < 3 or not any(c.isalpha() for c in sentence) or sentence.endswith("?"):
            continue
        yield position, sentence, f"{lead_in} {sentence}" if item and lead_in else sentence
