"""``python -m stanchion.server.ingest_job``: the process that runs queued ingest jobs.

A server worker starts it (at lower CPU priority) when jobs are queued, so embedding never
competes with queries for the GIL. It claims jobs from the shared state until none is left,
reporting a heartbeat; if it dies, the job's heartbeat goes stale and another worker re-queues it.
The pipeline writes whole documents atomically and skips those already written, so a resumed job
finishes where the dead one stopped and the index is never half-written.

The spec arrives as JSON on stdin (never on the command line, where secrets would show in ``ps``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

from stanchion.app import App, build
from stanchion.errors import StanchionError
from stanchion.logs import configure_logging
from stanchion.spec import SourceSpec, Spec
from stanchion.state import Job, StateStore

log = logging.getLogger(__name__)
UPLOAD_SOURCE_PREFIX = "upload."
NICE = 10


def upload_source_name(tenant: str) -> str:
    """Each tenant's uploads form one source, so their document ids can never collide."""
    return UPLOAD_SOURCE_PREFIX + tenant


def safe_filename(name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name.replace("\\", "/")).name).lstrip(".")[:200]
    return base or "upload.txt"


def run_job(app: App, state: StateStore, job: Job, worker: str) -> None:
    stop = threading.Event()
    every = app.spec.server.job_stale_s / 6  # several beats fit in the stale window
    beat = threading.Thread(target=_heartbeat, args=(state, job.id, worker, stop, every), daemon=True)
    beat.start()
    try:
        result = _ingest(app, state, job)
    except StanchionError as exc:
        state.finish_job(job.id, worker, "failed", error=str(exc))
        log.warning("ingest_job.failed", extra={"job": job.id, "error": str(exc)})
        return
    except Exception as exc:  # a bug must still end the job, not leave it running forever
        log.exception("ingest_job.crashed", extra={"job": job.id})
        state.finish_job(job.id, worker, "failed", error=f"internal error: {type(exc).__name__}")
        return
    finally:
        stop.set()
    failed: list[dict[str, str]] = result.pop("failed", [])  # type: ignore[assignment]
    reasons = [f["reason"] for f in failed]  # not the paths: they name a temporary folder
    if reasons and not result.get("document_ids"):
        state.finish_job(job.id, worker, "failed", result=result, error="; ".join(reasons))
    else:
        state.finish_job(job.id, worker, "done", result=result)
    log.info("ingest_job.done", extra={"job": job.id, "documents": result.get("document_ids")})


def _ingest(app: App, state: StateStore, job: Job) -> dict[str, object]:
    payload = state.job_payload(job.id)
    if payload is None:
        raise StanchionError(f"job {job.id} has no payload (already finished elsewhere?)")
    options = job.options
    filename = safe_filename(job.filename)
    with tempfile.TemporaryDirectory(prefix="stanchion-upload-") as folder:
        (Path(folder) / filename).write_bytes(payload)
        source = SourceSpec(
            name=upload_source_name(job.tenant),
            path=folder,
            tenant=job.tenant,
            access_groups=list(options.get("access_groups") or []),  # type: ignore[call-overload]
            metadata=dict(options.get("metadata") or {}),  # type: ignore[call-overload]
            max_file_mb=app.spec.server.max_upload_mb,
        )
        summary = app.pipeline.run([source], prune_missing=False)
    ids = [d.id for d in app.store.documents(source.name, unit=filename)]
    return {**summary.as_json(), "document_ids": ids}


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
