"""``ExtractiveModel``: answers by quoting the source passage that answers. No LLM, no network, no keys.

It reads the numbered sources and the question from the grounding the answer stage puts on the
prompt's user message (``Message.grounding``, never the prompt text), and answers with one
passage quoted from them, each piece followed by its source number::

    Expenses above $5,000 need the CFO's approval. [2] Smaller amounts are approved by the team lead. [2]

**Pieces.** A source is cut into the pieces an answer may quote (``quote_spans``): sentences, and
each code block whole (a command line, a configuration file, a fenced block), since half a
command is a wrong answer. A code block is quoted as a fenced block; a list item is read with the
line that introduces it ("Summary of the lanes (FTL):"), a code block with the sentence before it
("... restarted with either of the following commands:"), a sentence whose first words lean on
the one before ("To modify it, use ...") with that one. Headings (a short line of its own without
a full stop: "Root cause") and cross-references ("Example: INC-2291 (...)") are never answers;
a heading is read with every piece under it.

**Scores.** A piece's score is the embedding cosine with the question, plus the share of the
question's content terms it holds (each weighted by how rare it is among the candidate pieces),
plus a bonus when the question asks for a kind of fact the piece holds: a number for "how
many/much/long", a date or year for "when", a code block or a command named in prose ("use the
dpkg-reconfigure tzdata command", "run atrm", an option such as "-l", a file such as
/etc/modules) for "how do I ...", a cause ("because", "so every pod ...", under "Root cause")
for "why" and "what caused".

**Selection.** The best piece is the *anchor*; below an absolute floor the model abstains with
the prompt's abstain text. When the question asks for a kind of fact and the best piece lacks it,
the best piece holding it anchors instead if it scores within ``kind_margin`` of the best (for a
cause, any in the best piece's passage: the best one often restates the event asked about). A
list is quoted as a list: its intro line never alone, and for a how-to or why question an item
comes with its intro and the other items. The answer then grows around the anchor *inside its
own passage*:

1. a code block that the anchor introduces, or the sentence that introduces an anchor that is
   code ("This can be done with the following command:" and its command come together);
2. an adjacent piece of the same paragraph while it scores within ``relative_threshold`` of the
   anchor (a contiguous span reads as one answer; sentences picked from all over a long document,
   that share words with the question but not its subject, do not).

A piece from elsewhere (another paragraph or source) is added only while the answer is not yet
complete (it lacks a question term that piece holds, or the kind of fact asked for) and only if it
scores within ``far_threshold`` of the best piece and is not a near-repeat (cosine ``redundancy``).
Everything stays within ``max_sentences`` pieces and ``max_words`` words of prose. The answer lists
the pieces in source order.

Because every piece is copied from the source it cites, verification always finds it supported;
``capabilities.extractive`` tells the answerer that a corrective retry would change nothing.
Usage counts words, the only tokenizer-free estimate that is honest about being one.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stanchion.core.analyze import contextual_query, terms
from stanchion.core.embed import Embedder
from stanchion.models.base import BaseChatModel, Capabilities, ChatOptions
from stanchion.models.extractive_pieces import LIST_ITEM, SourcePiece, refers_back, source_pieces
from stanchion.types import Completion, GroundingSource, Message, StreamEvent, Usage

__all__ = ["ExtractiveModel", "ScoredSentence", "SourcePiece", "source_pieces"]

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
_WANTS_DATE = re.compile(r"\bwhen\b|\bwhat (year|date|month|day|time)\b|\bwhich (year|date|month)\b", re.I)
# "How do I ...", "how to ...", "what command ...": a procedure, often a command.
_WANTS_STEPS = re.compile(
    r"^\W*how (do|can|could|should|would|may|might) (i|you|we|one)\b|^\W*how to\b|"
    r"\b(what|which) (command|option|file|setting|package)\b",
    re.IGNORECASE,
)
# What says how to do something in prose: a command named or run, an option ("-l", "--purge"),
# a file to edit ("add them to /etc/modules").
_COMMAND_CUE = re.compile(
    r"\b(commands?|run|running|use|using|execute|executing|invoke|type)\b|(?<=\s)--?[a-zA-Z][\w-]*\b|"
    r"(?<![\w/])/[a-z][\w.-]*/[\w./-]*\w",
    re.IGNORECASE,
)
# "Why ...", "what caused ...": a cause or a reason.
_WANTS_CAUSE = re.compile(
    r"\bwhy\b|\bwhat (caused|causes|cause[sd]?|led to|was behind)\b|\b(the )?(root )?(cause|reason)s? "
    r"(of|for|why|behind)\b|\bhow come\b",
    re.IGNORECASE,
)
# What states a cause: "because", "due to", "caused by", "..., so every pod ran out", a reason.
_CAUSE_CUE = re.compile(
    r"\b(because|due to|owing to|caused|causes|cause|causing|reasons?|as a result|resulted|results? in|"
    r"led to|leads? to|triggered)\b|, so\b",
    re.IGNORECASE,
)
# "Example: INC-2291 (Waypoint dispatch outage, August 19, 2025)": a label and a name, no statement.
_FENCE = re.compile(r"^\s*(```|~~~)")
_MAX_CODE_LINES = 16  # a longer code block (a command and pages of its output) is quoted up to here


@dataclass(frozen=True, slots=True)
class ScoredSentence:
    """A candidate piece, scored against the question."""

    source: int
    position: int
    text: str
    score: float
    cosine: float
    lexical: float
    vector: npt.NDArray[np.float32] = field(repr=False, compare=False)
    code: bool = False
    paragraph: int = 0
    item: bool = False
    of_kind: bool = False  # holds the kind of fact the question asks for (a number, a command, ...)


class ExtractiveModel(BaseChatModel):
    """A ChatModel that answers from the prompt's sources by quoting a passage; see the module docstring."""

    capabilities = Capabilities(extractive=True)

    def __init__(
        self,
        embedder: Embedder,
        name: str = "extractive",
        *,
        max_sentences: int = 3,
        max_words: int = 80,
        relative_threshold: float = 0.7,
        far_threshold: float = 0.9,
        redundancy: float = 0.85,
        min_score: float = 0.75,
        min_cosine: float = 0.3,
        lexical_weight: float = 1.0,
        type_bonus: float = 0.1,
        kind_margin: float = 0.6,
    ) -> None:
        self._embedder = embedder
        self._name = name
        self.max_sentences = max_sentences
        self.max_words = max_words
        self.relative_threshold = relative_threshold
        self.far_threshold = far_threshold
        self.redundancy = redundancy
        self.min_score = min_score
        self.min_cosine = min_cosine
        self.lexical_weight = lexical_weight
        self.type_bonus = type_bonus
        self.kind_margin = kind_margin

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        pieces = await asyncio.to_thread(self.answer_pieces, messages)
        text = "".join(_joined(pieces))
        return Completion(text=text, model=self._name, usage=_usage(messages, text))

    async def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        pieces = await asyncio.to_thread(self.answer_pieces, messages)
        for delta in _joined(pieces):
            yield StreamEvent(text=delta, model=self._name)
        yield StreamEvent(
            usage=_usage(messages, "".join(_joined(pieces))), finish_reason="stop", model=self._name
        )

    def answer_pieces(self, messages: Sequence[Message]) -> list[str]:
        """The answer as its pieces, each ``"sentence [n]"`` or a fenced code block then ``[n]``;
        or the abstain text alone."""
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
        out: list[str] = []
        for i, s in enumerate(chosen):
            listed = i + 1 < len(chosen) and chosen[i + 1].item and s.text.rstrip().endswith(":")
            if s.code:
                out.append(f"{_as_code(s.text)}\n[{s.source}]")
            elif listed:  # a list's intro keeps its colon
                out.append(f"{' '.join(s.text.split())} [{s.source}]")
            else:
                out.append(f"{_as_sentence(s.text)} [{s.source}]")
        return out

    def select(
        self, question: str, sources: Sequence[GroundingSource], *, context: str = ""
    ) -> list[ScoredSentence]:
        """The pieces that answer ``question``, in source order; empty when none is good enough."""
        scored = self.score(question, sources, context=context)
        if not scored:
            return []
        ranked = sorted(scored, key=lambda s: -s.score)
        best = ranked[0]
        if best.score < self.min_score or best.cosine < self.min_cosine:
            return []
        # The question asks for a kind of fact (a cause, a command, a number, a date): the anchor
        # holds it when a piece that does scores within ``kind_margin`` of the best. A cause
        # question's best piece often restates the event asked about ("On Tuesday the API
        # failed"); a cause stated in the same passage answers it, however it scores.
        if not best.of_kind:
            holder = next((s for s in ranked if s.of_kind), None)
            same = next((s for s in ranked if s.of_kind and s.source == best.source), None)
            if same is not None and _wants_cause(question):
                best = same
            elif holder is not None and holder.score >= self.kind_margin * best.score:
                best = holder
        at = {(s.source, s.position): s for s in scored}
        taken = [best]
        # 1. The code block the anchor introduces, or the sentence that introduces an anchor of code.
        if best.code:
            intro = at.get((best.source, best.position - 1))
            if intro is not None and not intro.code and _introduces(intro.text):
                taken.append(intro)
        else:
            follow = at.get((best.source, best.position + 1))
            if follow is not None and follow.code and (_introduces(best.text) or _wants_steps(question)):
                taken.append(follow)
        # A list is quoted as a list: a line that introduces one ("We decided to migrate for four
        # reasons:") is no answer alone, and an item answering how to do something or why is read
        # with its intro and the other items (steps, reasons); each item's first line, in order,
        # as many as fit. An item answering a lookup ("the rate to Lyon") stands alone.
        intro = _list_intro(best, scored)
        if intro is not None and (best is intro or _wants_steps(question) or _wants_cause(question)):
            taken = [intro] if best is intro else [intro, best]
            for item in _list_items(intro, scored):
                if item not in taken and self._fits(taken, item):
                    taken.append(item)
        # A sentence that refers back ("This command ...", "It ...") is read with the one before it.
        first = min(taken, key=lambda t: t.position)
        before = at.get((best.source, first.position - 1))
        if refers_back(first.text) and before is not None and before.paragraph == first.paragraph:
            taken.append(before)
        # A how-to answer without a command takes the adjacent piece of its paragraph that names one.
        if _wants_steps(question) and not any(t.code or _COMMAND_CUE.search(t.text) for t in taken):
            lo, hi = min(t.position for t in taken), max(t.position for t in taken)
            for near in (at.get((best.source, hi + 1)), at.get((best.source, lo - 1))):
                if near is not None and near.paragraph == best.paragraph and _COMMAND_CUE.search(near.text):
                    taken.append(near)
                    break
        # 2. Adjacent pieces of the anchor's paragraph, while they score near the anchor.
        grew = True
        while grew and len(taken) < self.max_sentences:
            grew = False
            lo = min(s.position for s in taken if s.source == best.source)
            hi = max(s.position for s in taken if s.source == best.source)
            for neighbour in (at.get((best.source, lo - 1)), at.get((best.source, hi + 1))):
                if (
                    neighbour is not None
                    and neighbour.paragraph == best.paragraph
                    and neighbour.score >= self.relative_threshold * best.score
                    and self._fits(taken, neighbour)
                    and not self._repeats(taken, neighbour)
                ):
                    taken.append(neighbour)
                    grew = True
                    break
        # 3. Elsewhere, only what completes the answer.
        wanted = _wanted_terms(question, context)
        for candidate in ranked:
            if len(taken) >= self.max_sentences or candidate.score < self.far_threshold * ranked[0].score:
                break
            if candidate in taken or not self._fits(taken, candidate):
                continue
            if self._repeats(taken, candidate) or not self._adds(question, wanted, taken, candidate):
                continue
            taken.append(candidate)
        return sorted(taken, key=lambda s: (s.source, s.position))

    def score(
        self, question: str, sources: Sequence[GroundingSource], *, context: str = ""
    ) -> list[ScoredSentence]:
        """Every candidate piece, scored. ``context`` (a follow-up with the question before it)
        is what the embedding compares with; the words still come from ``question`` itself."""
        candidates: list[tuple[int, SourcePiece]] = []
        for source in sources:
            for piece in source_pieces(source.text):
                if _candidate(piece):
                    candidates.append((source.number, piece))
        if not candidates:
            return []
        readings = [piece.reading for _, piece in candidates]
        vectors = self._embedder.embed([context or question, *readings])
        cosines = vectors[1:] @ vectors[0]
        piece_terms = [set(terms(text)) for text in readings]
        wanted = _wanted_terms(question, context)
        df = Counter(t for ts in piece_terms for t in ts if t in wanted)
        idf = {t: math.log(1 + len(candidates) / (1 + df[t])) for t in wanted}
        total = sum(idf.values())
        check_number = _WANTS_NUMBER.search(question) is not None
        check_date = _WANTS_DATE.search(question) is not None
        check_steps = _wants_steps(question)
        check_cause = _wants_cause(question)
        out: list[ScoredSentence] = []
        for (number, piece), cosine, ts, vector in zip(
            candidates, cosines, piece_terms, vectors[1:], strict=True
        ):
            lexical = sum(idf[t] for t in wanted if t in ts) / total if total else 0.0
            text = piece.text
            bonus = 0.0
            if (
                (check_number and _NUMBER.search(text))
                or (check_date and _DATE.search(text))
                or (check_steps and (piece.code or _COMMAND_CUE.search(text)))
                or (check_cause and _CAUSE_CUE.search(piece.reading))
            ):
                bonus = self.type_bonus
            score = float(cosine) + self.lexical_weight * lexical + bonus
            out.append(
                ScoredSentence(
                    number,
                    piece.position,
                    text,
                    score,
                    float(cosine),
                    lexical,
                    vector,
                    piece.code,
                    piece.paragraph,
                    piece.item,
                    bonus > 0,
                )
            )
        return out

    def _repeats(self, taken: Sequence[ScoredSentence], candidate: ScoredSentence) -> bool:
        """Whether ``candidate`` says what a taken piece says (cosine ``redundancy`` or more)."""
        return any(float(candidate.vector @ t.vector) >= self.redundancy for t in taken)

    def _fits(self, taken: Sequence[ScoredSentence], candidate: ScoredSentence) -> bool:
        """Within ``max_words`` of prose (a code block counts as its first line)."""
        return sum(_words(s) for s in taken) + _words(candidate) <= self.max_words

    def _adds(
        self, question: str, wanted: Sequence[str], taken: Sequence[ScoredSentence], candidate: ScoredSentence
    ) -> bool:
        """Whether ``candidate`` completes the answer: it holds a question term the answer lacks,
        or the kind of fact asked for (a number, a date, a command) that the answer lacks."""
        have = set(terms(" ".join(s.text for s in taken)))
        offered = set(terms(candidate.text))
        if any(t in offered and t not in have for t in wanted):
            return True
        if _WANTS_NUMBER.search(question) and not any(_NUMBER.search(s.text) for s in taken):
            return _NUMBER.search(candidate.text) is not None
        if _WANTS_DATE.search(question) and not any(_DATE.search(s.text) for s in taken):
            return _DATE.search(candidate.text) is not None
        if _wants_steps(question) and not any(s.code for s in taken):
            return candidate.code
        return False


