"""The gateway benchmark: what ``stanchion serve`` adds to a chat completion's latency under load.

One call starts everything in a temporary folder, measures the same closed-loop load twice, first
straight at the fake upstream and then through the gateway's pass-through route, and stops it all::

    report = run_gateway_bench(users=1000, duration_s=20, backend="postgres", workers=2)
    report["added_ms"]["p99"]  # gateway minus direct, at the 99th percentile

``backend="postgres"`` runs PostgreSQL (pgserver) and redis-server beside the gateway, as a
multi-worker deployment would; ``sqlite`` keeps state in a file. ``cache="exact"`` or
``"semantic"`` (exact and semantic tiers) puts the response cache on the route, in Redis or in a
SQLite file by the same backend; with the cache on, every request asks a question of its own
(``unique_prompts``), so what is measured is what a cache *miss* adds. The upstream runs in its own
process and the gateway in its own, so the load generator here keeps this process's core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from stanchion.bench.loadgen import LoadConfig, LoadResult, Percentiles, raise_fd_limit, run_load
from stanchion.bench.upstream import UpstreamConfig, UpstreamServer
from stanchion.errors import StanchionError

__all__ = ["CACHE_MODES", "BenchError", "CacheMode", "run_gateway_bench"]

Backend = Literal["sqlite", "postgres"]
CacheMode = Literal["off", "exact", "semantic"]
CACHE_MODES: tuple[CacheMode, ...] = ("off", "exact", "semantic")
_ROUTE = "passthrough"
# Runs the CLI with this interpreter, whatever PATH says.
_CLI = [sys.executable, "-c", "from stanchion.cli import main; main()"]
# The gateway holds two sockets per user (client side and upstream side), plus its own files.
_FD_PER_USER = 3
_FD_HEADROOM = 512


class BenchError(StanchionError):
    """The benchmark could not run: the gateway did not start or refused the benchmark's requests."""


def run_gateway_bench(
    users: int,
    duration_s: float,
    backend: Backend = "sqlite",
    workers: int = 1,
    stream: bool = True,
    *,
    warmup_s: float = 3.0,
    upstream: UpstreamConfig | None = None,
    startup_timeout_s: float = 180.0,
    cache: CacheMode = "off",
    unique_prompts: bool | None = None,
    guards: bool = False,
) -> dict[str, Any]:
    """Measure direct and through-the-gateway load; returns the report (see ``_report`` for its keys).
    ``unique_prompts`` defaults to on with the cache or the guards, off without. ``guards``: PII
    masking and the injection check on the route, each prompt holding a name and an e-mail address
    (so what is measured is detection, masking and restoring, not a remembered verdict)."""
    upstream = upstream or UpstreamConfig()
    unique = (cache != "off" or guards) if unique_prompts is None else unique_prompts
    raise_fd_limit(users * _FD_PER_USER + _FD_HEADROOM)  # the servers we start inherit it
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stanchion-bench-")))
        up = stack.enter_context(
            UpstreamServer(upstream.ttft_s, upstream.tokens_per_s, upstream.tokens, model=upstream.model)
        )
        dsn, redis_url = stack.enter_context(_backing_services(backend, workdir))
        port = _free_port()
        spec = _write_spec(
            workdir, up.url, upstream.model, port, workers, dsn, redis_url, cache, guards=guards
        )
        key = _create_key(spec)
        gateway_url = stack.enter_context(_gateway(spec, port, workers, workdir, startup_timeout_s))
        _check_route(gateway_url, key)

        def load(url: str, model: str, api_key: str | None) -> LoadResult:
            config = LoadConfig(
                url=url, users=users, duration_s=duration_s, warmup_s=warmup_s, stream=stream,
                model=model, api_key=api_key, unique_prompts=unique,
            )  # fmt: skip
            if guards:
                config = dataclasses.replace(config, prompt=GUARDED_PROMPT)
            return run_load(config)

        direct = load(up.url, upstream.model, None)
        through = load(gateway_url, _ROUTE, key)
    report = _report(direct, through, backend=backend, workers=workers, stream=stream, upstream=upstream)
    return report | {"cache": cache, "unique_prompts": unique, "guards": guards}


def _report(
    direct: LoadResult,
    through: LoadResult,
    *,
    backend: Backend,
    workers: int,
    stream: bool,
    upstream: UpstreamConfig,
) -> dict[str, Any]:
    """``requests``, ``errors`` and ``rps`` are the gateway run's; each run's full result is kept too."""
    report: dict[str, Any] = {
        "users": through.users,
        "requests": through.requests,
        "errors": through.errors,
        "rps": round(through.rps, 1),
        "direct_ms": direct.latency_ms.to_dict(),
        "gateway_ms": through.latency_ms.to_dict(),
        "added_ms": _added(direct.latency_ms, through.latency_ms),
    }
    if direct.ttft_ms is not None and through.ttft_ms is not None:
        report |= {
            "ttft_direct_ms": direct.ttft_ms.to_dict(),
            "ttft_gateway_ms": through.ttft_ms.to_dict(),
            "ttft_added_ms": _added(direct.ttft_ms, through.ttft_ms),
        }
    report |= {
        "error_kinds": through.error_kinds,
        "duration_s": round(through.duration_s, 3),
        "backend": backend,
        "workers": workers,
        "stream": stream,
        "upstream": {
            "ttft_s": upstream.ttft_s,
            "tokens_per_s": upstream.tokens_per_s,
            "tokens": upstream.tokens,
        },
        "direct": direct.to_dict(),
        "gateway": through.to_dict(),
    }
    return report


