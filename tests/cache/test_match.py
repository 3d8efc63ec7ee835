"""The semantic cache's near-miss check: each kind of near-miss is rejected with its stable reason,
paraphrases are accepted, and the threshold is honoured. Similarities are given, as the stage
gives them (no model here)."""

from __future__ import annotations

import csv
import json
from importlib.resources import files

import pytest

from stanchion.cache.match import DEFAULT_THRESHOLD, REASONS, PairMatcher, Verdict, rule_reason
from stanchion.errors import SpecError

HIGH = 0.95  # a cosine well above the threshold: only the rules and the scorer decide


class TestNearMisses:
    """A pair that embeddings put close together but that asks something else is never a hit."""

    @pytest.mark.parametrize(
        ("asked", "cached", "reason"),
        [
            ("How do I enable SSO?", "How do I disable SSO?", "negation"),
            ("How do I turn on dark mode?", "How do I turn off dark mode?", "negation"),
            ("Can I get a refund on a sale item?", "Can't I get a refund on a sale item?", "negation"),
            ("Can I use the API with an API key?", "Can I use the API without an API key?", "negation"),
            ("Should I update before the migration?", "Should I update after the migration?", "negation"),
            ("How do I increase the quota?", "How do I decrease the quota?", "negation"),
            ("Are personal devices allowed?", "Are personal devices forbidden?", "negation"),
            ("Why was my report approved?", "Why was my report rejected?", "negation"),
            ("Why does the app log me out?", "Why does the app log me in?", "negation"),
            ("Which is the cheapest plan?", "Which is the most expensive plan?", "comparative"),
            ("Who has the most open tickets?", "Who has the fewest open tickets?", "comparative"),
            ("Who approved the budget?", "When was the budget approved?", "question_type"),
            ("How many users are on the plan?", "How long are users on the plan?", "question_type"),
            ("Can I get a refund within 30 days?", "Can I get a refund within 60 days?", "number"),
            ("Is Python 3.11 supported?", "Is Python 3.12 supported?", "number"),
            ("What is the fee for $500?", "What is the fee for $5,000?", "number"),
            ("Is there a 10% discount?", "Is there a 20% discount?", "number"),
            ("Is there a plan for two users?", "Is there a plan for three users?", "number"),
            ("What was Q3 2024 revenue?", "What was Q3 2023 revenue?", "date"),
            ("What were the Q1 results?", "What were the Q4 results?", "date"),
            ("Is the office open on Monday?", "Is the office open on Tuesday?", "date"),
            ("What were sales in March?", "What were sales in April?", "date"),
            ("Is the office closed today?", "Is the office closed tomorrow?", "date"),
            ("How far is it in km?", "How far is it in miles?", "unit"),
            ("Is the attachment limit 25 MB?", "Is the attachment limit 25 GB?", "unit"),
            ("Can I pay in USD?", "Can I pay in EUR?", "unit"),
            ("Is the trial 14 days long?", "Is the trial 14 weeks long?", "unit"),
            ("Why is the ticket assigned?", "Why is the ticket unassigned?", "negation"),
            ("Is MFA mandatory for contractors?", "Is MFA optional for contractors?", "negation"),
            ("Are logs retained after deletion?", "Are logs deleted after deletion?", "negation"),
            ("Does the policy cover client dinners?", "Does the policy exclude client dinners?", "negation"),
            ("Which expenses are billable?", "Which expenses are non-billable?", "negation"),
            (
                "How do I migrate from MySQL to PostgreSQL?",
                "How do I migrate from PostgreSQL to MySQL?",
                "order",
            ),
            ("How do I convert USD to EUR?", "How do I convert EUR to USD?", "order"),
            (
                "Forward calls from my desk phone to my mobile",
                "Forward calls from my mobile to my desk phone",
                "order",
            ),
            ("Is shipping from Canada to the US free?", "Is shipping from the US to Canada free?", "order"),
            (
                "Is the Team plan better than the Pro plan?",
                "Is the Pro plan better than the Team plan?",
                "order",
            ),
            ("How do I reset my Outlook password?", "How do I reset my Gmail password?", "entity"),
            ("Can I book a room in Building A?", "Can I book a room in Building B?", "entity"),
            ("How do I deploy to AWS?", "How do I deploy to Azure?", "entity"),
            ("Reset the password of jane@example.com", "Reset the password of john@example.com", "entity"),
            ("Why is db-prod-01 down?", "Why is db-prod-02 down?", "entity"),
            ("Where is config.yaml stored?", "Where is settings.yaml stored?", "entity"),
        ],
    )
    def test_rejected_with_reason(self, asked: str, cached: str, reason: str) -> None:
        """Rejected at a high cosine, with the reason named, whichever side is the cached one."""
        matcher = PairMatcher()
        assert matcher.judge(asked, cached, HIGH) == Verdict(False, 0.0, reason)
        assert matcher.judge(cached, asked, HIGH).reason == reason

    def test_reasons_are_the_documented_names(self) -> None:
        """Every reason the matcher gives is one of REASONS, which the metrics and docs use."""
        assert set(REASONS) == {
            "below_threshold",
            "negation",
            "comparative",
            "question_type",
            "number",
            "date",
            "unit",
            "order",
            "entity",
            "quantifier",
            "different_question",
            "low_score",
        }


