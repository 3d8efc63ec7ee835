"""``stanchion.yaml``: pydantic models of the whole file, loading, ``${ENV}`` interpolation.

Unknown keys are rejected, and every validation error names the key path, the bad value and
what is allowed, e.g. ``sources[1].chunking.overlap: 900 must be smaller than size (512)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from stanchion.core import plugins
from stanchion.errors import SpecError
from stanchion.types import Fusion

SPEC_FILENAME = "stanchion.yaml"
SourceType = Literal["auto", "text", "markdown", "html", "pdf", "beir", "slack", "email", "irc"]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The sources of API uploads, one per tenant (``server/uploads.py``); no spec source may take one.
UPLOAD_SOURCE_PREFIX = "upload."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_credentials(url: str) -> str:
    """A provider's URL without ``user:password@``: a secret in the spec would be logged and shown,
    and the HTTP clients refuse it mid-request. Keys come from the environment (``api_key_env``)."""
    if "@" in urlsplit(url).netloc:
        raise ValueError(
            "credentials in the URL (user:password@) are not allowed; put the key in the "
            "environment variable that api_key_env names"
        )
    return url


BaseUrl = Annotated[str, AfterValidator(_no_credentials)]


def _registered_in(group: str, kind: str) -> AfterValidator:
    """A check that a name is registered in the entry point ``group`` (a ValueError listing the
    names that are), when the spec is read."""

    def check(name: str) -> str:
        registered = plugins.names(group)
        if name not in registered:
            raise ValueError(f"unknown {kind} {name!r} ({plugins.registered_text(registered)})")
        return name

    return AfterValidator(check)


ProviderName = Annotated[str, _registered_in(plugins.PROVIDERS, "provider")]
ToolName = Annotated[str, _registered_in(plugins.TOOLS, "tool")]


class CleaningSpec(_Strict):
    strip_boilerplate: bool = Field(True, description="drop lines repeated on most pages (running headers)")
    dedupe: bool = Field(True, description="merge exact and near-duplicate documents")
    near_duplicate_threshold: float = Field(
        0.9, ge=0.5, le=1.0, description="estimated Jaccard of 5-shingles"
    )


class ChunkingSpec(_Strict):
    strategy: Literal["recursive", "semantic", "structure"] = "recursive"
    size: int = Field(256, ge=16, le=8192, description="max tokens per chunk (embedding model's tokenizer)")
    overlap: int = Field(32, ge=0, description="tokens repeated between consecutive chunks")
    min_size: int = Field(32, ge=0)
    semantic_threshold: float | None = Field(None, ge=-1.0, le=1.0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSpec:
        if self.overlap >= self.size:
            raise ValueError(f"overlap: {self.overlap} must be smaller than size ({self.size})")
        return self


class SourceSpec(_Strict):
    name: str = Field(pattern=_NAME)
    type: SourceType = "auto"
    path: str
    glob: str | None = Field(None, description="files to take under path (default: by type)")
    exclude: list[str] = Field(default_factory=list)
    cleaning: CleaningSpec = CleaningSpec()
    chunking: ChunkingSpec = ChunkingSpec()
    # Finite numbers only: no store's JSON holds .inf or .nan.
    metadata: dict[str, str | int | FiniteFloat | bool] = Field(default_factory=dict)
    access_groups: list[str] = Field(default_factory=list, description="empty = visible to every caller")
    tenant: str = Field("default", pattern=_NAME, description="the tenant whose API keys may see this source")
    max_file_mb: float = Field(50.0, gt=0)
    pii: Literal["keep", "mask", "drop"] = Field(
        "keep",
        description="PII in this source's text at ingestion: keep it, mask each value as its type "
        "(<EMAIL_ADDRESS>), or drop the chunks that hold any",
    )


class EmbeddingSpec(_Strict):
    provider: Literal["local", "openai"] = "local"
    model: str = Field(
        "all-MiniLM-L6-v2", description="packaged model name, a local model directory, or a remote model id"
    )
    batch_size: int = Field(32, ge=1, le=1024)
    base_url: BaseUrl | None = Field(None, description="openai provider: e.g. http://localhost:8000/v1")
    api_key_env: str | None = Field(None, description="openai provider: environment variable holding the key")
    tokenizer: str | None = Field(
        None,
        description="tokenizer that measures chunk sizes (local model name or folder); default: the "
        "local model's own, all-MiniLM-L6-v2 for the openai provider",
    )

    @model_validator(mode="after")
    def _remote_needs_url(self) -> EmbeddingSpec:
        if self.provider == "openai" and not self.base_url:
            raise ValueError(
                "base_url: the openai embedding provider needs a base_url (e.g. http://localhost:8000/v1)"
            )
        return self


class IndexSpec(_Strict):
    backend: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="sqlite: one embedded file; postgres: PostgreSQL + pgvector at dsn"
    )
    path: str = Field(".stanchion/index.db", description="sqlite: the index file")
    dsn: str | None = Field(
        None, description="postgres: libpq DSN or URL, e.g. ${STANCHION_PG_DSN}; state lives there too"
    )
    keyword_engine: Literal["memory", "fts5"] = Field(
        "memory",
        description="sqlite: memory ranks BM25 in RAM from the FTS5 terms (fast); fts5 ranks inside SQLite",
    )
    ef_search: int = Field(100, ge=10, le=1000, description="postgres: HNSW candidate list size")
    pool_timeout_s: float = Field(
        5.0, gt=0, le=120, description="postgres: how long a request waits for a connection before its 503"
    )

    @model_validator(mode="after")
    def _postgres_needs_dsn(self) -> IndexSpec:
        if self.backend == "postgres" and not self.dsn:
            raise ValueError("dsn: the postgres backend needs a dsn (e.g. dsn: ${STANCHION_PG_DSN})")
        return self


class RetrievalSpec(_Strict):
    mode: Literal["bm25", "dense", "hybrid"] = "hybrid"
    k: int = Field(10, ge=1, le=1000)
    fusion: Fusion = "zscore"
    candidates: int = Field(100, ge=10, le=2000, description="depth of each list before fusion")


class PriceSpec(_Strict):
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million input tokens")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million output tokens")


class ModelSpec(_Strict):
    provider: ProviderName = Field(
        description="a registered provider (entry point group stanchion.providers): built in are "
        "openai, anthropic, llamacpp, extractive and planner"
    )
    model: str = Field(
        "", description="the provider's model id; llamacpp: a .gguf path, or empty for the packaged SmolLM2"
    )
    base_url: BaseUrl | None = Field(
        None, description="openai: e.g. http://localhost:8000/v1; anthropic: override"
    )
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    timeout_s: float = Field(30.0, gt=0, description="per attempt")
    max_retries: int = Field(2, ge=0, le=10, description="retries on the same model before falling back")
    context_window: int = Field(8192, ge=256)
    max_output_tokens: int = Field(512, ge=1)
    price: PriceSpec = PriceSpec()


class RuleSpec(_Strict):
    """Send a request to ``tier`` when the question matches ``pattern`` (a regular expression)."""

    pattern: str
    tier: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
        return pattern


class CacheSpec(_Strict):
    """A route's response cache: an exact tier (the same normalised request) and a semantic tier
    (a question that means the same, checked for near-misses), scoped to the tenant or the user."""

    exact: bool = Field(True, description="serve the same normalised request from the cache")
    semantic: bool | None = Field(
        None,
        description="serve a paraphrase of a cached question; default: on for grounded routes "
        "(retrieval embeds the question anyway), off for gateway routes (a miss would first embed "
        "the question, ~15 ms of CPU)",
    )
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="semantic tier: the cosine floor (default: the matcher's own)"
    )
    ttl_s: float = Field(86_400.0, gt=0, description="how long an entry may be served")
    max_entries: int = Field(
        100_000, ge=1, le=10_000_000, description="per tenant and partition; oldest dropped"
    )
    scope: Literal["tenant", "user"] = Field(
        "tenant", description="who shares entries: every caller of a tenant, or each user alone"
    )


class RouteSpec(_Strict):
    """A route is a fallback chain (``models``) or, for automatic routing, ``tiers`` of chains."""

    models: list[str] = Field(default_factory=list, description="fallback chain, primary first")
    tiers: dict[str, list[str]] = Field(
        default_factory=dict, description="tier -> chain; cheapest tier first"
    )
    rules: list[RuleSpec] = Field(default_factory=list)
    max_cost_usd: float | None = Field(
        None, gt=0, description="per request; forces a cheaper tier when exceeded"
    )
    max_latency_ms: float | None = Field(
        None, gt=0, description="per request; forces a faster tier when exceeded"
    )
    grounded: bool = Field(
        True,
        description="chat completions on this route answer from the index with citations; "
        "false passes the conversation straight to the models (a gateway route)",
    )
    cache: CacheSpec | None = Field(None, description="the response cache (off when absent)")

    @model_validator(mode="after")
    def _one_kind(self) -> RouteSpec:
        if bool(self.models) == bool(self.tiers):
            raise ValueError("models: a route needs either models (a fallback chain) or tiers, not both")
        return self


class RerankSpec(_Strict):
    kind: Literal["none", "cross-encoder", "llm", "bi-encoder"] = "none"
    model: str | None = Field(None, description="cross-encoder: local path; llm: a route name")


class AnswerSpec(_Strict):
    route: str = "default"
    k: int = Field(6, ge=1, le=50, description="sources packed into the prompt")
    candidates: int = Field(30, ge=1, le=500, description="chunks retrieved before reranking")
    rerank: RerankSpec = RerankSpec()
    verify: bool = Field(True, description="check each sentence against the source it cites")
    on_unsupported: Literal["drop", "abstain"] = "drop"
    abstain_text: str = "I could not find this in the sources."


class ToolConfig(_Strict):
    """A tool a model may call: ``tool`` names its factory, ``options`` are the factory's own."""

    tool: ToolName = Field(
        description="a registered tool (entry point group stanchion.tools); built in: search, sql, calculator, http, fetch_page"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the tool's own settings")


def _default_tools() -> dict[str, ToolConfig]:
    return {"search": ToolConfig(tool="search")}


def _default_models() -> dict[str, ModelSpec]:
    return {"extractive": ModelSpec(provider="extractive")}


def _default_routes() -> dict[str, RouteSpec]:
    return {"default": RouteSpec(models=["extractive"])}


class AgentLimits(_Strict):
    """When a run stops, whatever the model wants: the run ends with the limit as its reason."""

    max_steps: int = Field(8, ge=1, le=100, description="model calls, the checks' revisions included")
    max_tool_calls: int = Field(16, ge=0, le=500, description="tool calls in all")
    max_cost_usd: float | None = Field(None, gt=0, description="model cost of the run (default: no limit)")
    max_seconds: float = Field(60.0, gt=0, le=3600, description="wall time of the run")


class AgentSpec(_Strict):
    """An agent: a model route that may call tools until it answers or reaches a limit."""

    instructions: str = Field(description="the agent's system prompt: its job, tone and rules")
    route: str = Field(
        "default", description="the model route it runs on (a route's fallback chain or tiers)"
    )
    tools: list[str] = Field(default_factory=list, description="names under tools: it may call")
    memory: bool = Field(False, description="recall the user's long-term memories; remember what they state")
    limits: AgentLimits = AgentLimits()
    check: bool = Field(
        True, description="check each draft against the tool results and success criteria before answering"
    )
    success_criteria: list[str] = Field(
        default_factory=list, description="what a finished answer must do, checked before it is returned"
    )
    first_step: Literal["auto", "tool"] = Field(
        "auto",
        description="tool: the first step must call one of the tools (constrained decoding on a "
        "local model), for small models that would otherwise answer without looking",
    )
    history_tokens: int = Field(
        2000,
        ge=100,
        le=100_000,
        description="a session's earlier turns sent with a run (older ones folded into a summary)",
    )


class RateLimitSpec(_Strict):
    requests_per_minute: int = Field(600, ge=1, description="per API key")
    tokens_per_minute: int = Field(200_000, ge=1, description="per API key, prompt + completion")


PiiEntity = Literal[
    "PERSON",
    "LOCATION",
    "STREET_ADDRESS",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "SECRET",
    "DATE_TIME",
]
InjectionAction = Literal["off", "flag", "strip", "block"]


class PiiGuardSpec(_Strict):
    """PII masked before a remote model reads it, restored in what the caller gets back."""

    style: Literal["placeholder", "fake"] = Field(
        "placeholder", description="what a remote model sees: <PERSON_1>, or realistic fake values"
    )
    entities: list[PiiEntity] | None = Field(
        None, description="entity types to mask (default: all but DATE_TIME)"
    )
    thresholds: dict[PiiEntity, float] = Field(
        default_factory=dict, description="per entity: the detector score a value needs (default 0.5)"
    )
    exempt_local: bool = Field(
        True, description="in-process models (llamacpp, extractive, planner) read the original text"
    )
    timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="detection time limit per 8,000 characters of text; past it the request is refused, "
        "nothing sent",
    )
    vault_ttl_s: float = Field(
        3600.0, gt=0, description="how long a conversation's pseudonyms are kept after its last request"
    )

    @field_validator("thresholds")
    @classmethod
    def _scores(cls, thresholds: dict[str, float]) -> dict[str, float]:
        for entity, score in thresholds.items():
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"{entity}: {score} is not a score between 0 and 1")
        return thresholds


