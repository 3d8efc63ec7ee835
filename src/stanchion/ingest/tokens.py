"""Token counting with the embedding model's own tokenizer, so chunk sizes mean what the model sees."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from stanchion.core.packaged import resolve_model_dir


class Tokenizer:
    """Counts and slices text in model tokens (no special tokens, no truncation)."""

    def __init__(self, tokenizer_file: Path) -> None:
        self._tok = HFTokenizer.from_file(str(tokenizer_file))
        self._tok.no_truncation()
        self._tok.no_padding()

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token, for cutting text at token boundaries."""
        return list(self._tok.encode(text, add_special_tokens=False).offsets)


@lru_cache(maxsize=4)
def tokenizer_for(model: str) -> Tokenizer:
    return Tokenizer(resolve_model_dir(model) / "tokenizer.json")