def _candidate(piece: SourcePiece) -> bool:
    if piece.heading:
        return False
    if piece.code:
        return any(c.isalpha() for c in piece.text)
    # A question in a source ("How many days do we get?") restates, it does not answer.
    text = piece.text
    return len(text.split()) >= 3 and any(c.isalpha() for c in text) and not text.endswith("?")


def _list_intro(piece: ScoredSentence, scored: Sequence[ScoredSentence]) -> ScoredSentence | None:
    """The line ending in ":" that introduces the list ``piece`` opens or belongs to, if any."""
    if piece.code:
        return None
    if piece.text.rstrip().endswith(":"):
        return piece if _list_items(piece, scored) else None
    if not piece.item:
        return None
    before = [
        s
        for s in scored
        if s.source == piece.source and s.position < piece.position and s.paragraph >= piece.paragraph - 1
    ]
    for s in sorted(before, key=lambda s: -s.position):
        if s.text.rstrip().endswith(":") and not s.code:
            return s if piece in _list_items(s, scored) else None
        if s.paragraph < piece.paragraph and not s.item:
            return None
    return None


def _list_items(intro: ScoredSentence, scored: Sequence[ScoredSentence]) -> list[ScoredSentence]:
    """The items of the list right after ``intro``: in its paragraph or the next, before any other
    line that introduces something."""
    items: list[ScoredSentence] = []
    for s in sorted(scored, key=lambda s: s.position):
        if s.source != intro.source or s.position <= intro.position:
            continue
        if s.paragraph > intro.paragraph + 1 or (not s.item and s.text.rstrip().endswith(":")):
            break
        if s.item:
            items.append(s)
    return items