class InjectionGuardSpec(_Strict):
    """The prompt-injection check on what the caller sends, retrieved sources and tool results.
    ``flag`` lets the text through and records it (audit, response); ``strip`` removes the
    sentences that attack; ``block`` refuses (input: 400 ``prompt_injection``; a source or tool
    result is left out)."""

    input: InjectionAction = Field("block", description="the caller's messages")
    sources: InjectionAction = Field("strip", description="retrieved chunks, before any prompt")
    tool_results: InjectionAction = Field("strip", description="tool results a client or agent sends on")
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="classifier probability that flags (default: the model's own)"
    )


class OutputGuardSpec(_Strict):
    """Checks on an answer before the caller sees it (a stream: when it ends, flagged only)."""

    system_prompt: Literal["off", "flag", "block"] = Field(
        "block", description="an answer that repeats the system prompt"
    )
    pii: Literal["off", "flag", "redact", "block"] = Field(
        "redact", description="PII in an answer that was in neither the caller's input nor its sources"
    )


class GuardsSpec(_Strict):
    """Each guard is on when its key is present (``pii: {}`` takes the defaults)."""

    pii: PiiGuardSpec | None = Field(None, description="mask PII for remote models, restore it in answers")
    injection: InjectionGuardSpec | None = Field(None, description="prompt-injection checks")
    output: OutputGuardSpec | None = Field(None, description="checks on answers")


