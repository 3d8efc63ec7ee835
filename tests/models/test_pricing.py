"""Pricing: exact cost from usage, and the chars/4 estimate used for budgets before a call."""

from __future__ import annotations

import pytest

from stanchion.models.pricing import (
    TOKENS_PER_MESSAGE,
    cost_usd,
    estimate_cost_usd,
    estimate_message_tokens,
    estimate_tokens,
)
from stanchion.spec import PriceSpec
from stanchion.types import Message, Usage

PRICE = PriceSpec(input_per_mtok=2.5, output_per_mtok=10.0)


class TestCost:
    def test_cost_is_per_million_tokens(self) -> None:
        """1M input tokens cost input_per_mtok; output is priced separately."""
        assert cost_usd(Usage(1_000_000, 0), PRICE) == pytest.approx(2.5)
        assert cost_usd(Usage(1200, 300), PRICE) == pytest.approx((1200 * 2.5 + 300 * 10.0) / 1e6)

    def test_free_model_costs_nothing(self) -> None:
        assert cost_usd(Usage(5000, 5000), PriceSpec()) == 0.0


class TestEstimate:
    @pytest.mark.parametrize(
        ("text", "tokens"), [("", 0), ("abc", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)]
    )
    def test_four_characters_per_token_rounded_up(self, text: str, tokens: int) -> None:
        assert estimate_tokens(text) == tokens

    def test_messages_add_framing(self) -> None:
        """Each message adds its framing tokens to its content's estimate."""
        messages = [Message("system", "x" * 40), Message("user", "y" * 8)]
        assert estimate_message_tokens(messages) == 10 + 2 + 2 * TOKENS_PER_MESSAGE

    def test_estimated_cost_assumes_the_whole_output_budget(self) -> None:
        """Before a call the answer is assumed to use all of max_tokens: the most it can cost."""
        messages = [Message("user", "z" * 400)]
        expected = cost_usd(Usage(100 + TOKENS_PER_MESSAGE, 512), PRICE)
        assert estimate_cost_usd(messages, 512, PRICE) == pytest.approx(expected)
