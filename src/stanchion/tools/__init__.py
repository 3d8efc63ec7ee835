"""Tools a model may call (search, and any a package registers by entry point ``stanchion.tools``)."""

from stanchion.tools.base import Tool, ToolResult, parse_arguments
from stanchion.tools.registry import Toolbox, build_tool

__all__ = ["Tool", "ToolResult", "Toolbox", "build_tool", "parse_arguments"]
