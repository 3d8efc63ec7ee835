"""core.embed.RecentQueries: a question embedded for the cache is not embedded again for retrieval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stanchion.core.embed import ProgressCallback, RecentQueries, SentenceTransformerEmbedder, Vectors


class Counting:
    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner, self.calls = inner, 0
        self.name, self.dim = inner.name, inner.dim

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        self.calls += 1
        return self.inner.embed(texts, progress=progress)


def test_a_repeated_question_is_embedded_once(embedder: SentenceTransformerEmbedder) -> None:
    counting = Counting(embedder)
    recent = RecentQueries(counting)  # type: ignore[arg-type]
    first = recent.embed(["How do I reset my password?"])
    again = recent.embed(["  How do I\treset my  password?"])
    assert counting.calls == 1
    np.testing.assert_array_equal(first, again)
    # The claim behind keying on collapsed whitespace: the model gives such texts one vector.
    np.testing.assert_allclose(embedder.embed(["  How do I\treset my  password?"]), first, atol=1e-6)
    again[0, 0] = 42.0  # a caller's change to its copy never reaches the next caller
    assert recent.embed(["How do I reset my password?"])[0, 0] != 42.0


def test_batches_pass_through_and_the_memory_is_bounded(embedder: SentenceTransformerEmbedder) -> None:
    counting = Counting(embedder)
    recent = RecentQueries(counting, size=2)  # type: ignore[arg-type]
    recent.embed(["a", "b"])
    recent.embed(["a", "b"])
    assert counting.calls == 2  # batches (ingestion) are never remembered
    for text in ("one", "two", "three", "one"):
        recent.embed([text])
    assert counting.calls == 2 + 4  # "one" was the oldest of three and was forgotten
