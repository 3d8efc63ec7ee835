"""`stanchion serve --workers 2` as real processes: shared state, merged metrics, graceful drain,
and workers or ingest jobs killed mid-flight."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from tests.server.conftest import write_corpus

from stanchion.testing.fake_openai import FakeOpenAIServer, Reply
from stanchion.testing.services import free_port

STANCHION = [sys.executable, "-m", "stanchion"]


def _run(*args: str) -> str:
    done = subprocess.run([*STANCHION, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Served:
    def __init__(self, root: Path, upstream_url: str) -> None:
        write_corpus(root)
        self.root = root
        self.port = free_port()
        self.spec_file = root / "stanchion.yaml"
        spec = {
            "index": {"path": "index.db"},
            "sources": [{"name": "acme-public", "path": "acme/public", "tenant": "acme"}],
            "models": {
                "up": {
                    "provider": "openai",
                    "model": "fake-model",
                    "base_url": upstream_url,
                    "max_retries": 0,
                    "timeout_s": 30,
                },
                "extractive": {"provider": "extractive"},
            },
            "routes": {"gw": {"models": ["up"], "grounded": False}, "default": {"models": ["extractive"]}},
            "server": {"port": self.port, "workers": 2, "state_path": "state.db", "job_stale_s": 3},
        }
        self.spec_file.write_text(yaml.safe_dump(spec))
        _run("ingest", "--spec", str(self.spec_file))
        created = json.loads(
            _run(
                "keys",
                "create",
                "--spec",
                str(self.spec_file),
                "--tenant",
                "acme",
                "--user",
                "ana",
                "--scopes",
                "query,ingest",
                "--json",
            )
        )
        self.key = created["key"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [*STANCHION, "serve", "--spec", str(self.spec_file), "--log-level", "warning"],
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 90
        while True:
            assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        return self.process.returncode


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def _streaming(served: Served) -> Iterator[Iterator[str]]:
    """A slow gateway stream, open and past its first token; yields the rest of its lines."""
    body = {"model": "gw", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    with served.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(ln for ln in lines if '"content":"w0' in ln.replace(" ", ""))
        yield lines


def _pids_running(fragment: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if fragment in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    slow = Reply(text=" ".join(f"w{i}" for i in range(40)), token_delay_s=0.05)
    with FakeOpenAIServer(default=slow, keep_alive=True) as server:
        yield server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIServer) -> Iterator[Served]:
    """One server for the module (start-up dominates); the tests run in file order, SIGTERM last."""
    server = Served(tmp_path_factory.mktemp("served"), upstream.url)
    yield server
    server.stop()


def test_workers_share_state_and_metrics(served: Served) -> None:
    with served.client() as c:
        statuses = [c.post("/v1/search", json={"query": "refund policy"}).status_code for _ in range(16)]
    assert statuses == [200] * 16
    metrics = httpx.get(served.url + "/metrics").text
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("stanchion_http_requests_total{") and 'route="/v1/search"' in line
    )
    assert total == 16  # both workers' counts, merged


def _workers(pid: int) -> list[int]:
    """The uvicorn worker processes (spawned by multiprocessing) under the server process."""
    found = []
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(child)
    return found


def test_workers_killed_mid_stream_cut_the_stream_and_the_server_recovers(served: Served) -> None:
    with _streaming(served) as lines:
        in_progress = _in_progress_records(served)  # the stream is in the audit log already
        for pid in _workers(served.process.pid):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(httpx.TransportError):  # the client sees a cut stream, not a fake end
            for line in lines:
                assert line != "data: [DONE]"
    _serves_again(served)
    assert _in_progress_records(served) == in_progress  # its record says it never finished
    db = sqlite3.connect(served.root / "index.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def _in_progress_records(served: Served) -> list[str]:
    """Request ids of the chat completions audited as started and never finished (status 0)."""
    deadline = time.monotonic() + 30
    while True:
        db = sqlite3.connect(served.root / "state.db")
        try:
            rows = db.execute(
                "SELECT request_id FROM audit_log WHERE action = 'chat.completions' AND status = 0"
            ).fetchall()
        finally:
            db.close()
        if rows:
            return [r[0] for r in rows]
        assert time.monotonic() < deadline, "no in-progress audit record for the stream"
        time.sleep(0.05)


def _serves_again(served: Served) -> None:
    deadline = time.monotonic() + 60
    ok = 0
    with served.client() as c:
        while ok < 10:
            assert time.monotonic() < deadline, "the server stopped answering after losing workers"
            try:
                if c.post("/v1/search", json={"query": "refund"}).status_code == 200:
                    ok += 1
            except httpx.TransportError:
                time.sleep(0.1)  # a request caught on a dying worker's connection
    assert served.process.poll() is None


def _both_workers(served: Served) -> list[int]:
    """Waits until the supervisor runs two workers again (it replaces dead ones one at a time)."""
    deadline = time.monotonic() + 30
    while len(workers := _workers(served.process.pid)) < 2:
        assert time.monotonic() < deadline, f"the dead workers were not replaced: {workers}"
        time.sleep(0.2)
    return workers


def test_a_killed_worker_is_replaced_and_others_keep_serving(served: Served) -> None:
    workers = _both_workers(served)  # the previous test killed both
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    _serves_again(served)
    assert workers[0] not in _both_workers(served)  # the supervisor started a replacement


def test_killed_ingest_job_is_resumed_and_the_index_stays_whole(served: Served) -> None:
    paragraphs = [
        f"Section {i}. The depot in city number {i} receives {i * 7} pallets of freight on "
        f"weekday {i % 5}, handled by crew {i % 13} under supervisor number {i * 3}."
        for i in range(300)
    ]
    text = "\n\n".join([*paragraphs, "The last depot closes at midnight; its codeword is quokka."])
    with served.client() as c:
        job = c.post("/v1/documents", json={"filename": "depots.md", "text": text}).json()
        deadline = time.monotonic() + 120
        while (
            not (pids := _pids_running(f"--base-dir {served.root}"))
            or c.get(f"/v1/jobs/{job['id']}").json()["status"] != "running"
        ):
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        time.sleep(1.0)  # into model loading or embedding: either way, mid-job
        killed = 0
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        assert killed, "the job finished before it could be killed; give it more text"
        while (job := c.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline + 120, job
            time.sleep(0.3)
        assert job["status"] == "done" and job["attempts"] >= 2, job
        (doc_id,) = job["result"]["document_ids"]
        doc = c.get(f"/v1/documents/{doc_id}").json()
        hits = c.post("/v1/search", json={"query": "codeword quokka", "k": 3}).json()["hits"]
    assert any("quokka" in h["text"] for h in hits)  # the end of the document made it in
    db = sqlite3.connect(served.root / "index.db")
    try:
        stored = db.execute("SELECT count(*) FROM chunks WHERE document_id = ?", (doc_id,)).fetchone()[0]
        orphans = db.execute(
            "SELECT count(*) FROM chunks c LEFT JOIN documents d ON d.id = c.document_id WHERE d.id IS NULL"
        ).fetchone()[0]
    finally:
        db.close()
    assert stored == doc["chunk_count"] > 10 and orphans == 0


def test_sigterm_drains_an_in_flight_stream(served: Served) -> None:
    with _streaming(served) as lines:
        served.process.send_signal(signal.SIGTERM)  # the answer still has ~2 s to go
        rest = list(lines)
    assert "data: [DONE]" in rest
    assert served.stop() == 0
