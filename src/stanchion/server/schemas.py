"""Request and response bodies of the HTTP API (they make up the served OpenAPI schema).

OpenAI-compatible requests ignore fields Stanchion does not use (``n``, ``logprobs``, ...), as
OpenAI-compatible servers do; Stanchion's own endpoints reject unknown fields so typos surface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictInt,
    field_validator,
)
from pydantic_core import PydanticCustomError

from stanchion.server.params import NUL_FREE, Storable, storable
from stanchion.server.uploads import FILENAME_PATTERN, clean_filename
from stanchion.types import TENANT_KEY, unsendable

# White space as Python's ``str.strip`` and ``re`` see it, spelled out: ``\s`` differs between Python,
# JSON Schema (ECMA 262) and pydantic's regex engine.
_WS = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{_WS}]"  # a pattern: at least one character that is not white space
# The same for text a store keeps (an audited question): and no NUL, as ``params.Storable`` checks.
NOT_BLANK_STORABLE = f"^[^\\x00]*[^{_WS}\\x00][^\\x00]*$"
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
MAX_GROUPS = 64
MAX_METADATA_KEYS = 64
# A form's comma-separated groups as the server reads them: split at commas, stripped, empty items
# dropped, then at most MAX_GROUPS names.
_NAME = "[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
GROUP_LIST_PATTERN = f"^[{_WS},]*(?:{_NAME}(?:[{_WS}]*,[{_WS},]*{_NAME}){{0,{MAX_GROUPS - 1}}}[{_WS},]*)?$"
# The grammar ``retrieve.filters.parse_condition`` accepts (key, operator, a value that is not blank),
# for clients and fuzzers. The server parses filters itself: a bad one is a 400 that shows the syntax
# (and text no store can hold, a 422 as for every parameter: ``params.Storable``).
_FILTER_PATTERN = (
    f"^[{_WS}]*[A-Za-z_][A-Za-z0-9_.-]*[{_WS}]*"
    f"(?:(?:!=|>=|<=|=)[{_WS}]*[^{_WS}\\x00]|[<>](?:[{_WS}]+[^{_WS}\\x00]|[^={_WS}\\x00]))"
    f"[^\\n\\x00]*?[{_WS}]*$"
)
FilterExpr = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        description="key=value, key!=v, key>=v, key=a,b",
        json_schema_extra={"pattern": _FILTER_PATTERN},
    ),
    Storable,
]
_Stored = Annotated[str, Storable]
# Metadata keys the server sets on every document; an upload may not.
RESERVED_METADATA = (TENANT_KEY, "_fingerprint")


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 49.0 is the integer 49 (JSON Schema says so too, and schema-driven
    clients send it), while ``true`` is not 1 and 49.5 is no count."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Count50 = Annotated[StrictInt, Field(ge=1, le=50), BeforeValidator(_whole_number)]
Count100 = Annotated[StrictInt, Field(ge=1, le=100), BeforeValidator(_whole_number)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OpenAI(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _all_sendable(value: Any) -> Any:
    """``value`` once no string in it (dict keys too) holds a lone surrogate: what goes to a
    provider is JSON in UTF-8, which cannot carry one (``types.unsendable``). These fields are
    sent, never stored, so a NUL (JSON's ``\\u0000``) passes, as the schema allows."""
    if isinstance(value, str):
        if problem := unsendable(value):
            raise PydanticCustomError("unsendable_text", "{problem}", {"problem": problem})
    elif isinstance(value, BaseModel):
        _all_sendable(value.model_dump())
    elif isinstance(value, dict):
        for key, item in value.items():
            _all_sendable(key)
            _all_sendable(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _all_sendable(item)
    return value


# --- chat completions ------------------------------------------------------------------------------


class ContentPart(_OpenAI):
    type: str
    text: str | None = Field(None, json_schema_extra=NUL_FREE)  # checked with the message


class ToolCallFunction(_OpenAI):
    name: str
    arguments: str = ""


class ToolCallIn(_OpenAI):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class _MessageIn(_OpenAI):
    content: str | list[ContentPart] | None = Field(None, json_schema_extra=NUL_FREE)
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _storable(cls, content: str | list[ContentPart] | None) -> str | list[ContentPart] | None:
        """Text every layer can take: no tokenizer, provider or audit record meets a lone surrogate."""
        for text in [content] if isinstance(content, str) else [p.text or "" for p in content or ()]:
            storable(text)
        return content

    @field_validator("name", "tool_calls", "tool_call_id")
    @classmethod
    def _storable_fields(cls, value: Any) -> Any:
        return _all_sendable(value)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type in ("text", "input_text"))
        return self.content or ""


class SystemMessageIn(_MessageIn):
    role: Literal["system", "developer"]


class UserMessageIn(_MessageIn):
    role: Literal["user"]


class AssistantMessageIn(_MessageIn):
    role: Literal["assistant"]


class ToolMessageIn(_MessageIn):
    role: Literal["tool"]
    tool_call_id: str = Field(min_length=1, description="the id of the call this result answers")


# One schema per role, so a tool result without the call it answers is invalid in the schema itself.
ChatMessageIn = Annotated[
    SystemMessageIn | UserMessageIn | AssistantMessageIn | ToolMessageIn, Field(discriminator="role")
]


class StreamOptions(_OpenAI):
    include_usage: bool = False


class FunctionIn(_OpenAI):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolIn(_OpenAI):
    type: Literal["function"] = "function"
    function: FunctionIn


class ToolChoiceFunction(_OpenAI):
    name: str


class ToolChoiceIn(_OpenAI):
    type: Literal["function"] = "function"
    function: ToolChoiceFunction


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
    tools: list[ToolIn] | None = Field(None, max_length=128, description="gateway routes only")
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceIn | None = None
    # Stanchion extensions (OpenAI clients pass them with extra_body=...).
    filters: list[FilterExpr] = Field(default_factory=list, max_length=32)
    k: int | None = Field(None, ge=1, le=50, description="sources packed into the prompt (grounded routes)")
    cache: bool | None = Field(
        None, description="false: do not answer from the response cache (the fresh answer is still stored)"
    )

    @field_validator("stop", "user", "tools", "tool_choice")
    @classmethod
    def _storable_fields(cls, value: Any) -> Any:
        """The one text rule for every string sent upstream, as for message content (a lone
        surrogate in ``stop`` or a tool's schema was a 500 from the provider adapter)."""
        return _all_sendable(value)


class FunctionCallOut(BaseModel):
    name: str
    arguments: str  # JSON, as OpenAI sends it


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


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
    stanchion: dict[str, Any] = Field(
        default_factory=dict,
        description="model used, cost, per-stage latency; grounded routes: `abstained` (true when the "
        "sources did not answer and the text is the abstain sentence)",
    )


class _Exact(BaseModel):
    # What the server sends is exactly this: the stream tests validate every event against it.
    model_config = ConfigDict(extra="forbid")


class ToolCallDelta(_Exact):
    index: int
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChunkDelta(_Exact):
    role: Literal["assistant"] | None = Field(None, description="on the first delta only")
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = Field(None, description="one delta per finished call")


class ChunkChoice(_Exact):
    index: int
    delta: ChunkDelta
    finish_reason: str | None


class ChatCompletionChunk(_Exact):
    """One event of a streamed completion (``data: {...}``); ``data: [DONE]`` ends the stream."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice] = Field(description="empty on the usage chunk")
    usage: UsageOut | None = Field(None, description="the last chunk, with stream_options.include_usage")
    citations: list[CitationOut] | None = Field(None, description="grounded routes, on the finishing chunk")
    stanchion: dict[str, Any] | None = Field(
        None, description="on the finishing chunk: model used, cost; grounded routes: `abstained`"
    )


# --- embeddings ------------------------------------------------------------------------------------

EmbedText = Annotated[str, Field(min_length=1, max_length=32_000, pattern=NOT_BLANK)]


class EmbeddingsRequest(_OpenAI):
    input: EmbedText | Annotated[list[EmbedText], Field(min_length=1, max_length=256)] = Field(
        description="one text or up to 256 texts"
    )
    model: str = Field(
        min_length=1, max_length=256, description="the spec's `embedding.model` (`GET /v1/models` lists it)"
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`base64`: each vector as little-endian float32 bytes, base64-encoded"
    )
    dimensions: int | None = Field(
        None, ge=1, description="only the model's own dimension: its vectors cannot be shortened"
    )


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 with `encoding_format: base64`")


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: dict[str, int]


# --- search and answer -----------------------------------------------------------------------------


class SearchRequest(_Strict):
    query: Annotated[str, Field(min_length=1, max_length=4096, pattern=NOT_BLANK), Storable] = Field(
        json_schema_extra={"pattern": NOT_BLANK_STORABLE}
    )
    k: Count100 | None = Field(None, description="default: the spec's `retrieval.k`")
    mode: Literal["bm25", "dense", "hybrid"] | None = Field(
        None, description="default: the spec's `retrieval.mode`"
    )
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
    question: Annotated[str, Field(min_length=1, max_length=8192, pattern=NOT_BLANK), Storable] = Field(
        json_schema_extra={"pattern": NOT_BLANK_STORABLE}
    )
    route: str | None = Field(None, max_length=128, description="default: the spec's answer.route")
    k: Count50 | None = None
    filters: list[FilterExpr] = Field(default_factory=list, max_length=32)
    cache: bool | None = Field(
        None, description="false: do not answer from the response cache (the fresh answer is still stored)"
    )


class ModelUsageOut(BaseModel):
    """One model's share of an answer: the tokens it produced and their cost at its price."""

    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


class AnswerResponse(BaseModel):
    answer: str
    citations: list[CitationOut]
    model: str = Field(description="the model that wrote the answer; empty when none was asked")
    usage: dict[str, int]
    cost_usd: float = Field(description="the sum of `models`: each model's tokens at its own price")
    models: list[ModelUsageOut] = Field(
        default_factory=list, description="every model that produced tokens (a retry may use another)"
    )
    latency_ms: dict[str, float]
    abstained: bool = Field(
        description="the sources did not answer: `answer` is the abstain sentence, no citations"
    )
    cache: dict[str, Any] | None = Field(
        None, description="routes with a cache: hit or miss, the tier, tokens and cost saved"
    )
    guards: list[dict[str, Any]] | None = Field(
        None,
        description="with guards declared: what they found and did (an injection flagged or stripped, "
        "PII masked for the model, an answer redacted)",
    )


# --- documents and jobs ----------------------------------------------------------------------------


class DocumentFields(_Strict):
    """What an upload declares besides its content; a multipart form is checked by this model too."""

    filename: Annotated[str, AfterValidator(clean_filename)] = Field(
        min_length=1,
        max_length=255,
        description="decides the loader: .md, .html, .eml ...; kept as its last path component",
        json_schema_extra={"pattern": FILENAME_PATTERN},
    )
    metadata: dict[_Stored, _Stored | int | FiniteFloat | bool] = Field(  # no store's JSON holds inf or NaN
        default_factory=dict,
        max_length=MAX_METADATA_KEYS,
        json_schema_extra={"propertyNames": {"not": {"enum": list(RESERVED_METADATA)}, **NUL_FREE}},
    )
    access_groups: list[Name] = Field(default_factory=list, max_length=MAX_GROUPS)


class DocumentText(DocumentFields):
    text: str = Field(min_length=1)


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


def page_bounds(ids: Sequence[str | int], *, fetched: int, limit: int) -> dict[str, Any]:
    """``first_id``, ``last_id`` and ``has_more`` of a list page, read as ``limit + 1`` rows (the
    extra one, never shown, says that another page follows)."""
    return {
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
        "has_more": fetched > limit,
    }


class JobList(BaseModel):
    """Newest first: pass ``last_id`` as ``before`` for the next page while ``has_more``."""

    object: Literal["list"] = "list"
    data: list[JobOut]
    first_id: str | None
    last_id: str | None
    has_more: bool


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
    """OpenAI's list shape: pass ``last_id`` as ``after`` for the next page while ``has_more``."""

    object: Literal["list"] = "list"
    data: list[DocumentOut]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Deleted(BaseModel):
    id: str
    object: Literal["document"] = "document"
    deleted: bool = True


# --- operations and errors -------------------------------------------------------------------------


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description="each backend: 'ok' or 'error: <kind>'")
    audit_pending: int = Field(0, description="audit records this worker holds until the database takes them")


