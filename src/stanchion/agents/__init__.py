"""Agents: a model route that may call tools until it answers or reaches a limit, checks its
draft before the user sees it, and remembers each user across sessions (``agents/runner.py``)."""

from stanchion.agents.check import CheckResult, DraftCheck
from stanchion.agents.run import AgentEvent, AgentRun, StopReason, ToolRecord
from stanchion.agents.runner import Agent, AgentParts

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentParts",
    "AgentRun",
    "CheckResult",
    "DraftCheck",
    "StopReason",
    "ToolRecord",
]
