"""Router: the complexity score, rules, budgets, latency estimates, and accuracy on real questions."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stanchion.models.base import ChatOptions
from stanchion.models.router import Router, score_complexity
from stanchion.spec import PriceSpec, RuleSpec
from stanchion.testing.fake_chat import FakeChatModel
from stanchion.types import Message

BENCH = Path(__file__).resolve().parents[2] / "bench" / "router_eval.py"
SIMPLE = "When was SARS-CoV first identified?"
HARD = "What is NYVAC? Also, how long is the SAIBK gene?"
PRICES = {
    "small": PriceSpec(input_per_mtok=0.15, output_per_mtok=0.6),
    "large": PriceSpec(input_per_mtok=5, output_per_mtok=15),
}


def ask(text: str) -> list[Message]:
    return [Message("system", "Answer from the sources."), Message("user", text)]


def two_tiers(**kwargs: Any) -> Router:
    return Router({"small": FakeChatModel("small-model"), "large": FakeChatModel("large-model")}, **kwargs)


class TestComplexity:
    @pytest.mark.parametrize(
        "question",
        [
            SIMPLE,
            "What is the mean incubation period of HAdV-55?",
            "Mice lacking SVCT2 have reduced ascorbic acid levels in both brain and adrenals.",
            "Incidence of 10/66 dementia is higher than the incidence of DSM-IV dementia.",
            "What does a chest x-ray look like for a patient with HAdV-55?",
        ],
    )
    def test_single_fact_lookups_score_low(self, question: str) -> None:
        """Lookups, including ones with numbers and names such as 10/66 or x-ray, stay below 0.5."""
        assert score_complexity(question).score < 0.5

    @pytest.mark.parametrize(
        ("question", "feature"),
        [
            (HARD, "questions"),
            ("What is IFITM and how does it relate to viral entry?", "multi_part"),
            ("1. What is NYVAC?\n2. What is IFITM?\n3. Where do dendritic cells exist?", "multi_part"),
            ("What is the difference between SARS and MERS?", "comparison"),
            ("Compare the incubation periods of influenza and COVID-19.", "comparison"),
            ("What is (45 - 12) * 3 / 9?", "reasoning"),
            (
                "A trial had 8 cases among 20,000 vaccinated and 162 among 20,000 placebo. What is the efficacy?",
                "reasoning",
            ),
            ("Write a SQL query that counts patients per ward.", "reasoning"),
            ("Why does this fail? ```def f(x): return x[0]```", "reasoning"),
        ],
    )
    def test_multi_part_comparison_and_reasoning_score_high(self, question: str, feature: str) -> None:
        """Each kind of cue is measured as a feature and alone lifts the score to 0.5 or more."""
        result = score_complexity(question)
        assert result.score >= 0.5, result.reasons
        assert result.features[feature] >= 1 and result.reasons

    def test_sources_needed_and_length_add_up(self) -> None:
        """Weak evidence needs company: two sources alone stay small, with a weak cue they do not."""
        weak = "What is the relationship between bats and coronaviruses in southern China?"
        assert score_complexity(weak).score < 0.5
        assert score_complexity(SIMPLE, sources_needed=2).score < 0.5
        combined = score_complexity(weak, sources_needed=3)
        assert combined.score >= 0.5 and "needs 3 sources" in combined.reasons


class TestRoute:
    def test_score_threshold_picks_the_tier(self) -> None:
        """Below 0.5 the cheapest tier answers; at or above, the larger one; reasons say why."""
        router = two_tiers()
        simple, hard = router.route(ask(SIMPLE)), router.route(ask(HARD))
        assert (simple.tier, simple.model_name) == ("small", "small-model")
        assert (hard.tier, hard.model_name) == ("large", "large-model")
        assert hard.score >= 0.5 and any("threshold" in r for r in hard.reasons)

    def test_rules_come_first(self) -> None:
        """A matching rule (case-insensitive, on the last user message) beats the score."""
        router = two_tiers(
            rules=[RuleSpec(pattern=r"\blegal\b", tier="large"), RuleSpec(pattern="nyvac", tier="small")]
        )
        assert router.route(ask("Is this LEGAL?")).tier == "large"
        decision = router.route(ask(HARD))
        assert decision.tier == "small" and "rule /nyvac/ -> small" in decision.reasons

    def test_cost_budget_falls_to_the_cheaper_tier(self) -> None:
        """When the large tier's estimated cost exceeds max_cost_usd the small tier is used."""
        options = ChatOptions(max_tokens=1000)
        assert two_tiers(prices=PRICES, max_cost_usd=0.05).route(ask(HARD), options).tier == "large"
        decision = two_tiers(prices=PRICES, max_cost_usd=0.01).route(ask(HARD), options)
        assert decision.tier == "small" and decision.estimated_cost_usd < 0.01
        assert any("max_cost_usd" in r and "-> small" in r for r in decision.reasons)

    def test_cheapest_tier_is_kept_even_over_budget(self) -> None:
        """There is nothing cheaper than the cheapest tier: it answers, and the reasons say so."""
        decision = two_tiers(prices=PRICES, max_cost_usd=1e-9).route(ask(HARD))
        assert decision.tier == "small" and "cheapest tier" in decision.reasons[-1]

    def test_latency_budget_follows_observed_latency(self) -> None:
        """A slow large tier is avoided until observed latencies (EWMA) bring its estimate down."""
        router = two_tiers(max_latency_ms=2000, latency_estimates={"large": 5000.0}, latency_alpha=0.5)
        assert router.route(ask(HARD)).tier == "small"
        router.observe("large", 1000)
        assert router.latency_estimate("large") == 3000
        router.observe("large", 1000)
        assert router.latency_estimate("large") == 2000
        assert router.route(ask(HARD)).tier == "large"

    def test_three_tiers_split_the_upper_range(self) -> None:
        """With three tiers, [0.5, 1] is split evenly between the two upper ones."""
        tiers = {name: FakeChatModel(name) for name in ("small", "medium", "large")}
        router = Router(tiers)
        assert router.route(ask(SIMPLE)).tier == "small"
        assert router.route(ask("What is the difference between SARS and MERS?")).tier == "medium"
        assert router.route(ask("Compare SARS and MERS. Also, what is (45 - 12) * 3?")).tier == "large"

    def test_rules_must_name_known_tiers(self) -> None:
        with pytest.raises(ValueError, match="unknown tiers"):
            two_tiers(rules=[RuleSpec(pattern="x", tier="huge")])


