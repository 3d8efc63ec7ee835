"""``Router``: send each request to the cheapest tier of models that should answer it well.

The decision (``Router.route``), in order:

1. **Rules.** The first ``RuleSpec`` whose pattern matches the last user message (``re.search``,
   case-insensitive) picks its tier.
2. **Complexity.** Otherwise ``score_complexity`` rates the question from 0 to 1. Below
   ``threshold`` (0.5) it goes to the cheapest tier; at or above it, to the next tiers, the range
   ``[threshold, 1]`` split evenly between them (with two tiers, everything >= 0.5 is "large").
3. **Budgets.** While the chosen tier's estimated cost (prompt tokens by chars/4 plus
   ``max_tokens``, or ``default_max_tokens``, at that tier's price) exceeds ``max_cost_usd``, or
   its latency estimate exceeds ``max_latency_ms``, the next cheaper tier is taken instead. The
   cheapest tier is used even when it is over budget too (the reasons say so).

Every step adds a line to ``RouteDecision.reasons``. ``complete`` and ``stream`` return what the
tier's model returns, unchanged (``Completion.model`` names the model that answered); a caller
that needs the decision calls ``route`` itself and then the tier's model from ``tiers``. There is
no "last decision" attribute, which concurrent requests would overwrite.

Latency estimates start from ``latency_estimates`` and follow an exponentially weighted moving
average of observed latencies (``observe``); ``complete`` and ``stream`` feed it the time each
request took on its tier.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from stanchion.models.base import Capabilities, ChatModel, ChatOptions, Piece, aclose_quietly
from stanchion.models.pricing import estimate_cost_usd
from stanchion.spec import PriceSpec, RuleSpec
from stanchion.types import Completion, Message, StreamEvent

T = TypeVar("T")

__all__ = ["ComplexityScore", "RouteDecision", "Router", "score_complexity"]

_W = re.IGNORECASE
# Several requests in one message: "also", "in addition", enumerations, semicolons, a second
# question joined by "and", or several sentences that each ask something.
_MULTI_PART = [
    (
        "'also'",
        re.compile(
            r"(^|[.?!;,:]\s*|\band\s+)(also|additionally|in addition|furthermore|moreover)\b|\bas well\s*\?",
            _W,
        ),
    ),
    ("semicolon", re.compile(r";\s*\S")),
    (
        "enumeration",
        re.compile(
            r"(?ms)^\s*(\d+[.)]|[-*•]|\(?[a-c]\))\s+\S.*?^\s*(\d+[.)]|[-*•]|\(?[a-c]\))\s+\S|\(1\).+\(2\)"
        ),
    ),
    ("first/second", re.compile(r"\b(first(ly)?|second(ly)?|finally|then)\b,", _W)),
    (
        "second question joined by 'and'",
        re.compile(r"\band (what|how|why|when|where|which|who|whether|does|do|is|are|can)\b", _W),
    ),
]
# Comparison or multi-hop: the answer has to relate several facts to each other.
_STRONG_COMPARISON = [
    (
        "'compare'",
        re.compile(r"\b(compare|comparing|comparison)\b|\b(in contrast|contrast (with|between|to))\b", _W),
    ),
    ("'difference between'", re.compile(r"\bdifferences? between\b", _W)),
    ("'versus'", re.compile(r"\b(versus|vs\.?)\s", _W)),
    ("'why ... and how'", re.compile(r"\bwhy\b.*\band how\b|\bhow\b.*\band why\b", _W)),
    ("'relate to'", re.compile(r"\bhow (does|do|did|is|are) .{3,}\b(relate|connect|compare)", _W)),
    ("pros and cons", re.compile(r"\b(pros and cons|trade-?offs?|advantages and disadvantages)\b", _W)),
    # "both <a clause> and <another>": two facts to establish, not "in both brain and adrenals".
    ("'both ... and'", re.compile(r"\bboth\s+(\S+\s+){4,}and\b", _W)),
]
_WEAK_COMPARISON = [
    ("'both'", re.compile(r"\bboth\b", _W)),
    ("'relationship'", re.compile(r"\b(relationship|relation|correlat\w*|link) between\b", _W)),
    ("'differ'", re.compile(r"\b(differ|differs|different from|similarit\w*)\b", _W)),
]
# A number standing alone: not part of a name such as "Smc5/6", "miR-142-5P" or "SARS-CoV-2".
_NUMBER = r"(?<![\w.-])\d[\d,]*(?:\.\d+)?(?![\w-])"
# Reasoning, maths or code: worth the larger model even when short.
_REASONING = [
    (
        "arithmetic",
        re.compile(
            # "-" and "/" only with spaces around: "10-20 years", "MEK 1/2" and "10/66" are not sums.
            rf"{_NUMBER}\)?\s*[+*^×÷]\s*\(?{_NUMBER}|{_NUMBER}\)?\s+[-/]\s+\(?{_NUMBER}|"
            rf"\b(what|how much) is {_NUMBER}\s*% of\b|=\s*-?\d|\b\d+[a-z]\s+[-+]\s+\d",
            _W,
        ),
    ),
    ("'how many ... if'", re.compile(r"\bhow (many|much|long)\b.*\bif\b", _W)),
    (
        "'calculate'",
        re.compile(r"\b(calculate|compute|solve|prove|derive|simplify)\b", _W),
    ),
    ("'step by step'", re.compile(r"\b(step by step|show your work|reason through|work out)\b", _W)),
    ("code", re.compile(r"```|`[^`\n]*\([^`\n]*`")),  # a fence, or inline code with a call
    (
        "code request",
        re.compile(
            r"\b(write|implement|debug|refactor|fix|optimi[sz]e)\b.{0,40}\b(function|program|script|query|"
            r"regex|class|code|algorithm|test)s?\b",
            _W,
        ),
    ),
    (
        "SQL/Python keywords",
        re.compile(
            r"\bselect\b.+\bfrom\b|\b(group by|inner join|left join|insert into)\b|\bdef \w+\(|"
            r"\bimport \w+|\blambda\b|\breturn \w+",
            _W,
        ),
    ),
    ("big-O", re.compile(r"\bO\([^)]*n[^)]*\)|\btime complexity\b", _W)),
]


@dataclass(frozen=True, slots=True)
class ComplexityScore:
    """How hard a question looks (0..1), the features measured, and the reasons in words."""

    score: float
    features: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    tier: str
    model_name: str
    score: float
    reasons: list[str]
    estimated_cost_usd: float = 0.0


def score_complexity(question: str, *, sources_needed: int | None = None) -> ComplexityScore:
    """Rate ``question`` 0..1; each cue found raises the odds that it needs the larger model.

    Cues combine like independent pieces of evidence (``1 - prod(1 - weight)``): one strong cue
    (a second question, "compare", a calculation, code) is enough on its own to pass 0.5; weak
    cues ("both", "relationship", length, two sources) need company.
    """
    words = len(question.split())
    questions = len(re.findall(r"\?+(?=\s|$)", question))
    evidence: list[tuple[float, str]] = []
    if words > 25:
        evidence.append((min(0.4, (words - 25) / 50), f"long question ({words} words)"))
    if questions >= 2:
        evidence.append((0.6 if questions == 2 else 0.75, f"{questions} questions"))
    multi = [name for name, pattern in _MULTI_PART if pattern.search(question)]
    evidence += [(0.5, f"multi-part cue: {name}") for name in multi]
    strong = [name for name, pattern in _STRONG_COMPARISON if pattern.search(question)]
    weak = [name for name, pattern in _WEAK_COMPARISON if pattern.search(question)]
    evidence += [(0.55, f"comparison cue: {name}") for name in strong]
    evidence += [(0.3, f"comparison cue: {name}") for name in weak]
    reasoning = [name for name, pattern in _REASONING if pattern.search(question)]
    numbers = len(re.findall(_NUMBER, question))
    if numbers >= 3 and (questions or re.match(r"\s*(how|what|calculate|compute)\b", question, _W)):
        reasoning.append(f"word problem ({numbers} numbers)")
    evidence += [(0.6, f"reasoning/maths/code cue: {name}") for name in reasoning]
    if sources_needed is not None and sources_needed >= 2:
        evidence.append((min(0.6, 0.1 + 0.2 * (sources_needed - 1)), f"needs {sources_needed} sources"))

    remaining = 1.0
    for weight, _ in evidence:
        remaining *= 1.0 - weight
    features = {
        "words": float(words),
        "questions": float(questions),
        "multi_part": float(len(multi)),
        "comparison": float(len(strong) + len(weak)),
        "reasoning": float(len(reasoning)),
        "sources_needed": float(sources_needed or 0),
    }
    return ComplexityScore(round(1.0 - remaining, 4), features, [reason for _, reason in evidence])


class Router:
    """A ChatModel that picks one of ``tiers`` (cheapest first) per request; module docstring."""

    def __init__(
        self,
        tiers: Mapping[str, ChatModel],
        *,
        prices: Mapping[str, PriceSpec] | None = None,
        rules: Sequence[RuleSpec] = (),
        max_cost_usd: float | None = None,
        max_latency_ms: float | None = None,
        latency_estimates: Mapping[str, float] | None = None,
        threshold: float = 0.5,
        default_max_tokens: int = 512,
        latency_alpha: float = 0.2,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not tiers:
            raise ValueError("a router needs at least one tier")
        self.tiers = dict(tiers)
        unknown = [r.tier for r in rules if r.tier not in self.tiers]
        if unknown:
            raise ValueError(f"rules name unknown tiers {unknown} (tiers: {', '.join(self.tiers)})")
        self._order = list(self.tiers)
        # Any tier may answer, so the router can do what all of them can.
        self._capabilities = Capabilities.common(self.tiers.values())
        self._prices = dict(prices or {})
        self._rules = [(rule, re.compile(rule.pattern, _W)) for rule in rules]
        self.max_cost_usd = max_cost_usd
        self.max_latency_ms = max_latency_ms
        self._latency = dict(latency_estimates or {})
        self.threshold = threshold
        self.default_max_tokens = default_max_tokens
        self._alpha = latency_alpha
        self._clock = clock

    @property
    def name(self) -> str:
        return f"router({','.join(self._order)})"

    @property
    def capabilities(self) -> Capabilities:
        """What every tier can do (extractive only when each one quotes its sources)."""
        return self._capabilities

    async def aclose(self) -> None:
        """Close every tier's model (each once); they stay usable, so this is safe twice."""
        for model in {id(m): m for m in self.tiers.values()}.values():
            await model.aclose()

    def latency_estimate(self, tier: str) -> float | None:
        """The current latency estimate of ``tier`` in ms, or None when nothing is known."""
        return self._latency.get(tier)

    def observe(self, tier: str, ms: float) -> None:
        """Fold an observed latency into the tier's estimate (EWMA; the first one is taken as is)."""
        previous = self._latency.get(tier)
        self._latency[tier] = ms if previous is None else self._alpha * ms + (1 - self._alpha) * previous

    def route(
        self,
        messages: Sequence[Message],
        options: ChatOptions | None = None,
        *,
        sources_needed: int | None = None,
    ) -> RouteDecision:
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        complexity = score_complexity(question, sources_needed=sources_needed)
        reasons = [f"complexity {complexity.score:.2f}", *complexity.reasons]
        rule = next((r for r, pattern in self._rules if pattern.search(question)), None)
        if rule is not None:
            index = self._order.index(rule.tier)
            reasons.append(f"rule /{rule.pattern}/ -> {rule.tier}")
        else:
            index = self._tier_for(complexity.score)
            side = "below" if complexity.score < self.threshold else "at or above"
            reasons.append(f"score {side} threshold {self.threshold:g} -> {self._order[index]}")

        max_tokens = (options.max_tokens if options else None) or self.default_max_tokens
        cost = self._cost(index, messages, max_tokens)
        while True:
            tier = self._order[index]
            over = []
            if self.max_cost_usd is not None and cost > self.max_cost_usd:
                over.append(f"estimated cost ${cost:.6f} > max_cost_usd ${self.max_cost_usd:g}")
            latency = self._latency.get(tier)
            if self.max_latency_ms is not None and latency is not None and latency > self.max_latency_ms:
                over.append(f"latency estimate {latency:.0f} ms > max_latency_ms {self.max_latency_ms:g}")
            if not over:
                break
            if index == 0:
                reasons.append(f"{tier} is the cheapest tier; kept though {' and '.join(over)}")
                break
            index -= 1
            reasons.append(f"{tier}: {' and '.join(over)} -> {self._order[index]}")
            cost = self._cost(index, messages, max_tokens)
        model = self.tiers[tier]
        return RouteDecision(tier, model.name, complexity.score, reasons, cost)

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        tier = self.route(messages, options).tier
        started = self._clock()
        completion = await self.tiers[tier].complete(messages, options)
        self.observe(tier, (self._clock() - started) * 1000)
        return completion

    async def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        tier = self.route(messages, options).tier
        async for event in self._observed(tier, self.tiers[tier].stream(messages, options)):
            yield event

    async def stream_pieces(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[Piece]:
        """``stream`` as pieces (``models.base.stream_pieces``), from the chosen tier."""
        tier = self.route(messages, options).tier
        async for piece in self._observed(tier, self.tiers[tier].stream_pieces(messages, options)):
            yield piece

    async def _observed(self, tier: str, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """``stream``, timing the tier when it ends (not when the client leaves early)."""
        started = self._clock()
        try:
            async for item in stream:
                yield item
        finally:
            await aclose_quietly(stream)
        self.observe(tier, (self._clock() - started) * 1000)

    def _tier_for(self, score: float) -> int:
        if score < self.threshold or len(self._order) == 1:
            return 0
        above = len(self._order) - 1
        fraction = (score - self.threshold) / max(1e-9, 1.0 - self.threshold)
        return min(above, 1 + int(fraction * above))

    def _cost(self, index: int, messages: Sequence[Message], max_tokens: int) -> float:
        price = self._prices.get(self._order[index], PriceSpec())
        return estimate_cost_usd(messages, max_tokens, price)