class TestParaphrases:
    """Questions that ask the same thing in other words hit."""

    @pytest.mark.parametrize(
        ("asked", "cached"),
        [
            ("How do I reset my password?", "How can I reset my password?"),
            ("How do I enable two-factor authentication?", "How can I turn on two-factor authentication?"),
            ("Why can't I log in?", "Why am I unable to log in?"),
            ("Can I get a refund within 30 days?", "Is a refund possible within 30 days?"),
            ("What was the revenue in Q3 2024?", "What was Q3 2024 revenue?"),
            ("Is Python 3.12 supported?", "Do you support Python 3.12?"),
            ("How do I get a copy of my receipt?", "Where can I get a copy of my receipt?"),
            (
                "How do I install the desktop client on Windows?",
                "How can I install the desktop client on Windows?",
            ),
        ],
    )
    def test_accepted(self, asked: str, cached: str) -> None:
        verdict = PairMatcher().judge(asked, cached, 0.93)
        assert verdict.hit, verdict
        assert verdict.reason == ""
        assert 0.0 < verdict.score <= 1.0

    def test_same_text_hits_with_full_score(self) -> None:
        assert PairMatcher().judge("How do I export data?", "how do I export data? ", 0.99) == Verdict(
            True, 1.0, ""
        )

    def test_direction_phrasings_agree(self) -> None:
        """ "to B from A" and "from A to B" name the same direction: no order rule."""
        assert rule_reason("Move data to PostgreSQL from MySQL", "Migrate from MySQL to PostgreSQL") == ""

    def test_number_spellings_agree(self) -> None:
        """30 and thirty, 1,000 and 1000, 10% and 10 percent are the same value and unit."""
        assert rule_reason("Refund within 30 days?", "Refund within thirty days?") == ""
        assert rule_reason("Orders over 1,000 dollars", "Orders over $1000") == ""
        assert rule_reason("Is there a 10% discount?", "Is there a 10 percent discount?") == ""


