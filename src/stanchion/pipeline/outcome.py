"""What one request used and returned: text, tokens and their cost per model, chunks, status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stanchion.models.pricing import ModelCost, model_costs
from stanchion.spec import PriceSpec
from stanchion.types import ToolCall, Usage

if TYPE_CHECKING:
    from stanchion.answer import Answer


@dataclass
class Outcome:
    """What one answer used and returned. ``model`` wrote the final text; ``costs`` has one entry
    per model that produced tokens."""

    text: str = ""
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    costs: tuple[ModelCost, ...] = ()
    chunks: tuple[str, ...] = ()
    status: int = 200
    detail: dict[str, object] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()
    finish: str = "stop"

    @property
    def cost(self) -> float:
        return sum(c.cost_usd for c in self.costs)

    def bill(self, model: str, usage: Usage, prices: Mapping[str, PriceSpec]) -> None:
        """Record ``usage`` (tokens nobody was credited with go to ``model``), priced per model."""
        self.model = model or self.model
        self.usage = usage.attributed(self.model)
        self.costs = tuple(model_costs(self.usage, prices))

    def take_answer(self, answer: Answer) -> None:
        """Fill in from a grounded answer (priced by its Answerer): the chunks it was shown,
        citations, stage latencies."""
        self.text, self.model, self.usage, self.costs = answer.text, answer.model, answer.usage, answer.costs
        sources = answer.sources
        self.chunks = (
            tuple(s.hit.chunk.id for s in sources) if sources else tuple(c.chunk_id for c in answer.citations)
        )
        self.detail = {
            "citations": [c.as_json() for c in answer.citations],
            "latency_ms": dict(answer.latency_ms),
            "abstained": answer.abstained,
        }

    def models_json(self) -> list[dict[str, object]]:
        """Each model that produced tokens, with its own tokens and cost (responses, audit)."""
        return [c.as_json() for c in self.costs]
