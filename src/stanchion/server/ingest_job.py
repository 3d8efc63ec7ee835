"""``python -m stanchion.server.ingest_job``: the process that runs queued ingest jobs.

A server worker starts it (at lower CPU priority) when jobs are queued, so embedding never
competes with queries for the GIL. It claims jobs from the shared state until none is left,
reporting a heartbeat; if it dies, the job's heartbeat goes stale and another worker re-queues it.
An upload is written in one commit, once the whole file has been read and embedded: a file that
fails part way (a malformed line near its end) leaves nothing, and a replacement is all new or all
old. A resumed job starts its file again.

The spec arrives as JSON on stdin (never on the command line, where secrets would show in ``ps``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

from stanchion.app import App, build
from stanchion.errors import IngestError, StanchionError
from stanchion.index.store import Store
from stanchion.ingest.pipeline import Pipeline
from stanchion.ingest.units import EXTENSION_TYPES, sniff_type
from stanchion.logs import configure_logging
from stanchion.server.uploads import clean_filename, upload_source_name, upload_unit
from stanchion.spec import CleaningSpec, SourceSpec, Spec
from stanchion.state import Job, StateStore

log = logging.getLogger(__name__)
NICE = 10
_WHOLE_FILE = 1 << 40  # chunks per commit: never reached, so a file commits once, when read whole


def run_job(app: App, state: StateStore, job: Job, worker: str) -> None:
    stop = threading.Event()
    every = app.spec.server.job_stale_s / 6  # several beats fit in the stale window
    beat = threading.Thread(target=_heartbeat, args=(state, job.id, worker, stop, every), daemon=True)
    beat.start()
    try:
        result, indexed = _ingest(app, state, job)
    except StanchionError as exc:
        state.finish_job(job.id, worker, "failed", result={"document_ids": []}, error=str(exc))
        log.warning("ingest_job.failed", extra={"job": job.id, "error": str(exc)})
        return
    except Exception as exc:  # a bug must still end the job, not leave it running forever
        log.exception("ingest_job.crashed", extra={"job": job.id})
        state.finish_job(job.id, worker, "failed", error=f"internal error: {type(exc).__name__}")
        return
    finally:
        stop.set()
    failed: list[dict[str, str]] = result.pop("failed", [])  # type: ignore[assignment]
    result.pop("warnings", None)  # they name the temporary folder
    reasons = [f["reason"] for f in failed]  # not the paths: they name a temporary folder
    if reasons or not indexed:
        # Nothing of this file is in the index (a replaced document keeps its old version): the
        # job names no document, so it cannot point at one its uploader may not see.
        result["document_ids"] = []
        error = "; ".join(reasons) or "no document came out of the file"
        state.finish_job(job.id, worker, "failed", result=result, error=f"{job.filename}: {error}")
        log.warning("ingest_job.failed", extra={"job": job.id, "error": error})
    else:
        state.finish_job(job.id, worker, "done", result=result)
        log.info("ingest_job.done", extra={"job": job.id, "documents": result["document_ids"]})


def _ingest(app: App, state: StateStore, job: Job) -> tuple[dict[str, object], bool]:
    """The job's result, naming the documents of its unit that its uploader may see (a Slack
    export's channels add groups of their own), and whether the unit has any document at all."""
    payload = state.job_payload(job.id)
    if payload is None:
        raise StanchionError(f"job {job.id} has no payload (already finished elsewhere?)")
    options = job.options
    try:
        filename = clean_filename(job.filename)  # already clean unless queued by an older server
    except ValueError as exc:
        raise IngestError(job.id, str(exc)) from None
    source_name = upload_source_name(job.tenant)
    viewer = _viewer(options)
    replace = options.get("replace")
    if isinstance(replace, dict):
        unit = str(replace["unit"])
        _check_replace(app.store, job, source_name, replace, viewer)
    else:
        unit = upload_unit(job.id, filename)
    with tempfile.TemporaryDirectory(prefix="stanchion-upload-") as folder:
        # The file is the source's root: one unit named as the file, with no glob or exclusion
        # (a LICENSE.md is ingested like any other name).
        path = Path(folder) / unit
        path.write_bytes(payload)
        if sniff_type(path) is None:
            raise IngestError(
                filename,
                "cannot tell the file's type: give it one of the extensions "
                f"{', '.join(sorted(EXTENSION_TYPES))}, or .zip for a Slack export",
            )
        source = SourceSpec(
            name=source_name,
            path=str(path),
            tenant=job.tenant,
            access_groups=list(options.get("access_groups") or []),  # type: ignore[call-overload]
            metadata=dict(options.get("metadata") or {}),  # type: ignore[call-overload]
            max_file_mb=app.spec.server.max_upload_mb,
            # Each upload is a document of its own: never merged into (or dropped as a copy of)
            # another upload, which may be another user's.
            cleaning=CleaningSpec(dedupe=False),
        )
        # One commit for the whole file: an upload is written entirely or not at all (a file that
        # fails part way, or a replacement, never leaves part of itself in the index). Memory is
        # bounded by the upload limit (server.max_upload_mb), not by a batch.
        whole = Pipeline(app.spec, app.store, app.embedder, app.tokenizer, batch_chunks=_WHOLE_FILE)
        summary = whole.run([source], prune_missing=False)
    docs = app.store.documents(source_name, unit=unit, tenant=job.tenant)
    seen = app.store.documents(source_name, unit=unit, tenant=job.tenant, groups=viewer)
    return {**summary.as_json(), "document_ids": [d.id for d in seen]}, bool(docs)


