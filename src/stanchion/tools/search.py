"""``search``: the index, as a tool. A model looks things up the way ``/v1/search`` does, within
its caller's tenant and access groups (``core.filters.caller_filter``), never beyond them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stanchion.core.filters import caller_filter
from stanchion.request_context import RequestContext
from stanchion.retrieve.search import Retriever
from stanchion.tools.base import ToolResult, parse_arguments
from stanchion.types import ToolSpec

__all__ = ["SearchTool", "build"]

_MAX_K = 20  # a model's context, not the index, bounds how much one call may return
_EXCERPT_CHARS = 1200


class SearchArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000, description="what to look for, in plain words")
    k: int = Field(5, ge=1, le=_MAX_K, description="how many passages to return")
    filters: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="metadata filters: key=value, key=a,b (any of), key!=v, key>=v, key<=v",
    )
    mode: Literal["bm25", "dense", "hybrid"] | None = Field(None, description="default: the spec's")


class SearchTool:
    """Searches the index for the caller; each passage is numbered, titled and cut to a length a
    model can read, with its chunk id (``sources``) for citations."""

    def __init__(
        self,
        retriever: Callable[[], Retriever],
        *,
        name: str = "search",
        description: str = "",
        mode: str = "hybrid",
    ) -> None:
        self._retriever = retriever
        self.mode = mode
        self.spec = ToolSpec(
            name,
            description
            or "Search the organisation's documents. Returns the passages that best match the query, "
            "each with its title and source; cite them by number.",
            SearchArguments.model_json_schema(),
        )

    def call(self, arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        args = parse_arguments(self.spec.name, SearchArguments, arguments)
        where = caller_filter(context, args.filters)  # a bad filter is a SearchError, as in /v1/search
        result = self._retriever().search(args.query, k=args.k, mode=args.mode or self.mode, where=where)
        passages = [
            {
                "number": hit.rank,
                "chunk_id": hit.chunk.id,
                "title": str(hit.chunk.metadata.get("title", "")),
                "source": str(hit.chunk.metadata.get("path", "") or hit.chunk.metadata.get("source", "")),
                "text": hit.chunk.text[:_EXCERPT_CHARS],
            }
            for hit in result.hits
        ]
        if not passages:
            content = f"No passage matches {args.query!r}."
        else:
            content = "\n\n".join(
                f"[{p['number']}] {p['title'] or p['source']}\n{p['text']}" for p in passages
            )
        return ToolResult(content, {"passages": passages}, tuple(hit.chunk.id for hit in result.hits))


class SearchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field("", description="what the model is told the tool does (default: a generic one)")
    mode: Literal["bm25", "dense", "hybrid"] = "hybrid"


def build(name: str, options: Mapping[str, Any], *, retriever: Callable[[], Retriever]) -> SearchTool:
    """The ``stanchion.tools`` entry point (options: ``description``, ``mode``); an unknown or bad
    option is a pydantic ValidationError, which the spec's loader reports under its key path."""
    chosen = SearchOptions.model_validate(dict(options))
    return SearchTool(retriever, name=name, description=chosen.description, mode=chosen.mode)