class ServerSpec(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    state_path: str = Field(
        ".stanchion/state.db", description="sqlite index backend: API keys, jobs, audit, rate limits"
    )
    redis_url: str | None = Field(
        None, description="rate limits and shared state in Redis, e.g. ${STANCHION_REDIS_URL}"
    )
    cache_redis_url: str | None = Field(
        None,
        description="the response cache's Redis (default: redis_url; without either, a SQLite file). "
        "A Redis of its own may evict under memory pressure (maxmemory-policy allkeys-lru) "
        "without touching rate limits",
    )
    rate_limits: RateLimitSpec = RateLimitSpec()
    max_body_mb: float = Field(1.0, gt=0, description="largest JSON request body")
    max_upload_mb: float = Field(25.0, gt=0, description="largest uploaded document")
    max_concurrent_ingest: int = Field(1, ge=1, le=16, description="ingest jobs running at once per worker")
    job_stale_s: float = Field(
        30.0, ge=1, description="a running job silent this long is presumed dead and re-queued"
    )
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none", description="OpenTelemetry spans per pipeline stage (otlp needs opentelemetry-exporter-otlp)"
    )
    audit_retention_days: float | None = Field(
        None, gt=0, description="delete audit records older than this, hourly (default: keep them all)"
    )
    metrics_token_env: str | None = Field(
        None,
        description="environment variable holding a bearer token that unlocks per-tenant series on "
        "/metrics (without it /metrics shows only aggregates)",
    )


