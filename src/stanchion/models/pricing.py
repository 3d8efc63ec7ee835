"""What a model call costs, measured afterwards or estimated before it is made.

``cost_usd`` prices a real ``Usage`` (the token counts the provider reported). Budget decisions
are made before a call, when no tokenizer of the target model is at hand, so
``estimate_tokens`` uses the usual rule of thumb for English text with BPE tokenizers: one
token per four characters, rounded up, plus a few tokens of framing per chat message. It is
within about 20% on prose, undercounts code and non-Latin scripts, and is only ever used to
compare a request against a budget, never to bill.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from stanchion.spec import PriceSpec
from stanchion.types import Message, Usage

CHARS_PER_TOKEN = 4
# Role markers and separators the chat template adds around every message.
TOKENS_PER_MESSAGE = 4

__all__ = [
    "CHARS_PER_TOKEN",
    "TOKENS_PER_MESSAGE",
    "cost_usd",
    "estimate_cost_usd",
    "estimate_message_tokens",
    "estimate_tokens",
]


def cost_usd(usage: Usage, price: PriceSpec) -> float:
    """The price of ``usage`` in USD; prices are per million tokens."""
    return (usage.input_tokens * price.input_per_mtok + usage.output_tokens * price.output_per_mtok) / 1e6


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` by the chars/4 heuristic (0 for an empty string)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_message_tokens(messages: Sequence[Message]) -> int:
    """Prompt tokens of a chat request: each message's content plus its framing."""
    return sum(estimate_tokens(m.content) + TOKENS_PER_MESSAGE for m in messages)


def estimate_cost_usd(messages: Sequence[Message], max_output_tokens: int, price: PriceSpec) -> float:
    """The most a request can cost: its estimated prompt plus ``max_output_tokens`` of answer."""
    usage = Usage(input_tokens=estimate_message_tokens(messages), output_tokens=max_output_tokens)
    return cost_usd(usage, price)
