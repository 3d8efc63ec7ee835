"""Retrieved chunks under ``guards.injection.sources``, before any prompt holds them.

Every chunk was checked at ingestion and carries the finding (``Chunk.injection``, made by
``mark_texts``); one indexed before that check existed is checked here, once: verdicts are
remembered by the content hash of the text checked (``CACHE_SIZE``, least recently used first
out), and its stored vector is used when the store has it (nothing is embedded here).

A source is flagged by the detector's rules. The classifier's probability is kept as the mark's
score, but flags no source: fit on prompts, it flagged 44-63% of plain document chunks (SciFact,
COVID-QA, the Debian handbook; 300 each), where the rules flagged none
(``bench/ingest_guards.py``). ``guards.injection.threshold`` is for the caller's input.

Policy, per flagged chunk (``SourceScreen.screen``):

- ``off``: as retrieved; no chunk is marked.
- ``flag``: kept, marked: its frame in the prompt says ``flagged="prompt-injection"``, and the
  system prompt says such sources may hold instructions that must be ignored.
- ``strip``: every sentence a rule matched is cut out of its text, title and headings
  (``InjectionDetector.strip_attacks``, rules alone) and the chunk is kept, marked; one whose
  attack cannot be cut out (an obfuscated or encoded match) is left out.
- ``block``: left out.

``Screened.flagged`` names every flagged chunk, whatever the policy did with it
(``Answer.flagged_sources``). A chunk's mark after screening is what prompts show:
``Chunk.injection.flagged`` (``is_flagged``); ``unmarked`` clears marks for prompts built with no
policy, which stay as they were before the guard existed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from stanchion.core.embed import Embedder
from stanchion.core.text import index_text
from stanchion.guards.injection import RULE_SCORE, InjectionDetector, InjectionModel
from stanchion.spec import InjectionAction, InjectionGuardSpec
from stanchion.types import Chunk, Hit, InjectionMark, content_hash

__all__ = [
    "CACHE_SIZE",
    "FLAG_LABEL",
    "Screened",
    "SourceScreen",
    "is_flagged",
    "mark_texts",
    "source_screen",
    "unmarked",
]

Policy = InjectionAction
FLAG_LABEL = "prompt-injection"  # the frame attribute's value: flagged="prompt-injection"
CACHE_SIZE = 4096
VectorLookup = Callable[[Sequence[str]], dict[str, npt.NDArray[np.float32]]]


def mark_texts(
    detector: InjectionDetector, texts: Sequence[str], vectors: Sequence[npt.NDArray[np.float32] | None]
) -> list[InjectionMark]:
    """The mark of each text (a chunk's ``index_text``: title and headings in front, as prompts
    show it): the rules it matches, and the classifier's probability on its vector when given."""
    marks = []
    for text, vector in zip(texts, vectors, strict=True):
        hits, probability = detector.rules_and_probability(text, vector)
        marks.append(InjectionMark(round(max(probability, RULE_SCORE) if hits else probability, 6), hits))
    return marks


def is_flagged(chunk: Chunk) -> bool:
    """Whether a prompt should mark this chunk's frame (its mark after screening says so)."""
    return chunk.injection is not None and chunk.injection.flagged


def unmarked(hits: Sequence[Hit]) -> list[Hit]:
    """``hits`` with no injection mark: prompts built with no policy stay as they were."""
    return [
        h if h.chunk.injection is None else replace(h, chunk=replace(h.chunk, injection=None)) for h in hits
    ]


@dataclass(frozen=True, slots=True)
class Screened:
    """What may reach a prompt (``hits``, in order) and the ids of the chunks that were flagged,
    stripped (kept, cut) and left out (``blocked``)."""

    hits: list[Hit]
    flagged: tuple[str, ...] = ()
    stripped: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()


