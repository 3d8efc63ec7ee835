"""What an agent run produces: its events as they happen, and the run as a whole.

Events, in order: ``step`` (a model call begins), ``tool_call`` (the model asked for a tool),
``tool_result`` (what the tool returned, or the error the model will read), ``check`` (the draft
checked: ``ok``, and the problems sent back), ``answer`` (the final text), and last ``stop`` (the
reason and the run's totals). The API streams them; ``AgentRun`` is the same run in one piece.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from stanchion.models.pricing import ModelCost
from stanchion.types import Usage

EventKind = Literal["step", "tool_call", "tool_result", "check", "answer", "stop"]
StopReason = Literal[
    "answered",  # the model answered (and the check passed, or had no revision left)
    "max_steps",
    "max_tool_calls",
    "max_cost",
    "max_seconds",
    "model_error",  # the route's models failed (the error says how)
]


@dataclass(frozen=True, slots=True)
class AgentEvent:
    kind: EventKind
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"type": self.kind, **self.data}


@dataclass
class ToolRecord:
    """One tool call of a run and its outcome (what the audit log and ``--json`` show)."""

    step: int
    id: str
    name: str
    arguments: dict[str, Any]
    ok: bool = True
    result: str = ""
    error: str = ""
    sources: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": self.step,
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
        }
        out |= {"ok": self.ok, "result": self.result} if self.ok else {"ok": False, "error": self.error}
        return out | ({"sources": list(self.sources)} if self.sources else {})


@dataclass
class AgentRun:
    """A finished run. ``steps`` holds one entry per model call: the tool calls it made, or the
    draft it wrote and the check's verdict on it."""

    agent: str
    task: str
    answer: str = ""
    stop_reason: StopReason = "answered"
    error: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[ToolRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    costs: tuple[ModelCost, ...] = ()
    models: tuple[str, ...] = ()
    findings: list[dict[str, Any]] = field(default_factory=list)  # what the guards flagged in tool results
    memories: int = 0  # memories recalled into the prompt
    recalled: list[str] = field(default_factory=list)  # their texts (the caller's own: PII there is theirs)
    seconds: float = 0.0

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.costs)

    def as_json(self) -> dict[str, Any]:
        """The keys of ``stanchion agent run --json`` (and of the demo's ``agent``)."""
        return {
            "agent": self.agent,
            "task": self.task,
            "answer": self.answer,
            "steps": self.steps,
            "tool_calls": [t.as_json() for t in self.tool_calls],
            "stop_reason": self.stop_reason,
            **({"error": self.error} if self.error else {}),
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "cost_usd": self.cost_usd,
            "models": [c.as_json() for c in self.costs],
            **({"guards": self.findings} if self.findings else {}),
            "memories_recalled": self.memories,
            "seconds": round(self.seconds, 3),
        }