def _viewer(options: dict[str, object]) -> frozenset[str] | None:
    """The uploader's groups (None: an admin, who sees every group); a job queued by an older
    server names only the groups it uploaded to."""
    groups = options.get("caller_groups", options.get("access_groups") or [])
    if groups is None:
        return None
    return frozenset(str(g) for g in groups) if isinstance(groups, list) else frozenset()


def _check_replace(
    store: Store, job: Job, source: str, replace: dict[str, object], viewer: frozenset[str] | None
) -> None:
    """Checked again when the job runs, not only when it was queued: the document may have been
    deleted, replaced or moved out of the uploader's groups since. On a re-run (its worker died
    mid-write) the document may already hold part of this job's version, so only its presence and
    visibility are checked then."""
    unit, old_hash = str(replace["unit"]), replace.get("hash")
    everyone = store.documents(source, unit=unit, tenant=job.tenant)
    visible = store.documents(source, unit=unit, tenant=job.tenant, groups=viewer)
    named = next((d for d in visible if d.id == replace.get("document")), None)
    if named is None or len(visible) != len(everyone):
        raise IngestError(job.filename, f"replace: no document {replace.get('document')!r} any more")
    if job.attempts <= 1 and named.hash != old_hash:
        raise IngestError(
            job.filename,
            f"replace: {named.id!r} changed since this upload was accepted; upload again to replace "
            "its current version",
        )


def _heartbeat(state: StateStore, job_id: str, worker: str, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        try:
            if not state.heartbeat(job_id, worker):
                return
        except Exception:
            log.exception("ingest_job.heartbeat_failed", extra={"job": job_id})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", required=True, help="id recorded on the jobs this process claims")
    parser.add_argument("--base-dir", required=True, help="folder relative spec paths resolve from")
    args = parser.parse_args(argv)
    os.nice(NICE)  # queries in the server workers keep the CPU first
    configure_logging(logging.INFO)
    spec = Spec.model_validate({**json.loads(sys.stdin.read()), "base_dir": args.base_dir})
    app = build(spec)
    try:
        stale = spec.server.job_stale_s
        while (job := app.state.claim_job(args.worker, stale_after_s=stale)) is not None:
            run_job(app, app.state, job, args.worker)
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
