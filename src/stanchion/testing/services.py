"""Real backing services for tests and benchmarks: PostgreSQL 16 + pgvector and redis-server.

PostgreSQL comes from the PyPI package ``pgserver`` (a self-contained server binary with pgvector),
Redis from the ``redis-server`` binary on PATH (Debian package ``redis-server``). Both listen only
on this machine and keep nothing once closed::

    with postgres_server(tmp_path / "pg") as dsn, redis_server(tmp_path / "redis") as url:
        ...
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "ServiceUnavailable",
    "free_port",
    "fresh_database",
    "postgres_server",
    "redis_server",
    "wait_until_ready",
]


class ServiceUnavailable(RuntimeError):
    """A backing service cannot start here; the message says what to install."""


@contextlib.contextmanager
def postgres_server(datadir: Path) -> Iterator[str]:
    """Start (or reuse) a pgserver cluster in ``datadir``; yields a libpq DSN for its ``postgres`` db."""
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ServiceUnavailable("pgserver is not installed: pip install pgserver") from exc
    datadir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(datadir), cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        yield server.get_uri()
    finally:
        server.cleanup()


def fresh_database(admin_dsn: str) -> str:
    """Create an empty database (with pgvector) on the server of ``admin_dsn``; returns its DSN."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = _with_dbname(admin_dsn, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return dsn


def _with_dbname(dsn: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


@contextlib.contextmanager
def redis_server(workdir: Path, *, port: int | None = None) -> Iterator[str]:
    """Run ``redis-server`` on a free loopback port, without persistence; yields ``redis://`` URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailable("redis-server is not on PATH: apt-get install redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()


def free_port() -> int:
    """A loopback port nothing listens on (for a server about to start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, *, timeout: float = 120.0) -> None:
    """Poll ``url`` (e.g. a server's /readyz) until it answers 200; RuntimeError after ``timeout``."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceUnavailable(f"{name} exited with status {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise ServiceUnavailable(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")
