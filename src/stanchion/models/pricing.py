"""What a model call costs, measured afterwards or estimated before it is made.

``cost_usd`` prices a real ``Usage`` (the token counts the provider reported) at one price;
``usage_cost_usd`` prices each model's share of it at that model's price, which is what an answer
is billed (``model_costs`` lists the shares). Budget decisions
are made before a call, when no tokenizer of the target model is at hand, so
``estimate_tokens`` uses the usual rule of thumb for English text with BPE tokenizers: one
token per four characters, rounded up, plus a few tokens of framing per chat message. It is
within about 20% on prose, undercounts code and non-Latin scripts, and is only ever used to
compare a request against a budget, never to bill.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stanchion.spec import PriceSpec
from stanchion.types import Message, Usage

CHARS_PER_TOKEN = 4
# Role markers and separators the chat template adds around every message.
TOKENS_PER_MESSAGE = 4

__all__ = [
    "CHARS_PER_TOKEN",
    "TOKENS_PER_MESSAGE",
    "ModelCost",
    "cost_usd",
    "estimate_cost_usd",
    "estimate_message_tokens",
    "estimate_tokens",
    "model_costs",
    "usage_cost_usd",
]


def cost_usd(usage: Usage, price: PriceSpec) -> float:
    """The price of ``usage`` in USD; prices are per million tokens."""
    return (usage.input_tokens * price.input_per_mtok + usage.output_tokens * price.output_per_mtok) / 1e6


@dataclass(frozen=True, slots=True)
class ModelCost:
    """One model's share of an answer: the tokens it produced and what they cost at its price."""

    model: str
    usage: Usage
    cost_usd: float

    def as_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_usd": self.cost_usd,
        }


def model_costs(usage: Usage, prices: Mapping[str, PriceSpec]) -> list[ModelCost]:
    """Each model's share of ``usage`` (``Usage.by_model``) priced at that model's own price; a
    model without a price (not in the spec) costs nothing."""
    return [
        ModelCost(model, share, cost_usd(share, prices[model]) if model in prices else 0.0)
        for model, share in usage.by_model
    ]


def usage_cost_usd(usage: Usage, prices: Mapping[str, PriceSpec]) -> float:
    """What ``usage`` cost: every token at the price of the model that produced it."""
    return sum(c.cost_usd for c in model_costs(usage, prices))


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
