"""Tags that quoted text cannot forge: a nonce drawn for each prompt.

A prompt that quotes documents (the answer prompt's sources, the LLM reranker's passages) puts
each in a tag carrying this nonce, 64 random bits found in none of the prompt's texts. A document
cannot close its block or open a forged one, since it cannot know the tag.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

NONCE_BYTES = 8


def new_nonce(texts: Iterable[str] = ()) -> str:
    """A tag suffix for one prompt: random, and found in none of ``texts`` (what the prompt will
    hold), so no text can write a tag of this prompt."""
    held = list(texts)
    while True:
        nonce = secrets.token_hex(NONCE_BYTES)
        if not any(nonce in text for text in held):
            return nonce