class SourceScreen:
    """Applies one policy to retrieved chunks; see the module docstring. ``vectors``: stored
    embeddings by chunk content hash (``store.cached_vectors`` for the embedder's model), so an
    unchecked chunk is not embedded again."""

    def __init__(
        self,
        policy: Policy,
        detector: InjectionDetector,
        *,
        vectors: VectorLookup | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.policy = policy
        self.detector = detector
        # Stripping asks the rules alone whether what is left still attacks (they decide for sources).
        self._rules = InjectionDetector(classifier=False)
        self._vectors = vectors
        self._cache: OrderedDict[str, InjectionMark] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.checked = 0  # chunks checked here (indexed before the ingestion check), not from the cache

    def screen(self, hits: Sequence[Hit]) -> Screened:
        """The hits a prompt may hold under the policy (blocking, CPU-bound: run it in a thread)."""
        if self.policy == "off":
            return Screened(unmarked(hits))
        marks = self._marks([h.chunk for h in hits])
        kept: list[Hit] = []
        flagged: list[str] = []
        stripped: list[str] = []
        blocked: list[str] = []
        for hit, mark in zip(hits, marks, strict=True):
            chunk = replace(hit.chunk, injection=mark)
            if not mark.flagged:
                kept.append(replace(hit, chunk=chunk))
                continue
            flagged.append(chunk.id)
            if self.policy == "strip":
                cut = self._strip(chunk)
                if cut is not None:
                    stripped.append(chunk.id)
                    kept.append(replace(hit, chunk=cut))
                    continue
            if self.policy in ("strip", "block"):
                blocked.append(chunk.id)
                continue
            kept.append(replace(hit, chunk=chunk))
        return Screened(kept, tuple(flagged), tuple(stripped), tuple(blocked))

    def _marks(self, chunks: Sequence[Chunk]) -> list[InjectionMark]:
        marks: list[InjectionMark | None] = [c.injection for c in chunks]
        todo = [(i, index_text(c)) for i, c in enumerate(chunks) if marks[i] is None]
        if todo:
            keys = [content_hash(text) for _, text in todo]
            with self._lock:
                for (i, _), key in zip(todo, keys, strict=True):
                    if key in self._cache:
                        self._cache.move_to_end(key)
                        marks[i] = self._cache[key]
            unknown = [(i, text, key) for (i, text), key in zip(todo, keys, strict=True) if marks[i] is None]
            if unknown:
                self.checked += len(unknown)
                unchecked = [chunks[i] for i, _, _ in unknown]
                stored = self._vectors([c.hash for c in unchecked]) if self._vectors is not None else {}
                found = mark_texts(
                    self.detector, [text for _, text, _ in unknown], [stored.get(c.hash) for c in unchecked]
                )
                for (i, _, key), mark in zip(unknown, found, strict=True):
                    marks[i] = mark
                    self._remember(key, mark)
        return [m if m is not None else InjectionMark(0.0) for m in marks]

    def _remember(self, key: str, mark: InjectionMark) -> None:
        with self._lock:
            self._cache[key] = mark
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _strip(self, chunk: Chunk) -> Chunk | None:
        """The chunk with the attack cut out of its text, title and headings; None when the text's
        cannot be cut out."""
        text = self._rules.strip_attacks(chunk.text)
        if text is None or not text.strip():
            return None
        meta = dict(chunk.metadata)
        title = str(meta.get("title") or "")
        if title:
            meta["title"] = self._rules.strip_attacks(title) or ""
        headings = [str(h) for h in meta.get("heading_path") or ()]
        if headings:
            meta["heading_path"] = [cut for h in headings if (cut := self._rules.strip_attacks(h))]
        return replace(chunk, text=text, metadata=meta)


def source_screen(spec: InjectionGuardSpec, embedder: Embedder, vectors: VectorLookup | None) -> SourceScreen:
    """The screen ``guards.injection`` declares (its ``sources`` policy); ``vectors`` finds stored
    embeddings by chunk content hash, for the marks' scores."""
    return SourceScreen(spec.sources, source_detector(embedder), vectors=vectors)


def source_detector(embedder: Embedder) -> InjectionDetector:
    """The detector that marks chunks, at ingestion and here: its classifier scores on
    ``embedder``'s vectors when it is the model the classifier was fit on (no score otherwise)."""
    fitted = InjectionModel.packaged()
    if embedder.name == fitted.embedder:
        return InjectionDetector(embedder, model=fitted)
    return InjectionDetector(classifier=False, model=fitted)