class Spec(_Strict):
    version: Literal[1] = 1
    index: IndexSpec = IndexSpec()
    embedding: EmbeddingSpec = EmbeddingSpec()
    retrieval: RetrievalSpec = RetrievalSpec()
    sources: list[SourceSpec] = Field(default_factory=list)
    models: dict[str, ModelSpec] = Field(default_factory=_default_models)
    routes: dict[str, RouteSpec] = Field(default_factory=_default_routes)
    answer: AnswerSpec = AnswerSpec()
    server: ServerSpec = ServerSpec()
    tools: dict[str, ToolConfig] = Field(default_factory=_default_tools)
    guards: GuardsSpec = GuardsSpec()
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    # Where relative paths resolve from: the spec file's folder (not part of the YAML).
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, tools: dict[str, ToolConfig]) -> dict[str, ToolConfig]:
        for name in tools:
            if not _TOOL_NAME.fullmatch(name):
                # What the OpenAI and Anthropic APIs accept as a function name.
                raise ValueError(f"tool name {name!r}: use 1-64 letters, digits, _ or -")
        return tools

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceSpec]) -> list[SourceSpec]:
        seen: set[str] = set()
        for source in sources:
            if source.name in seen:
                raise ValueError(f"source name {source.name!r} is used twice; names must be unique")
            if source.name.startswith(UPLOAD_SOURCE_PREFIX):
                # An ingest of the spec would otherwise prune (or mix with) a tenant's API uploads.
                raise ValueError(
                    f"source name {source.name!r}: names starting with {UPLOAD_SOURCE_PREFIX!r} hold API uploads"
                )
            seen.add(source.name)
        return sources

    @model_validator(mode="after")
    def _routes_name_known_models(self) -> Spec:
        for name, route in self.routes.items():
            chains = [("models", route.models)] + [(f"tiers.{t}", c) for t, c in route.tiers.items()]
            for where, chain in chains:
                for model in chain:
                    if model not in self.models:
                        known = ", ".join(self.models) or "none"
                        raise ValueError(f"routes.{name}.{where}: unknown model {model!r} (models: {known})")
            for rule in route.rules:
                if rule.tier not in route.tiers:
                    raise ValueError(
                        f"routes.{name}.rules: unknown tier {rule.tier!r} (tiers: {', '.join(route.tiers)})"
                    )
        if self.answer.route not in self.routes:
            raise ValueError(
                f"answer.route: unknown route {self.answer.route!r} (routes: {', '.join(self.routes)})"
            )
        return self

    @model_validator(mode="after")
    def _agents_name_known_parts(self) -> Spec:
        for name, agent in self.agents.items():
            if not _TOOL_NAME.fullmatch(name):
                raise ValueError(f"agents.{name}: use 1-64 letters, digits, _ or - in an agent's name")
            if agent.route not in self.routes:
                raise ValueError(
                    f"agents.{name}.route: unknown route {agent.route!r} (routes: {', '.join(self.routes)})"
                )
            for tool in agent.tools:
                if tool not in self.tools:
                    known = ", ".join(self.tools) or "none"
                    raise ValueError(f"agents.{name}.tools: unknown tool {tool!r} (tools: {known})")
        return self

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def source(self, name: str) -> SourceSpec:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none declared"
        raise SpecError(f"no source named {name!r} (sources: {known})", key_path="sources")


