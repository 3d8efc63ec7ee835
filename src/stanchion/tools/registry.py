"""The tools a spec declares, each built by the factory its ``tool`` names.

Factories are found by entry point (group ``stanchion.tools``), built-in or from another package,
exactly as chat model providers are (``core/plugins.py``). Another package adds a tool by
declaring, in its own ``pyproject.toml``::

    [project.entry-points."stanchion.tools"]
    weather = "my_package.tools:build_weather"

where ``build_weather(name, options, *, retriever)`` returns a ``Tool`` (``tools/base.py``), and a
spec then offers it: ``tools: {weather: {tool: weather, options: {...}}}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from pydantic import ValidationError

from stanchion.core import plugins
from stanchion.errors import SpecError, ToolError
from stanchion.request_context import RequestContext
from stanchion.retrieve.search import Retriever
from stanchion.spec import ToolConfig
from stanchion.tools.base import Tool, ToolResult
from stanchion.types import ToolSpec

__all__ = ["ToolFactory", "Toolbox", "build_tool"]


class ToolFactory(Protocol):
    """What a ``stanchion.tools`` entry point names. ``retriever`` is called only by a tool that
    searches the index."""

    def __call__(
        self, name: str, options: Mapping[str, Any], *, retriever: Callable[[], Retriever]
    ) -> Tool: ...


def build_tool(
    name: str, config: ToolConfig, *, retriever: Callable[[], Retriever], base_dir: Path | None = None
) -> Tool:
    """One tool, built by the factory registered under ``config.tool``; a SpecError naming the
    key when the factory is unknown, refuses the options, or builds something that is no Tool."""
    key = f"tools.{name}"
    try:
        factory = cast("ToolFactory", plugins.load(plugins.TOOLS, config.tool))
    except plugins.PluginNotFound as exc:
        raise SpecError(
            f"{key}.tool: unknown tool {config.tool!r} ({plugins.registered_text(exc.registered)})",
            key_path=f"{key}.tool",
        ) from None
    try:
        # A factory that reads files (a database) takes the spec's folder, which relative paths
        # in its options are read from; the protocol's three arguments are all others need.
        extra = {"base_dir": base_dir} if base_dir is not None and _takes_base_dir(factory) else {}
        tool = factory(name, config.options, retriever=retriever, **extra)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise SpecError(f"{key}.options: {problems}", key_path=f"{key}.options") from None
    if not isinstance(tool, Tool):
        raise SpecError(
            f"{key}.tool: {config.tool!r} built {type(tool).__name__}, which is not a Tool "
            "(it needs a spec and a call(arguments, context) method)",
            key_path=f"{key}.tool",
        )
    if tool.spec.name != name:
        raise SpecError(
            f"{key}.tool: {config.tool!r} built a tool named {tool.spec.name!r}; it must take the "
            f"name the spec gives it ({name!r})",
            key_path=f"{key}.tool",
        )
    return tool


class Toolbox:
    """The spec's tools by name, each built on first use."""

    def __init__(
        self,
        configs: Mapping[str, ToolConfig],
        *,
        retriever: Callable[[], Retriever],
        base_dir: Path | None = None,
    ) -> None:
        self._configs = dict(configs)
        self._retriever = retriever
        self._base_dir = base_dir
        self._built: dict[str, Tool] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._configs)

    def get(self, name: str) -> Tool:
        """The tool called ``name``, or a ToolError naming the tools there are."""
        if name not in self._configs:
            known = ", ".join(self.names) or "none (declare them under tools: in stanchion.yaml)"
            raise ToolError(f"no such tool; tools: {known}", tool=name)
        if name not in self._built:
            self._built[name] = build_tool(
                name, self._configs[name], retriever=self._retriever, base_dir=self._base_dir
            )
        return self._built[name]

    def specs(self, names: list[str] | None = None) -> list[ToolSpec]:
        """How the tools (all, or ``names``) are offered to a model."""
        return [self.get(n).spec for n in (self.names if names is None else names)]

    def call(self, name: str, arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        """Run ``name`` for ``context``'s caller."""
        return self.get(name).call(arguments, context)


def _takes_base_dir(factory: object) -> bool:
    try:
        return "base_dir" in inspect.signature(factory).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False
