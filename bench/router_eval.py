"""How often the Router sends a question to the right tier, on a labelled set built from real questions.

"small": single-fact lookups as people asked them, COVID-QA questions and SciFact claims (read in
place from ../shared/data). "large": two or three of those joined the ways users write several
questions in one message ("X? Also, Y?", "Compare A and B", "What is X and how does it relate to
Y?", numbered lists, ...), plus hand-written reasoning, maths and code questions. Sampling is
seeded, so every run measures the same set. Prints accuracy, precision and recall for "large",
and the confusion matrix.

    python bench/router_eval.py [--per-label 200] [--seed 13] [--errors 10]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stanchion.models.router import Router
from stanchion.testing.fake_chat import FakeChatModel
from stanchion.types import Message

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
LABELS = ("small", "large")

# Reasoning, maths and code questions: short, but a small model gets them wrong.
HAND_WRITTEN = [
    "What is 17% of 2,340, rounded to the nearest whole number?",
    "If a test has 95% sensitivity and 90% specificity and prevalence is 2%, what is the positive predictive value?",
    "Calculate the doubling time of an epidemic growing 12% per day.",
    "A vaccine trial had 8 cases among 20,000 vaccinated and 162 among 20,000 placebo. What is the efficacy?",
    "Prove that the sum of two odd numbers is even.",
    "Solve 3x + 7 = 25 for x.",
    "What is (45 - 12) * 3 / 9?",
    "Estimate R0 if each case infects 0.4 people per day for an infectious period of 7 days, step by step.",
    "Write a Python function that returns the median of a list without using the statistics module.",
    "Write a SQL query that counts patients per ward and returns only wards with more than 10 patients.",
    "Why does this loop never end? ```while i < 10: print(i)```",
    "Fix the bug in this code: `def mean(xs): return sum(xs) / len(xs) if xs else None` fails on generators.",
    "Implement binary search in Python and give its time complexity.",
    "What does SELECT name FROM users WHERE age > 30 GROUP BY city return, and why does it fail?",
    "Write a regex that matches ISO dates like 2020-03-15.",
    "Derive the formula for the variance of a binomial distribution.",
    "How many ways can 5 samples be assigned to 3 labs if each lab gets at least one?",
    "Refactor this script so the database connection is closed even when an exception is raised.",
    "A drug's half-life is 6 hours. How much of a 200 mg dose remains after 24 hours?",
    "If incidence is 30 per 100,000 per year, how many cases should a city of 2.5 million expect in 6 months?",
    "Explain step by step how to compute a 95% confidence interval for a proportion of 45 out of 120.",
    "Compute the odds ratio from a 2x2 table with 20/80 exposed cases and 10/90 unexposed cases.",
    "Write a function to deduplicate records by email, keeping the most recent one, and add a unit test.",
    "Why is quicksort O(n log n) on average but O(n^2) in the worst case?",
]


@dataclass(frozen=True)
class Report:
    total: int
    accuracy: float
    precision: float
    recall: float
    confusion: dict[tuple[str, str], int]  # (true, predicted) -> count
    errors: list[tuple[str, str, str]]  # (true, predicted, question)


def load_pools(data: Path) -> tuple[list[str], list[str]]:
    """COVID-QA questions and SciFact claims, whitespace tidied, in file order."""
    squad = json.loads((data / "covid-qa/covidQA_200423.squad.json").read_text(encoding="utf-8"))
    questions = [
        _tidy(qa["question"]) for article in squad["data"] for p in article["paragraphs"] for qa in p["qas"]
    ]
    with (data / "beir-scifact/queries.jsonl").open(encoding="utf-8") as lines:
        claims = [_tidy(json.loads(line)["text"]) for line in lines if line.strip()]
    return [q for q in questions if q.endswith("?")], claims


def build_set(data: Path, per_label: int = 200, seed: int = 13) -> list[tuple[str, str]]:
    """``per_label`` (question, label) pairs of each label, shuffled; the same for the same seed."""
    rng = random.Random(seed)
    questions, claims = load_pools(data)
    topics = [m.group(2) for q in questions if (m := re.match(r"^What (is|are) (?:the )?([^?]{3,40})\?$", q))]
    simple = [(q, "small") for q in rng.sample(questions, per_label // 2)]
    simple += [(c, "small") for c in rng.sample(claims, per_label - per_label // 2)]

    def q() -> str:
        return rng.choice(questions)

    def c() -> str:
        return rng.choice(claims).rstrip(".")

    def t() -> str:
        return rng.choice(topics)

    templates = [
        lambda: f"{q()} Also, {_lower(q())}",
        lambda: f"{q()} {q()}",
        lambda: f"{q()} And {_lower(q())}",
        lambda: f"{q().rstrip('?')} and {_lower(q())}",
        lambda: f"{q()}\n{q()}\n{q()}",
        lambda: f"1. {q()}\n2. {q()}\n3. {q()}",
        lambda: f"{q().rstrip('?')}; {_lower(q().rstrip('?'))}; {_lower(q())}",
        lambda: f"Compare {_lower(c())} and {_lower(c())}.",
        lambda: f"Compare these two findings: {c()}. {c()}.",
        lambda: f"What is the difference between {t()} and {t()}?",
        lambda: f"What is {t()} and how does it relate to {t()}?",
        lambda: f"Is it true that {_lower(c())}? If so, how does that fit with the claim that {_lower(c())}?",
        lambda: f"Is it true that both {_lower(c())} and {_lower(c())}?",
        lambda: f"{q()} Then tell me: {_lower(q())}",
        lambda: f"{q()} What about {t()}? And {_lower(q())}",
    ]
    hand = list(HAND_WRITTEN)
    composed = [rng.choice(templates)() for _ in range(per_label - min(len(hand), per_label // 4))]
    large = [(text, "large") for text in hand[: per_label - len(composed)] + composed]
    items = simple + large
    rng.shuffle(items)
    return items


def evaluate(items: Sequence[tuple[str, str]]) -> Report:
    """Route each question with a two-tier router (no rules, no budgets) and score the tiers."""
    router = Router({"small": FakeChatModel("small"), "large": FakeChatModel("large")})
    confusion: Counter[tuple[str, str]] = Counter()
    errors = []
    for text, label in items:
        predicted = router.route([Message("user", text)]).tier
        confusion[label, predicted] += 1
        if predicted != label:
            errors.append((label, predicted, text))
    tp, fp, fn = confusion["large", "large"], confusion["small", "large"], confusion["large", "small"]
    return Report(
        total=len(items),
        accuracy=(tp + confusion["small", "small"]) / max(1, len(items)),
        precision=tp / max(1, tp + fp),
        recall=tp / max(1, tp + fn),
        confusion={(t, p): confusion[t, p] for t in LABELS for p in LABELS},
        errors=errors,
    )


def routed_large(data: Path) -> dict[str, tuple[int, int]]:
    """Over every single question in the pools (not just the sample): (sent to large, total)."""
    router = Router({"small": FakeChatModel("small"), "large": FakeChatModel("large")})
    counts = {}
    for name, pool in zip(("covid-qa", "scifact"), load_pools(data), strict=True):
        large = sum(router.route([Message("user", text)]).tier == "large" for text in pool)
        counts[name] = (large, len(pool))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--per-label", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--errors", type=int, default=10, help="misrouted questions to print")
    args = parser.parse_args()
    report = evaluate(build_set(args.data, args.per_label, args.seed))
    print(f"questions: {report.total} ({args.per_label} per label, seed {args.seed})")
    print(f"accuracy: {report.accuracy:.3f}")
    print(f'"large" precision: {report.precision:.3f}  recall: {report.recall:.3f}')
    print("confusion (rows: true, columns: predicted)")
    print(f"{'':>8}{'small':>8}{'large':>8}")
    for true in LABELS:
        print(f"{true:>8}" + "".join(f"{report.confusion[true, p]:>8}" for p in LABELS))
    for name, (large, total) in routed_large(args.data).items():
        print(f"all {total} {name} single questions: {large} ({large / total:.1%}) routed to large")
    for true, predicted, text in report.errors[: args.errors]:
        print(f"  {true} -> {predicted}: {text!r}")


def _tidy(text: str) -> str:
    return " ".join(text.split())


def _lower(text: str) -> str:
    """Lower-case the first letter unless the word is an acronym (``HIV``, ``SARS-CoV``)."""
    return text[0].lower() + text[1:] if len(text) > 1 and text[1].islower() else text


if __name__ == "__main__":
    main()
