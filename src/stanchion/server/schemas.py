"""Request and response bodies of the HTTP API (they make up the served OpenAPI schema).

OpenAI-compatible requests ignore fields Stanchion does not use (``n``, ``logprobs``, ...), as
OpenAI-compatible servers do; Stanchion's own endpoints reject unknown fields so typos surface.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
FilterExpr = Annotated[
    str, Field(min_length=1, max_length=512, description="key=value, key!=v, key>=v, key=a,b")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OpenAI(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- chat completions ------------------------------------------------------------------------------


class ContentPart(_OpenAI):
    type: str
    text: str | None = None


class ToolCallFunction(_OpenAI):
    name: str
    arguments: str = ""


class ToolCallIn(_OpenAI):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessageIn(_OpenAI):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type in ("text", "input_text"))
        return self.content or ""


class StreamOptions(_OpenAI):
    include_usage: bool = False


class ChatCompletionRequest(_OpenAI):
    model: str = Field(min_length=1, max_length=128, description="a route of the spec")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32_768)
    stop: str | list[str] | None = None
    user: str | None = None
    # Stanchion extensions (OpenAI clients pass them with extra_body=...).
    filters: list[FilterExpr] = Field(default_factory=list, max_length=32)
    k: int | None = Field(None, ge=1, le=50, description="sources packed into the prompt (grounded routes)")


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str = "stop"


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CitationOut(BaseModel):
    number: int
    document_id: str
    chunk_id: str
    title: str = ""
    snippet: str = ""
    path: str = ""
    page: int | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: UsageOut
    citations: list[CitationOut] = Field(
        default_factory=list, description="grounded routes: the sources cited"
    )
    stanchion: dict[str, Any] = Field(default_factory=dict, description="model used, cost, per-stage latency")


# --- embeddings ------------------------------------------------------------------------------------


class EmbeddingsRequest(_OpenAI):
    input: str | list[str] = Field(description="one text or up to 256 texts")
    model: str = Field("", max_length=256)
    encoding_format: Literal["float"] = "float"


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float]


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: dict[str, int]


# --- search and answer -----------------------------------------------------------------------------


class SearchRequest(_Strict):
    query: str = Field(min_length=1, max_length=4096)
    k: int = Field(10, ge=1, le=100)
    mode: Literal["bm25", "dense", "hybrid"] = "hybrid"
    filters: list[FilterExpr] = Field(default_factory=list, max_length=32)


class SearchHit(BaseModel):
    chunk_id: str
    document_id: str
    score: float
    text: str
    title: str
    source: str
    path: str
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    object: Literal["search.result"] = "search.result"
    mode: str
    hits: list[SearchHit]
    latency_ms: dict[str, float]


class AnswerRequest(_Strict):
    question: str = Field(min_length=1, max_length=8192)
    route: str | None = Field(None, max_length=128, description="default: the spec's answer.route")
    k: int | None = Field(None, ge=1, le=50)
    filters: list[FilterExpr] = Field(default_factory=list, max_length=32)


class AnswerResponse(BaseModel):
    answer: str
    citations: list[CitationOut]
    model: str
    usage: dict[str, int]
    cost_usd: float
    latency_ms: dict[str, float]
    abstained: bool


# --- documents and jobs ----------------------------------------------------------------------------


class DocumentText(_Strict):
    filename: str = Field(
        min_length=1, max_length=255, description="decides the loader: .md, .html, .eml ..."
    )
    text: str = Field(min_length=1)
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=64)
    access_groups: list[Name] = Field(default_factory=list, max_length=64)


class JobOut(BaseModel):
    id: str
    object: Literal["ingest.job"] = "ingest.job"
    status: Literal["queued", "running", "done", "failed"]
    filename: str
    created_at: float
    updated_at: float
    attempts: int
    error: str | None
    result: dict[str, Any]


class DocumentOut(BaseModel):
    id: str
    object: Literal["document"] = "document"
    source: str
    path: str
    title: str
    chunk_count: int
    metadata: dict[str, Any]
    access_groups: list[str]


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentOut]


class Deleted(BaseModel):
    id: str
    object: Literal["document"] = "document"
    deleted: bool = True
