"""Embedders: the protocol and the packaged sentence-transformers model.

The model loads lazily on first use (``warm_up``), so commands that never embed stay fast. A few
short texts (a query) before then are embedded by ``numpy_bert``, the same weights run in numpy:
importing torch and loading the model through it costs seconds, which a one-shot search would
spend to embed one line.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from stanchion.core.numpy_bert import NumpyBert
from stanchion.core.packaged import resolve_model_dir
from stanchion.errors import EmbeddingError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
ProgressCallback = Callable[[int], None]

# Tokens a process embeds in numpy before it loads torch. Loading torch and the model costs ~3 s
# of CPU; numpy costs ~0.5 ms of CPU per token more than torch on batches (the same on a query).
# So numpy serves until the work it did would have paid for torch: a one-shot search (~10 tokens)
# or ask (~2,000) never loads torch, while ingestion or a long-running server soon does, once.
NUMPY_TOKEN_BUDGET = 6000


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows. ``name`` keys the embedding cache."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors: ...


class SentenceTransformerEmbedder:
    """A local sentence-transformers model (default: the packaged all-MiniLM-L6-v2)."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", *, batch_size: int = 32, device: str = "cpu") -> None:
        self._model_name = model
        self._batch_size = batch_size
        self._device = device
        self._model: SentenceTransformer | None = None
        self._numpy: NumpyBert | None = None
        self._numpy_checked = False
        self._numpy_tokens = 0  # embedded in numpy so far
        self._lock = threading.Lock()
        self._embed_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._model_name

    @property
    def dim(self) -> int:
        if self._model is None and (light := self._numpy_encoder()) is not None:
            return light.dim
        dim = self.warm_up().get_embedding_dimension()
        if dim is None:
            raise EmbeddingError(f"{self._model_name} does not declare its embedding dimension")
        return int(dim)

    def warm_up(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                path = resolve_model_dir(self._model_name)
                # The model is on disk; make sure nothing below us tries the hub.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                # Their weight-loading progress bar would interleave with ours on stderr.
                hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
                hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]

                try:
                    self._model = SentenceTransformer(str(path), device=self._device)
                except Exception as exc:  # any load failure is a configuration problem for the user
                    raise EmbeddingError(f"cannot load embedding model from {path}: {exc}") from exc
                log.info("embedder.loaded", extra={"model": self._model_name, "path": str(path)})
            return self._model

    def _numpy_encoder(self) -> NumpyBert | None:
        """The numpy encoder of this model, while torch is not loaded and if the model allows it."""
        with self._lock:
            if not self._numpy_checked:
                self._numpy_checked = True
                path = resolve_model_dir(self._model_name)
                if self._device == "cpu" and NumpyBert.supports(path):
                    self._numpy = NumpyBert(path)
            return self._numpy if self._model is None else None

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        # One call at a time: the fast tokenizer is not re-entrant ("Already borrowed") and torch
        # already uses every core for one batch.
        with self._embed_lock:
            light = self._numpy_encoder() if self._model is None else None
            needed = light.tokens(texts) if light is not None else 0
            if light is not None and self._numpy_tokens + needed <= NUMPY_TOKEN_BUDGET:
                self._numpy_tokens += needed
                vectors = light.embed(texts)
                if progress is not None:
                    progress(len(texts))
                return vectors
            return self._embed(texts, progress)

    def _embed(self, texts: Sequence[str], progress: ProgressCallback | None) -> Vectors:
        model = self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out: list[Vectors] = []
        # Sort by length so each batch pads little; restore order afterwards.
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self._batch_size):
            batch = [texts[i] for i in order[start : start + self._batch_size]]
            vecs = model.encode(
                batch, batch_size=len(batch), normalize_embeddings=True, convert_to_numpy=True
            )
            out.append(np.asarray(vecs, dtype=np.float32))
            if progress is not None:
                progress(len(batch))
        stacked = np.concatenate(out)
        result = np.empty_like(stacked)
        result[order] = stacked
        return result


def warm_for_serving(embedder: Embedder) -> None:
    """Load now what a long-running process (a server worker, an eval) will use, so no request
    pays for it: the torch model of a local embedder, which would otherwise load mid-request once
    the numpy budget is spent; one call for any other embedder (a remote one opens its client)."""
    if isinstance(embedder, SentenceTransformerEmbedder):
        embedder.warm_up()
    embedder.embed(["warm up"])


class RecentQueries:
    """An embedder that remembers the vectors of the last ``size`` single texts it embedded.

    A request embeds its question twice when the response cache looks it up and retrieval then
    searches for it: with both on one ``RecentQueries`` the second is a dictionary read (~10 ms
    of CPU saved per cache miss here). Batches (ingestion) pass straight through."""

    def __init__(self, inner: Embedder, *, size: int = 1024) -> None:
        self.inner = inner
        self.size = size
        self._recent: dict[str, Vectors] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        if len(texts) != 1:
            return self.inner.embed(texts, progress=progress)
        # The tokenizer splits on any run of whitespace, so texts that differ only there have one
        # vector: " How  do I?" and "How do I?" share it.
        text = " ".join(texts[0].split())
        with self._lock:
            known = self._recent.get(text)
        if known is None:
            known = self.inner.embed(texts, progress=progress)
            with self._lock:
                self._recent[text] = known
                while len(self._recent) > self.size:
                    del self._recent[next(iter(self._recent))]  # the oldest (insertion order)
        elif progress is not None:
            progress(1)
        return known.copy()
