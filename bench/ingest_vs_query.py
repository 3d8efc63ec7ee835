"""Does a large background ingest job starve queries? Search p95 with and without one running.

Builds a base index from SciFact abstracts, starts ``stanchion serve``, and measures /v1/search
(hybrid) under a fixed closed-loop load twice in one run: idle, then while an uploaded document of
many more abstracts is being ingested by the server's job process. The target is a p95 ratio
under 2.

    python bench/ingest_vs_query.py [--data ../shared/data] [--base 2000] [--upload 3000]
        [--users 8] [--seconds 20] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from stanchion.testing.services import free_port, wait_until_ready

CLI = [sys.executable, "-m", "stanchion"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--base", type=int, default=2000, help="abstracts in the base index")
    parser.add_argument("--upload", type=int, default=3000, help="abstracts in the uploaded document")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    scifact = args.data / "beir-scifact"
    if not (scifact / "corpus.jsonl").exists():
        sys.exit(f"SciFact not found under {args.data}; pass --data")
    docs = [json.loads(line) for line in (scifact / "corpus.jsonl").open()][: args.base + args.upload]
    queries = [json.loads(line)["text"] for line in (scifact / "queries.jsonl").open()]
    with tempfile.TemporaryDirectory(prefix="stanchion-ingest-bench-") as tmp:
        root = Path(tmp)
        base = root / "base"
        base.mkdir()
        for doc in docs[: args.base]:
            (base / f"{doc['_id']}.md").write_text(f"# {doc['title']}\n\n{doc['text']}\n")
        port = free_port()
        spec = root / "stanchion.yaml"
        spec.write_text(yaml.safe_dump({
            "index": {"path": "index.db"},
            "sources": [{"name": "scifact", "path": "base"}],
            "server": {"port": port, "workers": args.workers, "state_path": "state.db",
                       "max_upload_mb": 100,
                       "rate_limits": {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000}},
        }))  # fmt: skip
        started = time.perf_counter()
        subprocess.run([*CLI, "ingest", "--spec", str(spec)], check=True, stdout=subprocess.DEVNULL)
        print(f"base index: {args.base} abstracts in {time.perf_counter() - started:.0f} s")
        key = json.loads(subprocess.check_output(
            [*CLI, "keys", "create", "--spec", str(spec), "--tenant", "default", "--user", "bench",
             "--scopes", "query,ingest", "--json"]))["key"]  # fmt: skip
        server = subprocess.Popen([*CLI, "serve", "--spec", str(spec), "--log-level", "warning"])
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url + "/readyz")
            headers = {"Authorization": f"Bearer {key}"}
            asyncio.run(_load(url, headers, queries, args.users, 3.0))  # warm caches and the model
            idle = asyncio.run(_load(url, headers, queries, args.users, args.seconds))
            upload = "\n\n".join(f"## {d['title']}\n\n{d['text']}" for d in docs[args.base :])
            job = httpx.post(url + "/v1/documents", headers=headers, timeout=120,
                             json={"filename": "scifact-upload.md", "text": upload}).json()  # fmt: skip
            while httpx.get(f"{url}/v1/jobs/{job['id']}", headers=headers).json()["status"] == "queued":
                time.sleep(0.2)
            time.sleep(3.0)  # past the job process's model loading, into chunking and embedding
            busy = asyncio.run(_load(url, headers, queries, args.users, args.seconds))
            status = httpx.get(f"{url}/v1/jobs/{job['id']}", headers=headers).json()
            print(f"job status at the end of the busy phase: {status['status']}")
            if status["status"] != "running":
                print("warning: the job finished during the busy phase; raise --upload for a fair figure")
        finally:
            server.terminate()
            server.wait(timeout=60)
    for name, result in (("idle", idle), ("during ingest", busy)):
        print(f"{name:>14}: {len(result)} queries, p50 {np.percentile(result, 50):.1f} ms, "
              f"p95 {np.percentile(result, 95):.1f} ms, p99 {np.percentile(result, 99):.1f} ms")  # fmt: skip
    print(
        f"p95 ratio (during ingest / idle): {np.percentile(busy, 95) / np.percentile(idle, 95):.2f} (target < 2)"
    )


async def _load(
    url: str, headers: dict[str, str], queries: list[str], users: int, seconds: float
) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:

        async def user(offset: int) -> None:
            i = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                r = await client.post("/v1/search", json={"query": queries[i % len(queries)], "k": 10})
                r.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
                i += users

        await asyncio.gather(*(user(u) for u in range(users)))
    return latencies


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
