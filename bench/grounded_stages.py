"""Per-stage latency of the grounded-answer route under concurrent load, through `stanchion serve`.

Indexes the bundled Kestrel Freight sample corpus, starts the server, and has N users ask the
sample questions on /v1/answer for S seconds (closed loop). Prints end-to-end and per-stage
(retrieve, rerank, generate, verify) p50/p95/p99 from each answer's `latency_ms`, and throughput.
By default the route is the extractive answerer (no model); `--upstream` answers through the
fake OpenAI-compatible upstream of the gateway benchmark instead (500 ms to first token, 20
tokens/s), which is what a remote LLM adds.

    python bench/grounded_stages.py [--users 20] [--seconds 20] [--workers 2] [--upstream]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import httpx
import numpy as np
import yaml

from stanchion.bench.upstream import UpstreamServer
from stanchion.testing.services import free_port, wait_until_ready

CLI = [sys.executable, "-m", "stanchion"]
STAGES = ("retrieve", "rerank", "generate", "verify", "total")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--upstream", action="store_true", help="answer with the fake LLM upstream")
    args = parser.parse_args()
    sample = Path(str(files("stanchion") / "sample"))
    questions = [q["question"] for q in yaml.safe_load((sample / "questions.yaml").read_text())]
    with tempfile.TemporaryDirectory(prefix="stanchion-grounded-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp) / "sample"
        shutil.copytree(sample, root)
        spec = yaml.safe_load((root / "stanchion.yaml").read_text())
        port = free_port()
        spec["server"] = {
            "port": port,
            "workers": args.workers,
            "state_path": "state.db",
            "rate_limits": {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000},
        }
        if args.upstream:
            upstream = stack.enter_context(UpstreamServer())
            spec["models"] = {
                "llm": {
                    "provider": "openai",
                    "model": "fake",
                    "base_url": upstream.url,
                    "max_retries": 0,
                    "timeout_s": 30,
                }
            }
            spec["routes"] = {"default": {"models": ["llm"]}}
            spec.setdefault("answer", {})["route"] = "default"
        (root / "stanchion.yaml").write_text(yaml.safe_dump(spec))
        spec_file = str(root / "stanchion.yaml")
        subprocess.run([*CLI, "ingest", "--spec", spec_file], check=True, stdout=subprocess.DEVNULL)
        key = json.loads(
            subprocess.check_output(
                [
                    *CLI,
                    "keys",
                    "create",
                    "--spec",
                    spec_file,
                    "--tenant",
                    "default",
                    "--user",
                    "bench",
                    "--json",
                ]
            )
        )["key"]
        server = subprocess.Popen([*CLI, "serve", "--spec", spec_file, "--log-level", "warning"])
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(url + "/readyz")
            headers = {"Authorization": f"Bearer {key}"}
            asyncio.run(_load(url, headers, questions, args.users, 3.0))  # load models in every worker
            results, seconds = asyncio.run(_load(url, headers, questions, args.users, args.seconds))
        finally:
            server.terminate()
            server.wait(timeout=60)
    route = "fake LLM upstream" if args.upstream else "extractive"
    print(
        f"{args.users} users, {args.workers} workers, {route} route: {len(results)} answers in "
        f"{seconds:.1f} s = {len(results) / seconds:.1f} answers/s"
    )
    print(f"{'stage':>10}  {'p50 ms':>8}  {'p95 ms':>8}  {'p99 ms':>8}")
    for stage in ("end_to_end", *STAGES):
        values = [r[stage] for r in results if stage in r]
        if values:
            p50, p95, p99 = np.percentile(values, [50, 95, 99])
            print(f"{stage:>10}  {p50:8.1f}  {p95:8.1f}  {p99:8.1f}")


async def _load(
    url: str, headers: dict[str, str], questions: list[str], users: int, seconds: float
) -> tuple[list[dict[str, float]], float]:
    results: list[dict[str, float]] = []
    started = time.perf_counter()
    deadline = started + seconds
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:

        async def user(offset: int) -> None:
            i = offset
            while time.perf_counter() < deadline:
                begun = time.perf_counter()
                r = await client.post("/v1/answer", json={"question": questions[i % len(questions)]})
                r.raise_for_status()
                results.append({**r.json()["latency_ms"], "end_to_end": (time.perf_counter() - begun) * 1000})
                i += users

        await asyncio.gather(*(user(u) for u in range(users)))
    return results, time.perf_counter() - started


if __name__ == "__main__":
    main()