def interpolate(value: Any, path: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; a missing variable is an error."""
    env = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {k: interpolate(v, _join(path, str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise SpecError(
                f"{path}: environment variable {name} is not set (export it, or write ${{{name}:-default}})",
                key_path=path,
            )

        return _ENV.sub(replace, value)
    return value


def parse_spec(data: Any, *, base_dir: Path | None = None, file: Path | None = None) -> Spec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"the spec must be a mapping of keys, got {type(data).__name__}", file=file)
    data = interpolate(data)
    try:
        return Spec.model_validate({**data, "base_dir": base_dir or Path.cwd()})
    except ValidationError as exc:
        raise SpecError(_describe(exc), key_path=_loc(exc.errors()[0]["loc"]), file=file) from None


def load_spec(path: Path | None = None) -> Spec:
    """Load ``path``; without one, ``./stanchion.yaml`` if present, else the built-in defaults."""
    if path is None:
        default = Path.cwd() / SPEC_FILENAME
        if not default.is_file():
            return Spec(base_dir=Path.cwd())
        path = default
    if not path.is_file():
        raise SpecError(f"spec file {path} not found (create one with `stanchion init`)", file=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(f"not valid YAML: {exc}", file=path) from None
    return parse_spec(data, base_dir=path.resolve().parent, file=path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        # Pydantic puts the tag of a failing model validator in the path; it is not a key.
        if isinstance(part, str) and part.startswith(("function-", "union[", "literal[")):
            continue
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = _loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {path.rsplit('.', 1)[-1]!r}; check its spelling (allowed keys: {_allowed(err['loc'])})"
        elif err["type"] == "missing":
            msg = "is required"
        elif err["type"] != "value_error":
            msg = f"{err.get('input')!r} is not allowed: {msg}"
        if err["type"] == "value_error" and re.match(r"^\w+: ", msg):
            # A model validator named the field itself (``overlap: 900 must be ...``).
            lines.append(_join(path, msg))
        else:
            lines.append(f"{path}: {msg}" if path else msg)
    return "; ".join(lines)


def _allowed(loc: tuple[int | str, ...]) -> str:
    model: type[BaseModel] = Spec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            break
        # list[SourceSpec] -> SourceSpec; a plain model annotation is its own candidate.
        for inner in (*get_args(field.annotation), field.annotation):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                model = inner
                break
    return ", ".join(k for k in model.model_fields if k != "base_dir")
