"""A fake embedder for tests of memory: fast, deterministic, no model to load."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from stanchion.core.embed import ProgressCallback, Vectors


class WordEmbedder:
    """Bag of words hashed into ``dim`` dimensions, L2-normalised: the same words give the same
    vector, shared words a positive cosine."""

    name = "words"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                rows[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            norm = np.linalg.norm(rows[i])
            if norm:
                rows[i] /= norm
        if progress is not None:
            progress(len(texts))
        return rows
