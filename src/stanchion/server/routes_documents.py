"""Documents and ingest jobs: upload (multipart or JSON) -> job -> poll; list, get, delete.

Every read and write is confined to the caller's tenant, and, within it, to documents whose
access groups admit the caller. Another tenant's document answers 404, never 403, so ids leak
nothing. An upload is a new document (``server/uploads.py``); it replaces one only when ``replace``
names it and the caller may see it, and the audit log records that version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import PurePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError

from stanchion.index.store import StoredDocument
from stanchion.logs import request_id
from stanchion.pipeline import Call
from stanchion.server.context import ServerContext
from stanchion.server.deps import Caller, Ctx, admit, request_context
from stanchion.server.errors import APIError, invalid_request
from stanchion.server.params import NUL_FREE, PageLimit, Storable
from stanchion.server.schemas import (
    AUTHENTICATED,
    GROUP_LIST_PATTERN,
    MAX_GROUPS,
    MAX_METADATA_KEYS,
    RESERVED_METADATA,
    WITH_BODY,
    Deleted,
    DocumentFields,
    DocumentList,
    DocumentOut,
    DocumentText,
    JobList,
    JobOut,
    error_responses,
    page_bounds,
)
from stanchion.server.uploads import upload_job, upload_source_name
from stanchion.state import AuditRecord, Job, Principal

router = APIRouter(tags=["Documents"])
DocumentId = Annotated[str, Path(min_length=1, max_length=1024), Storable]
_RESERVED_METADATA = set(RESERVED_METADATA)
_TEXT_SCHEMA = DocumentText.model_json_schema(ref_template="#/components/schemas/{model}")
_FORM_FIELDS = frozenset({"file", "metadata", "access_groups"})

_UPLOAD_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "minLength": 1},
                        # An object part is JSON (the OpenAPI default for multipart); the server parses it.
                        "metadata": {
                            "type": "object",
                            "description": "a JSON object of metadata",
                            "maxProperties": MAX_METADATA_KEYS,
                            "additionalProperties": {
                                "type": ["string", "number", "boolean"],
                                **NUL_FREE,
                            },
                            "propertyNames": {"not": {"enum": list(RESERVED_METADATA)}, **NUL_FREE},
                        },
                        "access_groups": {
                            "type": "string",
                            "description": f"comma-separated groups, at most {MAX_GROUPS}",
                            "pattern": GROUP_LIST_PATTERN,
                        },
                    },
                    "additionalProperties": False,
                },
                "encoding": {"metadata": {"contentType": "application/json"}},
            },
            "application/json": {"schema": _TEXT_SCHEMA},
        },
    }
}


@router.post(
    "/v1/documents",
    status_code=202,
    response_model=JobOut,
    summary="Upload a document; starts an ingest job",
    openapi_extra=_UPLOAD_SCHEMA,
    responses=error_responses(*WITH_BODY, 404, 409, 415),
)
async def upload(
    request: Request,
    ctx: Ctx,
    principal: Caller,
    replace: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=1024,
            description="the id of an uploaded document this file replaces (its id is kept); "
            "without it an upload is a new document and replaces nothing",
        ),
        Storable,
    ] = None,
) -> JobOut:
    call = Call(request_context(principal), "documents.upload", scope="ingest", audited=False)
    filename, data = "", b""
    options: dict[str, object] = {}
    old: StoredDocument | None = None
    job: Job | None = None

    async def check(call: Call) -> None:
        nonlocal filename, data, options, old
        filename, data, metadata, groups = await _read_upload(request)
        _check_groups(principal, groups)
        reserved = _RESERVED_METADATA.intersection(metadata)
        if reserved:
            raise APIError(
                422,
                "invalid_request",
                f"metadata: {', '.join(sorted(reserved))} is set by the server",
                param="metadata",
            )
        old = (
            None
            if replace is None
            else await asyncio.to_thread(_replaceable, ctx, principal, replace, filename)
        )
        options = {
            "metadata": metadata,
            "access_groups": groups,
            # The job names, of what it wrote, only what its uploader may see.
            "caller_groups": None if _groups(principal) is None else sorted(principal.groups),
        }
        if old is not None:
            call.action = "documents.replace"
            options["replace"] = {"document": old.id, "unit": old.unit, "hash": old.hash}

    async def generate(call: Call) -> None:
        nonlocal job
        job = created = await asyncio.to_thread(
            ctx.app.state.create_job,
            tenant=principal.tenant,
            user=principal.user,
            filename=filename,
            data=data,
            options=options,
            # Two replacements of one document never run side by side (the last would silently
            # win): while one is queued or running, another is a 409.
            exclusive=None if old is None else f"replace:{principal.tenant}:{old.unit}",
        )
        ctx.jobs.nudge()
        ctx.metrics.job("queued")
        detail: dict[str, object] = {
            "job": created.id,
            "filename": filename,
            "bytes": len(data),
            "access_groups": options["access_groups"],
        }
        if old is None:
            ctx.audit.record(_audit(principal, "documents.upload", detail))
        else:
            detail |= {
                "document": old.id,
                "old_hash": old.hash,
                "old_access_groups": list(old.access_groups),
                "old_chunks": old.chunk_count,
            }
            await ctx.audit.write_now(_audit(principal, "documents.replace", detail))

    await ctx.request_pipeline.run(call, check=check, generate=generate)
    assert job is not None
    return JobOut(**job.as_json())


def _audit(principal: Principal, action: str, detail: dict[str, object]) -> AuditRecord:
    return AuditRecord(
        action, principal.tenant, principal.user, principal.key_id, request_id.get(), 202, detail=detail
    )


def _replaceable(ctx: ServerContext, principal: Principal, document_id: str, filename: str) -> StoredDocument:
    """The uploaded document ``replace`` names, if the caller may replace it: it sees the document
    and every other document of its upload (they are replaced together). Any other answer is a 404
    like an unknown id, so ``replace`` reveals nothing about documents the caller cannot see."""
    doc = _document(ctx, principal, document_id)
    missing = APIError(404, "document_not_found", f"replace: no document {document_id!r}", param="replace")
    if doc is None:
        raise missing
    if doc.source != upload_source_name(principal.tenant):
        raise APIError(
            422,
            "invalid_request",
            f"replace: {document_id!r} comes from the spec's source {doc.source!r}, not an upload; "
            "change its file and run `stanchion ingest`",
            param="replace",
        )
    store = ctx.app.store
    siblings = store.documents(doc.source, unit=doc.unit, tenant=principal.tenant)
    visible = store.documents(doc.source, unit=doc.unit, tenant=principal.tenant, groups=_groups(principal))
    if len(visible) != len(siblings):
        raise missing
    _check_may_change(ctx, principal, doc, "replace")
    old_type, new_type = PurePath(doc.unit).suffix.lower(), PurePath(filename).suffix.lower()
    if old_type != new_type:
        raise APIError(
            422,
            "invalid_request",
            f"filename: a replacement keeps the type of the document it replaces "
            f"({old_type or 'no extension'}), this file is {new_type or 'without extension'}",
            param="filename",
        )
    return doc


@router.get(
    "/v1/jobs",
    response_model=JobList,
    summary="The caller's ingest jobs (an admin's: the tenant's), newest first, a page at a time",
    responses=error_responses(*AUTHENTICATED),
)
async def list_jobs(
    ctx: Ctx,
    principal: Caller,
    status: Literal["queued", "running", "done", "failed"] | None = None,
    before: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="the last id of the previous page"),
        Storable,
    ] = None,
    limit: PageLimit = 100,
) -> JobList:
    await admit(ctx, principal, "ingest")
    jobs = await asyncio.to_thread(
        ctx.app.state.jobs,
        principal.tenant,
        user=None if "admin" in principal.scopes else principal.user,
        status=status,
        before=before,
        limit=limit + 1,
    )
    page = [JobOut(**job.as_json()) for job in jobs[:limit]]
    return JobList(data=page, **page_bounds([item.id for item in page], fetched=len(jobs), limit=limit))


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobOut,
    summary="An ingest job's status and result",
    responses=error_responses(*AUTHENTICATED, 404),
)
async def get_job(
    job_id: Annotated[str, Path(max_length=64), Storable], ctx: Ctx, principal: Caller
) -> JobOut:
    await admit(ctx, principal, "ingest")
    job = await asyncio.to_thread(ctx.app.state.job, job_id)
    if job is None or not _owns(principal, job.tenant, job.user):
        raise APIError(404, "job_not_found", f"no job {job_id!r}")
    return JobOut(**job.as_json())


@router.get(
    "/v1/documents",
    response_model=DocumentList,
    summary="The caller's documents, a page at a time",
    responses=error_responses(*AUTHENTICATED),
)
async def list_documents(
    ctx: Ctx,
    principal: Caller,
    source: Annotated[str | None, Query(max_length=128), Storable] = None,
    limit: PageLimit = 100,
    after: Annotated[
        str | None,
        Query(min_length=1, max_length=1024, description="the last id of the previous page"),
        Storable,
    ] = None,
) -> DocumentList:
    call = Call(request_context(principal), "documents.list", audited=False)

    async def retrieve(call: Call) -> None:
        call.result = await asyncio.to_thread(
            ctx.app.store.documents,
            source,
            tenant=principal.tenant,
            groups=_groups(principal),
            after=after,
            limit=limit + 1,  # one more tells whether another page follows
        )

    await ctx.request_pipeline.run(call, retrieve=retrieve)
    docs: list[StoredDocument] = call.result
    page = [_out(d) for d in docs[:limit]]
    return DocumentList(data=page, **page_bounds([item.id for item in page], fetched=len(docs), limit=limit))


@router.get(
    "/v1/documents/{document_id:path}",
    response_model=DocumentOut,
    summary="One document",
    responses=error_responses(*AUTHENTICATED, 404),
)
async def get_document(document_id: DocumentId, ctx: Ctx, principal: Caller) -> DocumentOut:
    call = Call(request_context(principal), "documents.get", query=document_id, audited=False)

    async def retrieve(call: Call) -> None:
        call.result = await _find(ctx, principal, document_id)

    await ctx.request_pipeline.run(call, retrieve=retrieve)
    return _out(call.result)


@router.delete(
    "/v1/documents/{document_id:path}",
    response_model=Deleted,
    summary="Delete a document and its chunks, vectors and keyword entries",
    responses=error_responses(*AUTHENTICATED, 404),
)
async def delete_document(document_id: DocumentId, ctx: Ctx, principal: Caller) -> Deleted:
    call = Call(
        request_context(principal), "documents.delete", query=document_id, scope="ingest", audited=False
    )
    doc: StoredDocument | None = None

    async def check(call: Call) -> None:
        nonlocal doc
        doc = await _find(ctx, principal, document_id)
        await asyncio.to_thread(_check_may_change, ctx, principal, doc, "delete")

    async def generate(call: Call) -> None:
        assert doc is not None
        await asyncio.to_thread(_purge, ctx, doc)
        await ctx.audit.write_now(
            AuditRecord(
                "documents.delete",
                principal.tenant,
                principal.user,
                principal.key_id,
                request_id.get(),
                200,
                detail={
                    "document": doc.id,
                    "source": doc.source,
                    "path": doc.path,
                    "chunks": doc.chunk_count,
                },
            )
        )

    await ctx.request_pipeline.run(call, check=check, generate=generate)
    assert doc is not None
    return Deleted(id=doc.id)


def _purge(ctx: ServerContext, doc: StoredDocument) -> None:
    store = ctx.app.store
    store.delete_documents([doc.id])
    if not store.documents(doc.source, unit=doc.unit):
        # The unit's record would otherwise say "fully ingested" and skip its file on re-upload.
        store.delete_unit(doc.source, doc.unit)
    prune = getattr(store, "prune_embeddings", None)
    if callable(prune):
        prune()  # vectors no remaining chunk uses


async def _find(ctx: ServerContext, principal: Principal, document_id: str) -> StoredDocument:
    doc = await asyncio.to_thread(_document, ctx, principal, document_id)
    if doc is None:
        raise APIError(404, "document_not_found", f"no document {document_id!r}")
    return doc


def _document(ctx: ServerContext, principal: Principal, document_id: str) -> StoredDocument | None:
    """The document if the caller may see it. Ids are ``source:unit[:part...]``
    (``LoadContext.doc_id``), so only the documents of one unit are read, not the whole source. A
    unit path may itself hold ':', hence each split point."""
    source, _, rest = document_id.partition(":")
    cuts = [i for i, ch in enumerate(rest) if ch == ":"] + [len(rest)]
    for cut in cuts[:8]:
        unit_docs = ctx.app.store.documents(
            source, unit=rest[:cut], tenant=principal.tenant, groups=_groups(principal)
        )
        found = next((d for d in unit_docs if d.id == document_id), None)
        if found is not None:
            return found
    return None


def _owns(principal: Principal, tenant: str, user: str) -> bool:
    """A job is its uploader's (its file name can say what a group-restricted document holds);
    an admin key sees every job of its tenant."""
    return tenant == principal.tenant and ("admin" in principal.scopes or user == principal.user)


def _check_may_change(ctx: ServerContext, principal: Principal, doc: StoredDocument, action: str) -> None:
    """Replacing or deleting changes a document for everyone who reads it, so seeing it is not
    enough: only the user who uploaded it, or an admin of the tenant (documents of the spec's
    sources are the spec's: an admin's, or the next `stanchion ingest`'s). The caller sees the
    document already, so a 403 reveals nothing."""
    if principal.can("admin"):
        return
    job_id = upload_job(doc.unit) if doc.source == upload_source_name(principal.tenant) else None
    job = ctx.app.state.job(job_id) if job_id is not None else None
    if job is None or job.tenant != principal.tenant or job.user != principal.user:
        raise APIError(
            403,
            "not_document_owner",
            f"{action}: only the user who uploaded {doc.id!r} or an admin key may {action} it",
        )


def _groups(principal: Principal) -> frozenset[str] | None:
    """The access groups the store checks documents against; None for an admin, who sees all."""
    return None if "admin" in principal.scopes else principal.groups


def _check_groups(principal: Principal, groups: list[str]) -> None:
    if "admin" in principal.scopes:
        return
    foreign = sorted(set(groups) - principal.groups)
    if foreign:
        raise APIError(
            403,
            "forbidden_group",
            f"access_groups: this key is not in {', '.join(foreign)}",
            param="access_groups",
        )


def _out(doc: StoredDocument) -> DocumentOut:
    metadata = {k: v for k, v in doc.metadata.items() if not k.startswith("_")}
    return DocumentOut(
        id=doc.id,
        source=doc.source,
        path=doc.path,
        title=doc.title,
        chunk_count=doc.chunk_count,
        metadata=metadata,
        access_groups=list(doc.access_groups),
    )


async def _read_upload(request: Request) -> tuple[str, bytes, dict[str, Any], list[str]]:
    """(filename, bytes, metadata, access groups) from a multipart form or a JSON body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        with _as_invalid_request():
            body = DocumentText.model_validate_json(await request.body())
        return body.filename, body.text.encode(), dict(body.metadata), list(body.access_groups)
    if kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:  # closes the spooled upload
            unknown = sorted(set(form.keys()) - _FORM_FIELDS)
            if unknown:
                raise APIError(
                    422,
                    "invalid_request",
                    f"{unknown[0]}: not a field of this form ({', '.join(sorted(_FORM_FIELDS))})",
                    param=unknown[0],
                )
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise APIError(
                    422, "invalid_request", "file: send the document as the form field 'file'", param="file"
                )
            data = await upload.read()
            if not data:
                raise APIError(422, "invalid_request", "file: the uploaded file is empty", param="file")
            groups_raw = form.get("access_groups")
            with _as_invalid_request():  # the same limits as a JSON upload
                fields = DocumentFields.model_validate(
                    {
                        "filename": upload.filename or "upload.txt",
                        "metadata": _json_object(form.get("metadata")),
                        "access_groups": [g.strip() for g in str(groups_raw or "").split(",") if g.strip()],
                    }
                )
            return fields.filename, data, dict(fields.metadata), list(fields.access_groups)
    raise APIError(
        415,
        "unsupported_media_type",
        "send multipart/form-data (field 'file') or application/json (filename, text)",
    )


def _json_object(raw: object) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        value = json.loads(str(raw))
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise APIError(
            422,
            "invalid_request",
            "metadata: give a JSON object of strings, numbers or booleans",
            param="metadata",
        )
    return value


@contextlib.contextmanager
def _as_invalid_request() -> Iterator[None]:
    """A validation error as a 422 naming the first field at fault."""
    try:
        yield
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None
