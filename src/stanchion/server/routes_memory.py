"""``/v1/memory``: the caller's long-term memories (facts and preferences), listed and deleted.

The owner is the API key's (tenant, user): every call reads or deletes that user's memories
only. Another user's memory id answers 404, as one that does not exist, so ids leak nothing.
Deletions are audited.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel

from stanchion.logs import request_id
from stanchion.memory import DatabaseMemoryStore, MemoryStore
from stanchion.server.context import ServerContext
from stanchion.server.deps import Caller, Ctx, admit
from stanchion.server.errors import APIError
from stanchion.server.schemas import AUTHENTICATED, error_responses
from stanchion.state import AuditRecord, Principal

router = APIRouter(tags=["Memory"])
MemoryId = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


class MemoryOut(BaseModel):
    id: str
    object: Literal["memory"] = "memory"
    kind: Literal["fact", "preference"]
    slot: str
    text: str
    value: str
    negated: bool
    source: str
    created_at: float
    updated_at: float
    current: bool
    superseded_by: str | None
    superseded_at: float | None


class MemoryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[MemoryOut]


class MemoryDeleted(BaseModel):
    id: str | None = None
    object: Literal["memory.deleted"] = "memory.deleted"
    deleted: int


def memory_store(request: Request, ctx: ServerContext) -> MemoryStore:
    """This worker's memory store, on the server's state database (migrated on first use)."""
    store: MemoryStore | None = getattr(request.app.state, "memory_store", None)
    if store is None:
        store = DatabaseMemoryStore(ctx.app.state.db, model=ctx.app.spec.embedding.model)
        request.app.state.memory_store = store
    return store


@router.get(
    "/v1/memory",
    response_model=MemoryList,
    summary="The caller's memories, newest first",
    responses=error_responses(*AUTHENTICATED),
)
async def list_memories(
    request: Request,
    ctx: Ctx,
    principal: Caller,
    include_history: Annotated[
        bool, Query(description="also the memories that later ones replaced (their history)")
    ] = False,
) -> MemoryList:
    await admit(ctx, principal, "query")
    store = await asyncio.to_thread(memory_store, request, ctx)
    found = await asyncio.to_thread(
        store.memories, principal.tenant, principal.user, include_history=include_history
    )
    return MemoryList(data=[MemoryOut.model_validate(m.as_json()) for m in found])


@router.delete(
    "/v1/memory/{memory_id}",
    response_model=MemoryDeleted,
    summary="Forget one of the caller's memories (a current one with its history)",
    responses=error_responses(*AUTHENTICATED, 404),
)
async def delete_memory(request: Request, memory_id: MemoryId, ctx: Ctx, principal: Caller) -> MemoryDeleted:
    await admit(ctx, principal, "query")
    store = await asyncio.to_thread(memory_store, request, ctx)
    deleted = await asyncio.to_thread(store.delete, principal.tenant, principal.user, memory_id)
    if not deleted:
        raise APIError(404, "memory_not_found", f"no memory {memory_id!r} of yours", param="memory_id")
    await _audit(ctx, principal, {"memory": memory_id, "deleted": deleted})
    return MemoryDeleted(id=memory_id, deleted=deleted)


@router.delete(
    "/v1/memory",
    response_model=MemoryDeleted,
    summary="Forget every memory of the caller",
    responses=error_responses(*AUTHENTICATED),
)
async def delete_memories(request: Request, ctx: Ctx, principal: Caller) -> MemoryDeleted:
    await admit(ctx, principal, "query")
    store = await asyncio.to_thread(memory_store, request, ctx)
    deleted = await asyncio.to_thread(store.delete_all, principal.tenant, principal.user)
    await _audit(ctx, principal, {"memory": "all", "deleted": deleted})
    return MemoryDeleted(deleted=deleted)


async def _audit(ctx: ServerContext, principal: Principal, detail: dict[str, object]) -> None:
    await ctx.audit.write_now(
        AuditRecord(
            "memory.delete",
            principal.tenant,
            principal.user,
            principal.key_id,
            request_id.get(),
            200,
            detail=detail,
        )
    )
