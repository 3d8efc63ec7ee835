"""An Embedder over any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, Ollama, TEI, ...).

The API key is read from the environment variable the spec names, at call time; it is never
stored on the object's repr, logged, or put in an error message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import httpx
import numpy as np

from stanchion.core.embed import ProgressCallback, Vectors
from stanchion.errors import EmbeddingError


class OpenAIEmbedder:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        batch_size: int = 64,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._api_key_env = api_key_env
        self._batch_size = batch_size
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self._dim: int | None = None

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(url={self._url!r}, model={self._model!r})"

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def _headers(self) -> dict[str, str]:
        if not self._api_key_env:
            return {}
        key = os.environ.get(self._api_key_env)
        if not key:
            raise EmbeddingError(
                f"environment variable {self._api_key_env} (the embeddings API key) is not set"
            )
        return {"Authorization": f"Bearer {key}"}

    def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> Vectors:
        rows: list[Vectors] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            rows.append(self._post(batch))
            if progress is not None:
                progress(len(batch))
        if not rows:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        vectors = np.concatenate(rows)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised: Vectors = (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
        self._dim = int(normalised.shape[1])
        return normalised

    def _post(self, batch: list[str]) -> Vectors:
        try:
            response = self._client.post(
                self._url, json={"model": self._model, "input": batch}, headers=self._headers()
            )
        except httpx.HTTPError as exc:
            raise EmbeddingError(
                f"embeddings endpoint {self._url} unreachable: {type(exc).__name__}"
            ) from exc
        if response.status_code != 200:
            raise EmbeddingError(
                f"embeddings endpoint {self._url} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"embeddings endpoint {self._url} returned an unexpected body: {exc}"
            ) from exc
        if vectors.ndim != 2 or len(vectors) != len(batch):
            raise EmbeddingError(
                f"embeddings endpoint returned {len(vectors)} vectors for {len(batch)} inputs"
            )
        return vectors

    def close(self) -> None:
        self._client.close()