def _introduces(text: str) -> bool:
    """A sentence that leads into what follows it ("... with the following commands:")."""
    return (
        text.rstrip().endswith(":")
        or re.search(r"\b(following|below|example|as follows)\b", text, re.I) is not None
    )


def _wants_steps(question: str) -> bool:
    return _WANTS_STEPS.search(question) is not None


def _wants_cause(question: str) -> bool:
    return _WANTS_CAUSE.search(question) is not None


def _wanted_terms(question: str, context: str) -> list[str]:
    return [t for t in dict.fromkeys(terms(question)) if t not in _QUESTION_WORDS] or [
        t for t in dict.fromkeys(terms(context)) if t not in _QUESTION_WORDS
    ]


def _words(piece: ScoredSentence) -> int:
    return len(piece.text.split("\n", 1)[0].split()) if piece.code else len(piece.text.split())


def _as_code(text: str) -> str:
    """A code block as a fenced block, its first ``_MAX_CODE_LINES`` lines as they are."""
    lines = text.rstrip().split("\n")
    if _FENCE.match(lines[0]):
        return text.rstrip()
    body = "\n".join(lines[:_MAX_CODE_LINES]) + ("\n..." if len(lines) > _MAX_CODE_LINES else "")
    return f"```\n{body}\n```"


def _as_sentence(text: str) -> str:
    """One line, ending in a full stop (a line cut at a comma still reads as a sentence)."""
    flat = " ".join(text.split()).rstrip(",;:")
    return flat if flat.endswith((".", "!", "?", "\u2026", '"', "'", ")")) else f"{flat}."


def _joined(pieces: Sequence[str]) -> list[str]:
    """The pieces as they are sent, each with what separates it from the one before: a code block
    stands in a paragraph of its own, a list item on a line of its own."""
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if i == 0:
            out.append(piece)
        elif _FENCE.match(piece) or _FENCE.match(pieces[i - 1]):
            out.append(f"\n\n{piece}")
        elif LIST_ITEM.match(piece):  # a list item on a line of its own
            out.append(f"\n{piece}")
        else:
            out.append(f" {piece}")
    return out


def _usage(messages: Sequence[Message], text: str) -> Usage:
    return Usage(input_tokens=sum(len(m.content.split()) for m in messages), output_tokens=len(text.split()))