class TestAsChatModel:
    def test_complete_answers_from_the_routed_tier_and_observes_latency(self) -> None:
        """complete returns the tier's Completion unchanged and feeds the tier's latency estimate."""
        ticks = iter([10.0, 10.25])
        router = two_tiers(clock=lambda: next(ticks))
        completion = asyncio.run(router.complete(ask(HARD)))
        assert completion.model == "large-model" and completion.text == HARD
        assert router.latency_estimate("large") == pytest.approx(250.0)
        assert router.name == "router(small,large)"

    def test_concurrent_requests_each_get_their_own_tier(self) -> None:
        """Decisions are not shared state: simultaneous simple and hard requests go their own way."""
        router = two_tiers()

        async def both() -> list[str]:
            answers = await asyncio.gather(*(router.complete(ask(q)) for q in (SIMPLE, HARD, SIMPLE)))
            return [a.model for a in answers]

        assert asyncio.run(both()) == ["small-model", "large-model", "small-model"]

    def test_stream_passes_the_tier_stream_through(self) -> None:
        router = two_tiers()

        async def collect() -> list[str]:
            return [event.model async for event in router.stream(ask(SIMPLE))]

        assert set(asyncio.run(collect())) == {"small-model"}


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("router_eval", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["router_eval"] = module
    spec.loader.exec_module(module)
    return module


class TestAccuracy:
    def test_labelled_sample_from_shared_data(self, shared_data: Path) -> None:
        """On 60 + 60 seeded questions (measured: accuracy 0.992, precision 0.984, recall 1.0)."""
        bench = load_bench()
        items = bench.build_set(shared_data, per_label=60, seed=2)
        assert items == bench.build_set(shared_data, per_label=60, seed=2), "sampling is seeded"
        report = bench.evaluate(items)
        assert report.total == 120
        assert report.accuracy >= 0.97 and report.precision >= 0.95 and report.recall >= 0.97, report.errors

    def test_few_single_questions_are_sent_to_large(self, shared_data: Path) -> None:
        """Over every COVID-QA question and SciFact claim (measured: 2.1% and 0.0% to large)."""
        counts = load_bench().routed_large(shared_data)
        assert counts["covid-qa"][0] / counts["covid-qa"][1] <= 0.04
        assert counts["scifact"][0] / counts["scifact"][1] <= 0.01