def _added(direct: Percentiles, through: Percentiles) -> dict[str, float | None]:
    """Gateway minus direct, per percentile (None where either run had no successful request)."""
    added = Percentiles(through.p50 - direct.p50, through.p95 - direct.p95, through.p99 - direct.p99)
    return added.to_dict()


# --- what runs beside the gateway --------------------------------------------------------------


@contextlib.contextmanager
def _backing_services(backend: Backend, workdir: Path) -> Iterator[tuple[str | None, str | None]]:
    """PostgreSQL and Redis for the postgres backend; yields ``(dsn, redis_url)`` (both None for sqlite)."""
    if backend == "sqlite":
        yield None, None
        return
    from stanchion.testing.services import postgres_server, redis_server

    with contextlib.ExitStack() as stack:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime dir, which warns where XDG_RUNTIME_DIR is unset.
            warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
            dsn = stack.enter_context(postgres_server(workdir / "pg"))
        yield dsn, stack.enter_context(redis_server(workdir / "redis"))


GUARDED_PROMPT = (
    "My name is Jane Roe and my e-mail is jane.roe@example.com. In two sentences, what does a stanchion do?"
)


def _write_spec(
    workdir: Path,
    upstream_url: str,
    upstream_model: str,
    port: int,
    workers: int,
    dsn: str | None,
    redis_url: str | None,
    cache: CacheMode = "off",
    *,
    guards: bool = False,
) -> Path:
    """A spec whose ``passthrough`` route forwards to the upstream, with limits no benchmark reaches,
    and the response cache on that route unless ``cache`` is ``off``."""
    server: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "workers": workers,
        "state_path": str(workdir / "state.db"),
        "rate_limits": {"requests_per_minute": 1_000_000, "tokens_per_minute": 100_000_000},
    }
    if redis_url is not None:
        server["redis_url"] = redis_url
    index = (
        {"backend": "postgres", "dsn": dsn}
        if dsn
        else {"backend": "sqlite", "path": str(workdir / "index.db")}
    )
    spec = {
        "version": 1,
        "index": index,
        "models": {
            "upstream": {
                "provider": "openai",
                "model": upstream_model,
                "base_url": upstream_url,
                "timeout_s": 30,
                "max_retries": 0,
                "context_window": 8192,
                "max_output_tokens": 64,
            }
        },
        "routes": {_ROUTE: _route(cache), "default": {"models": ["upstream"]}},
        "answer": {"route": "default"},
        "server": server,
        **({"guards": {"pii": {}, "injection": {}}} if guards else {}),
    }
    path = workdir / "stanchion.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _route(cache: CacheMode) -> dict[str, Any]:
    route: dict[str, Any] = {"models": ["upstream"], "grounded": False}
    if cache != "off":
        route["cache"] = {"exact": True, "semantic": cache == "semantic"}
    return route


def _create_key(spec: Path) -> str:
    """A query-scoped API key for the benchmark's tenant; the secret lives only in memory."""
    command = [*_CLI, "keys", "create", "--spec", str(spec), "--tenant", "bench", "--user", "bench"]
    done = subprocess.run(
        [*command, "--scopes", "query", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"stanchion keys create failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    try:
        return str(json.loads(done.stdout)["key"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError("stanchion keys create --json printed no key") from exc


@contextlib.contextmanager
def _gateway(spec: Path, port: int, workers: int, workdir: Path, startup_timeout_s: float) -> Iterator[str]:
    """Run ``stanchion serve`` until the block ends; yields its base URL once /readyz answers 200."""
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log:
        # Its own session, so that a stop reaches uvicorn's worker processes too.
        proc = subprocess.Popen(
            [
                *_CLI,
                "serve",
                "--spec",
                str(spec),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(proc, base, startup_timeout_s, log_path)
            yield f"{base}/v1"
        finally:
            _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], base: str, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"stanchion serve exited ({proc.returncode}):\n{_tail(log_path)}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{base}/readyz").status_code == 200:
                    return
            time.sleep(0.2)
    raise BenchError(f"stanchion serve was not ready within {timeout_s:.0f} s:\n{_tail(log_path)}")


def _check_route(gateway_url: str, key: str) -> None:
    """One request before the load, so a misconfigured gateway fails loudly instead of as 100% errors."""
    body = {"model": _ROUTE, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 4}
    response = httpx.post(
        f"{gateway_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    if response.status_code != 200:
        raise BenchError(
            f"the gateway answered {response.status_code} to a test request: {response.text[:500]}"
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets uvicorn drain; a gateway that has not exited in 30 s is killed with its workers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
