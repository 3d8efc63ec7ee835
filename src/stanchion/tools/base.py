"""What a tool is: a name, what it does, the JSON schema of its arguments, and one call.

A tool is what a model may ask to run (``types.ToolSpec`` is how it is offered; ``types.ToolCall``
how the model asks). Every call carries the caller's ``RequestContext``: a tool reads and acts
as its caller may, never as the server, so a model that a prompt talks into calling a tool gains
nothing its caller lacks. Arguments come from a model and are checked against the schema before
the tool acts; a refusal is a ``ToolError`` whose message a model can read and correct.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from stanchion.errors import ToolError
from stanchion.request_context import RequestContext
from stanchion.types import ToolSpec

__all__ = ["Tool", "ToolResult", "parse_arguments"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """``content`` is what the model reads; ``data`` the same as JSON for a program; ``sources``
    the chunk ids it drew on (citations, and what a cache entry depends on)."""

    content: str
    data: Any = None
    sources: tuple[str, ...] = field(default=())


@runtime_checkable
class Tool(Protocol):
    """One tool. ``spec`` is how it is offered to a model; ``call`` runs it for ``context``'s caller."""

    @property
    def spec(self) -> ToolSpec: ...

    def call(self, arguments: Mapping[str, Any], context: RequestContext) -> ToolResult: ...


def parse_arguments(tool: str, model: type[M], arguments: Mapping[str, Any]) -> M:
    """``arguments`` checked against ``model`` (the schema a tool declares), or a ToolError naming
    each wrong argument and what is allowed."""
    if not isinstance(arguments, Mapping):
        raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}", tool=tool)
    try:
        return model.model_validate(dict(arguments))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {_wording(err)}" for err in exc.errors()
        )
        raise ToolError(problems, tool=tool) from None


def _wording(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown argument"
    if err["type"] == "missing":
        return "required"
    return str(err["msg"])