class ErrorDetail(BaseModel):
    message: str
    type: Literal["invalid_request_error", "server_error"]
    code: str = Field(description="stable and machine-readable: model_not_found, rate_limited, ...")
    param: str | None = Field(description="the request field at fault, if one is")


class ErrorResponse(BaseModel):
    error: ErrorDetail


_ERRORS = {
    400: "Malformed body or filter, or a request the route's model cannot take",
    401: "No API key, or one that is not valid or was revoked",
    403: "The API key lacks the scope or access group",
    404: "No such route (`model`), document or job; another tenant's ids answer 404 too",
    409: "Another job that excludes this one (a replacement of the same document) is queued or running",
    413: "The body is over the server's size limit",
    415: "The body is neither JSON nor multipart form data",
    422: "The request does not match this schema, or a value in it cannot be used",
    429: "The API key's rate limit is reached; retry after `Retry-After` seconds",
    502: "The model provider failed or refused the request",
    503: "A backend (state, index, rate limits, model provider) is unavailable",
    504: "The model provider timed out",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of an endpoint that answers these error statuses (with ``ErrorResponse``)."""
    return {status: {"model": ErrorResponse, "description": _ERRORS[status]} for status in statuses}


# What every endpoint behind an API key can answer, and what one with a JSON body adds to it.
AUTHENTICATED = (401, 403, 422, 429, 503)
WITH_BODY = (*AUTHENTICATED, 400, 413)
