"""Value types of the control plane."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Scope = Literal["query", "ingest", "admin"]
SCOPES: tuple[Scope, ...] = ("query", "ingest", "admin")
JobStatus = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved from an API key on every request."""

    tenant: str
    user: str
    groups: frozenset[str]
    scopes: frozenset[str]
    key_id: str

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key. The secret itself is never stored: only its SHA-256 and a display prefix."""

    id: str
    prefix: str
    name: str
    tenant: str
    user: str
    groups: tuple[str, ...]
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def principal(self) -> Principal:
        return Principal(self.tenant, self.user, frozenset(self.groups), frozenset(self.scopes), self.id)

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "prefix": self.prefix,
            "name": self.name,
            "tenant": self.tenant,
            "user": self.user,
            "groups": list(self.groups),
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    tenant: str
    user: str
    kind: str
    status: JobStatus
    filename: str
    created_at: float
    updated_at: float
    attempts: int = 0
    error: str | None = None
    result: dict[str, object] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "ingest.job",
            "status": self.status,
            "filename": self.filename,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "attempts": self.attempts,
            "error": self.error,
            "result": self.result,
        }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited action: who asked what, what it used, what it cost."""

    action: str  # e.g. chat.completions, answer, search, documents.delete, keys.create
    tenant: str
    user: str
    key_id: str
    request_id: str
    status: int
    at: float = 0.0
    query: str = ""
    route: str = ""
    models: tuple[str, ...] = ()
    chunks: tuple[str, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    detail: dict[str, object] = field(default_factory=dict)
    id: int = 0  # set when read back: the log's order, and the cursor of a page

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at": self.at,
            "action": self.action,
            "tenant": self.tenant,
            "user": self.user,
            "key_id": self.key_id,
            "request_id": self.request_id,
            "status": self.status,
            "query": self.query,
            "route": self.route,
            "models": list(self.models),
            "chunks": list(self.chunks),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "detail": self.detail,
        }
