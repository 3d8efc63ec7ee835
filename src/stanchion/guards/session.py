"""One request's PII state: its pseudonym vault, and masking and restoring through it.

The request pipeline's input guard opens a ``PiiSession`` for each call and makes it current
(``CURRENT``, a context variable). Every remote model the spec declares is wrapped in a
``MaskingModel`` (``guards/masking_model.py``), which masks what it sends through the current
session and restores what comes back, so every model call a request makes (the answer, a
corrective retry, the LLM reranker, a fallback, an agent's steps) shares the request's
pseudonyms. A model call made outside any session (a library caller, a job) gets a session of
its own for that one call: masking never depends on a caller remembering to open one.

Detection runs in a worker thread under the guard's time limit. An error or a timeout is a
``GuardError``: the request is refused and nothing is sent (fail closed). The first detection
loads the NER model (about a second); that wait is not counted against the limit.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import TypeVar

from stanchion.errors import GuardError
from stanchion.guards.pii import PiiDetector, PiiSpan
from stanchion.guards.restore_stream import StreamRestorer
from stanchion.guards.vault import PseudonymVault, Style, VaultScope
from stanchion.guards.vault_messages import map_json_strings, mask_messages, restore_tool_call
from stanchion.types import Message, ToolCall

__all__ = ["CURRENT", "PiiGuard", "PiiSession", "message_strings"]

T = TypeVar("T")
# Each ``timeout_s`` of the detection limit covers this many characters of text.
CHARS_PER_LIMIT = 8000

CURRENT: ContextVar[PiiSession | None] = ContextVar("stanchion_pii_session", default=None)


class PiiGuard:
    """What masking needs, built once per app from ``guards.pii``: the detector, the pseudonym
    style, the time limit, and the spans of texts seen lately (a conversation's history and a
    route's system prompt are sent again with every turn; detection is deterministic)."""

    def __init__(
        self,
        detector: PiiDetector,
        *,
        style: Style = "placeholder",
        timeout_s: float = 2.0,
        cache_size: int = 4096,
    ) -> None:
        self.detector = detector
        self.style: Style = style
        self.timeout_s = timeout_s
        self._spans: OrderedDict[str, tuple[PiiSpan, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._ready = False
        self._ready_lock = asyncio.Lock()
        # Held around every vault step (fast; detection runs outside it). One for the guard, not
        # one per session: the calls of one conversation may share a vault (the in-process store
        # hands out one object per conversation) while each runs in a worker thread.
        self.vault_lock = threading.Lock()

    def detect(self, text: str) -> tuple[PiiSpan, ...]:
        """``detector.detect``, remembered by text. Raises ``GuardError`` as the detector does."""
        if not text.strip():
            return ()
        with self._lock:
            known = self._spans.get(text)
            if known is not None:
                self._spans.move_to_end(text)
                return known
        found = tuple(self.detector.detect(text))
        with self._lock:
            self._spans[text] = found
            while len(self._spans) > self._cache_size:
                self._spans.popitem(last=False)
        return found

    async def ready(self) -> None:
        """Load the detector's model once (off the event loop), outside any request's time limit."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                await asyncio.to_thread(self.detector.warm_up)
                self._ready = True

    def session(self, scope: VaultScope | None = None, *, vault: PseudonymVault | None = None) -> PiiSession:
        """A session over ``vault``, or over a new vault of ``scope`` (default: a scope of its own)."""
        if vault is None:
            scope = scope or VaultScope("-", "call-" + uuid.uuid4().hex)
            vault = PseudonymVault(scope, style=self.style)
        return PiiSession(self, vault)


class PiiSession:
    """Masking and restoring through one vault. Detection runs outside the guard's vault lock (it
    is the slow part); the vault's own steps, fast, run under it, so texts masked at once (an
    agent's parallel tool results, two turns of one conversation) cannot interleave inside it."""

    def __init__(self, guard: PiiGuard, vault: PseudonymVault) -> None:
        self.guard = guard
        self.vault = vault
        self.failed: GuardError | None = None
        self._lock = guard.vault_lock

    @property
    def masked_any(self) -> bool:
        """Whether any value has been masked: an answer may then hold restored PII."""
        return len(self.vault) > 0

    async def mask_messages(self, messages: Sequence[Message]) -> list[Message]:
        """``messages`` as a remote model may read them (content, tool-call arguments, grounding)."""
        return await self._run(lambda: self._mask_messages(messages), message_strings(messages))

    async def mask_text(self, text: str) -> str:
        return await self._run(lambda: self._mask_text(text), [text])

    async def detect(self, texts: Sequence[str]) -> list[tuple[PiiSpan, ...]]:
        """The spans of each text, under the time limit (the input check's early refusal)."""
        found: list[tuple[PiiSpan, ...]] = await self._run(
            lambda: [self.guard.detect(t) for t in texts], texts
        )
        return found

    def restore(self, text: str) -> str:
        with self._lock:
            return self.vault.restore(text)

    def restore_tool_calls(self, calls: Sequence[ToolCall]) -> tuple[ToolCall, ...]:
        with self._lock:
            return tuple(restore_tool_call(self.vault, c) for c in calls)

    def restorer(self) -> StreamRestorer:
        return StreamRestorer(self.vault)

    def _mask_messages(self, messages: Sequence[Message]) -> list[Message]:
        with self._lock:
            return mask_messages(self.vault, messages, self.guard.detect)

    def _mask_text(self, text: str) -> str:
        with self._lock:
            return self.vault.mask(text, self.guard.detect(text))

    async def _run(self, work: Callable[[], T], texts: Sequence[str]) -> T:
        if self.failed is not None:
            raise self.failed
        await self.guard.ready()
        # The limit grows with the text: detection is about linear in its length (a pasted
        # document, a grounded prompt, an agent's tool results), a short question keeps the base.
        size = sum(len(t) for t in texts)
        limit = self.guard.timeout_s * max(1.0, size / CHARS_PER_LIMIT)

        def detect_then_work() -> T:
            for text in texts:  # the slow part, outside the vault's lock
                self.guard.detect(text)
            return work()

        try:
            return await asyncio.wait_for(asyncio.to_thread(detect_then_work), limit)
        except TimeoutError:
            self.failed = GuardError(
                f"PII detection did not finish within {limit:g} s; nothing was sent "
                "(raise guards.pii.timeout_s, or add workers)"
            )
        except GuardError as exc:
            self.failed = exc
        raise self.failed


def message_strings(messages: Sequence[Message]) -> list[str]:
    """Every text of ``messages`` that masking reads: content, each string inside tool-call
    arguments, and the grounding's question, sources and correction."""
    found: list[str] = []

    def take(text: str) -> str:
        if text:
            found.append(text)
        return text

    for message in messages:
        take(message.content)
        for call in message.tool_calls:
            map_json_strings(dict(call.arguments), take)
        grounding = message.grounding
        if grounding is not None:
            for text in (grounding.question, grounding.correction, grounding.previous_question):
                take(text)
            for source in grounding.sources:
                take(source.title)
                take(source.text)
    return list(dict.fromkeys(found))


def without_grounding(messages: Sequence[Message]) -> list[Message]:
    """``messages`` without their structured grounding, which no wire carries: a remote model
    reads the prompt's text only, so only that is masked (half the detection of a grounded call)."""
    return [replace(m, grounding=None) if m.grounding is not None else m for m in messages]
