"""Starts ingest-job processes when jobs are waiting; any worker may run any tenant's job.

Each server worker polls the shared state (cheap: one COUNT) and, below its limit, starts
``python -m stanchion.server.ingest_job`` (which lowers its own CPU priority) so queries keep the CPU.
An upload nudges the poller so its job starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import uuid

from stanchion.spec import Spec
from stanchion.state import StateStore

log = logging.getLogger(__name__)
POLL_S = 1.0


class JobLauncher:
    def __init__(self, spec: Spec, state: StateStore) -> None:
        self.spec = spec
        self.state = state
        self.limit = spec.server.max_concurrent_ingest
        self._running: set[subprocess.Popen[bytes]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="job-launcher")

    def nudge(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()
            self._running = {p for p in self._running if p.poll() is None}
            if len(self._running) >= self.limit:
                continue
            try:
                waiting = await asyncio.to_thread(
                    self.state.claimable_jobs, stale_after_s=self.spec.server.job_stale_s
                )
            except Exception:
                log.exception("jobs.poll_failed")
                continue
            if waiting:
                await self._launch()

    async def _launch(self) -> None:
        worker = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        spec_json = json.dumps(self.spec.model_dump(mode="json")).encode()
        process = await asyncio.to_thread(self._spawn, worker, spec_json)
        self._running.add(process)
        log.info("jobs.launched", extra={"worker": worker, "pid": process.pid})

    def _spawn(self, worker: str, spec_json: bytes) -> subprocess.Popen[bytes]:
        # A plain Popen, not an asyncio subprocess: the job outlives this worker's event loop
        # (a graceful restart must not kill a long ingest), so nothing may tie it to the loop.
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stanchion.server.ingest_job",
                "--worker",
                worker,
                "--base-dir",
                str(self.spec.base_dir),
            ],
            stdin=subprocess.PIPE,
        )
        assert process.stdin is not None
        process.stdin.write(spec_json)
        process.stdin.close()
        return process

    async def close(self, *, wait_s: float = 10.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Give running jobs a moment to finish; longer ones carry on in their own process, and
        # their heartbeat keeps them theirs.
        deadline = asyncio.get_running_loop().time() + wait_s
        while any(p.poll() is None for p in self._running) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        _DETACHED.extend(p for p in self._running if p.poll() is None)
        self._running.clear()


# Jobs still running when their worker stopped: referenced so Popen does not warn at collection.
_DETACHED: list[subprocess.Popen[bytes]] = []
