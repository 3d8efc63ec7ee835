"""``MaskingEmbedder``: a remote embedder that never receives the PII a request holds.

With ``guards.pii`` on and ``embedding.provider: openai``, the texts a request embeds (a question
for retrieval and the response cache, memory recall, a caller's ``/v1/embeddings`` input) go to
the remote endpoint with each detected value replaced by its type (``<EMAIL_ADDRESS>``): a
vector needs the shape of a sentence, not whose address it holds, and no vault is needed since
nothing comes back to restore. A detector that fails refuses (``GuardError``), as for chat.
Documents embedded at ingestion are the source's ``pii`` option's to mask (``pii: mask``).
"""

from __future__ import annotations

from collections.abc import Sequence

from stanchion.core.embed import Embedder, ProgressCallback, Vectors
from stanchion.guards.session import PiiGuard
from stanchion.guards.vault import entity_name

__all__ = ["MaskingEmbedder", "masked_by_type"]


def masked_by_type(guard: PiiGuard, text: str) -> str:
    """``text`` with every value the guard's detector finds replaced by ``<TYPE>``."""
    out, last = [], 0
    for span in guard.detect(text):
        out += [text[last : span.start], f"<{entity_name(span.entity)}>"]
        last = span.end
    out.append(text[last:])
    return "".join(out)


class MaskingEmbedder:
    def __init__(self, inner: Embedder, guard: PiiGuard) -> None:
        self.inner = inner
        self.guard = guard

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        return self.inner.embed([masked_by_type(self.guard, t) for t in texts], progress=progress)