class TestThreshold:
    def test_below_threshold_is_a_miss(self) -> None:
        matcher = PairMatcher(threshold=0.9)
        assert matcher.judge("How do I reset my password?", "How can I reset my password?", 0.89) == Verdict(
            False, 0.0, "below_threshold"
        )
        assert matcher.judge("How do I reset my password?", "How can I reset my password?", 0.9).hit

    def test_default_threshold_is_the_fitted_one(self) -> None:
        """DEFAULT_THRESHOLD is the threshold the scorer's floor was chosen at."""
        model = json.loads(files("stanchion.cache").joinpath("match_model.json").read_text("utf-8"))
        assert model["threshold"] == DEFAULT_THRESHOLD
        assert PairMatcher().threshold == DEFAULT_THRESHOLD

    def test_out_of_range_threshold_is_refused(self) -> None:
        with pytest.raises(SpecError, match="cosine"):
            PairMatcher(threshold=1.5)

    def test_low_score_rejects_a_distant_rewording(self) -> None:
        """No rule fires, but little is shared: the scorer says no, with its probability."""
        verdict = PairMatcher().judge(
            "What is your refund policy?", "Tell me about the company history", 0.81
        )
        assert verdict == Verdict(False, verdict.score, "low_score")
        assert verdict.score < PairMatcher().score_floor

    def test_deterministic(self) -> None:
        matcher = PairMatcher()
        first = matcher.judge("How do I export my data?", "How can I export all my data?", 0.9)
        assert all(
            matcher.judge("How do I export my data?", "How can I export all my data?", 0.9) == first
            for _ in range(3)
        )


class TestShippedSet:
    """The adversarial pair set ships in the package, well formed, with every near-miss kind."""

    def test_layout_and_size(self) -> None:
        text = files("stanchion.cache").joinpath("adversarial_pairs.tsv").read_text("utf-8")
        rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
        assert rows[0] == ["label", "kind", "question_a", "question_b"]
        body = rows[1:]
        assert len(body) >= 300
        assert all(len(r) == 4 and r[0] in ("0", "1") and r[2] != r[3] for r in body)
        kinds = {r[1] for r in body if r[0] == "0"}
        assert {"negation", "number", "date", "entity", "unit", "comparative", "question_type"} <= kinds
        assert sum(r[0] == "1" for r in body) >= 100

    def test_rules_never_reject_a_near_miss_as_a_paraphrase_kind(self) -> None:
        """Rule-kind near-misses (not 'topic', left to the scorer) are each caught by a rule."""
        text = files("stanchion.cache").joinpath("adversarial_pairs.tsv").read_text("utf-8")
        rows = list(csv.reader(text.splitlines()[1:], delimiter="\t", quoting=csv.QUOTE_NONE))
        missed = [r for r in rows if r[0] == "0" and r[1] != "topic" and not rule_reason(r[2], r[3])]
        assert missed == []


def test_numbers_are_compared_as_a_multiset() -> None:
    """A number put in another's place is seen even when the new one occurs elsewhere in the text
    ("2 backups for 2 days" / "for 7 days"): as plain sets, {2} and {2, 7}, it was not."""
    matcher = PairMatcher()
    for asked, cached in (
        ("Can we keep 2 backups for 2 days?", "Can we keep 2 backups for 7 days?"),
        ("Can I add 3 users to a team of two?", "Can I add 2 users to a team of two?"),
        ("Ticket 2: in two sentences, what is it?", "Ticket 1: in two sentences, what is it?"),
    ):
        assert matcher.judge(asked, cached, 0.95).reason == "number"
    assert matcher.judge("Keep 2 backups for 2 days?", "Keep two backups for 2 days?", 0.97).hit


def test_quantifiers_directions_and_a_shared_preamble_are_near_misses() -> None:
    """Wrong hits the red team found (issue 12): each now refused by a rule."""
    matcher = PairMatcher()
    contract = "The supplier agreement between Acme Corp and Initech runs for three years. "
    for asked, cached, reason in (
        ("Do any employees get a bonus?", "Do all employees get a bonus?", "quantifier"),
        ("Can some users delete projects?", "Can every user delete projects?", "quantifier"),
        ("Which flights arrive at JFK?", "Which flights leave from JFK?", "negation"),
        (
            "Which employees left in the last quarter?",
            "Which employees joined in the last quarter?",
            "negation",
        ),
        ("Is version 2 forwards compatible?", "Is version 2 backwards compatible?", "negation"),
        (
            contract + "Is the warranty transferable?",
            contract + "Can Initech terminate early?",
            "different_question",
        ),
    ):
        assert matcher.judge(asked, cached, 0.95).reason == reason, asked
    same = contract + "What is the liability cap?"
    assert matcher.judge(same, contract + "What's the liability cap?", 0.97).hit
