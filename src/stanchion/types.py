"""Frozen value types shared by every stage: Document -> Chunk -> Hit."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# Metadata values must survive a JSON round trip through every store backend.
MetaValue = str | int | float | bool | None | list[str]
Metadata = Mapping[str, Any]

# The metadata key holding a document's tenant. The pipeline stamps it from the source spec and the
# server ANDs a condition on it into every search, so one tenant never retrieves another's chunks.
TENANT_KEY = "tenant"
DEFAULT_TENANT = "default"

# How a keyword ranking and a vector ranking become one (``stanchion.retrieve.fusion``); named here
# so the spec can name a method without importing retrieval.
Fusion = Literal["rrf", "minmax", "zscore", "dbsf", "weighted"]


def content_hash(text: str) -> str:
    """Stable hash of a piece of text, used for change detection and the embedding cache."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable(text: str) -> str:
    """Why no store can hold ``text``, or "" when one can. The one rule for text taken from
    outside (API parameters, filters, messages): no NUL character (PostgreSQL text cannot hold
    one) and no lone surrogate (half of a UTF-16 pair: not Unicode text, it has no UTF-8)."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return ""
    if found.group() == "\x00":
        return "holds a NUL character (\\u0000)"
    return _SURROGATE_PROBLEM


_SURROGATE_PROBLEM = "holds a lone surrogate (half of a UTF-16 pair), which is not text"


def unsendable(text: str) -> str:
    """Why ``text`` cannot be sent to a provider (JSON in UTF-8), or "": a lone surrogate. Unlike
    ``unstorable``, a NUL is fine here (JSON spells it ``\\u0000``): for text sent, never stored."""
    return _SURROGATE_PROBLEM if _LONE_SURROGATE.search(text) else ""


@dataclass(frozen=True, slots=True)
class Section:
    """A structural unit of a document: a wiki section, a PDF page, a chat message, an email body.

    Chunkers keep sections apart where they can, so a heading path or page number in a chunk's
    metadata is exact rather than guessed.
    """

    text: str
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Document:
    """A clean document produced by a loader.

    ``id`` is stable across runs (derived from the source name and the document's place in it),
    which is what makes ingestion incremental. ``sections`` carries structure; when a loader has
    none, the whole ``text`` is one section.
    """

    id: str
    text: str
    title: str = ""
    source: str = ""
    path: str = ""
    metadata: Metadata = field(default_factory=dict)
    access_groups: tuple[str, ...] = ()
    sections: tuple[Section, ...] = ()

    @property
    def parts(self) -> tuple[Section, ...]:
        """The sections, or the whole text as one section."""
        return self.sections or (Section(self.text),)

    @property
    def hash(self) -> str:
        """Changes when anything indexed about the document changes (text, title, metadata, ACL)."""
        meta = json.dumps(dict(self.metadata), sort_keys=True, default=str)
        return content_hash("\x00".join((self.title, self.text, meta, "\x1f".join(self.access_groups))))


@dataclass(frozen=True, slots=True)
class InjectionMark:
    """What the prompt-injection check found on a chunk (``guards.sources``): ``reasons``, the
    rules that matched (flagged when there is any), and ``score``, the classifier's probability on
    the chunk's vector (at least 0.95 when a rule matched), kept for information: fit on prompts,
    it flags about half of plain documents, so it decides nothing for sources. Kept in columns of
    the store of its own, never in metadata, so no document or filter can write or hide it."""

    score: float
    reasons: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable piece of a document, with the metadata filters and citations need.
    ``injection``: the prompt-injection check's finding at ingestion; None for a chunk indexed
    before the check existed (it is checked when retrieved)."""

    id: str
    document_id: str
    text: str
    position: int
    metadata: Metadata = field(default_factory=dict)
    access_groups: tuple[str, ...] = ()
    injection: InjectionMark | None = None

    @property
    def hash(self) -> str:
        return content_hash(self.text)


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk returned by a search, with its fused score and the per-retriever evidence."""

    chunk: Chunk
    score: float
    rank: int
    scores: Mapping[str, float] = field(default_factory=dict)


# --- chat -----------------------------------------------------------------------------------------

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for; ``arguments`` is the parsed JSON object.

    ``raw_arguments`` keeps the arguments exactly as a client sent them back in a conversation
    (OpenAI treats them as an opaque string, and models do emit broken JSON), so a gateway
    forwards them unchanged. From a model: empty, unless its arguments were not a JSON object
    (``arguments`` is then empty and the call's tool answers with an error the model can correct).
    """

    id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    raw_arguments: str = ""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered to the model: name, what it does, and its JSON-schema parameters."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class GroundingSource:
    """One numbered source of a grounded prompt, as the model is shown it."""

    number: int
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class Grounding:
    """What a grounded prompt asks, in structure: the question, the numbered sources, the sentence
    to reply with when they do not answer, a correction note on a retry, and the previous question
    of a chat. The answer stage writes it beside the prompt text it renders from the same parts
    (``Message.grounding``), so a model that answers from the sources (the extractive one) reads
    them here and never parses the prompt. A stage that rewrites a prompt's text (masking, say)
    rewrites this too."""

    question: str
    sources: tuple[GroundingSource, ...]
    abstain_text: str
    correction: str = ""
    previous_question: str = ""  # the last user turn of the chat history, if any


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # on role="tool": which call this answers
    name: str | None = None
    # On the user message of a grounded prompt: its parts in structure (not sent over any wire).
    grounding: Grounding | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens used, and ``by_model``: the same tokens by the model that produced them.

    A provider adapter reports totals only; the wrapper that knows which model answered credits
    them to it (``attributed``). A sum keeps each model's share, so an answer written by two models
    (a fallback mid-stream, a retry on another tier) is priced per model, at each one's own price.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    # (model, its tokens) in order of first use; empty while no model has been credited. Equality
    # compares the counts only: the same tokens are the same usage whoever was credited with them.
    by_model: tuple[tuple[str, Usage], ...] = field(default=(), compare=False)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            _merge(self.by_model, other.by_model),
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def attributed(self, model: str) -> Usage:
        """This usage with the tokens no model has been credited with yet credited to ``model``."""
        rest_in = self.input_tokens - sum(u.input_tokens for _, u in self.by_model)
        rest_out = self.output_tokens - sum(u.output_tokens for _, u in self.by_model)
        if not model or (rest_in == 0 and rest_out == 0):
            return self
        share = ((model, Usage(rest_in, rest_out)),)
        return Usage(self.input_tokens, self.output_tokens, _merge(self.by_model, share))


def _merge(
    left: tuple[tuple[str, Usage], ...], right: tuple[tuple[str, Usage], ...]
) -> tuple[tuple[str, Usage], ...]:
    if not right:
        return left
    if not left:
        return right
    merged = dict(left)
    for model, usage in right:
        merged[model] = merged[model] + usage if model in merged else usage
    return tuple(merged.items())


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished model answer. ``model`` is the model that actually produced it."""

    text: str
    model: str
    usage: Usage = Usage()
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One piece of a streamed answer: text delta, finished tool calls, and, last, usage and finish reason."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str = ""
