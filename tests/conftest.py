"""Shared fixtures. The network is denied to models: everything loads from installed packages."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stanchion.core.embed import SentenceTransformerEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STANCHION_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The evaluation data in ../shared/data; tests that need it skip, with the reason, when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set STANCHION_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real packaged MiniLM, loaded once per test session."""
    model = SentenceTransformerEmbedder()
    model.warm_up()
    return model


@pytest.fixture(autouse=True)
def _deny_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in the tests may reach beyond this machine; loopback stays open for local servers."""
    import socket

    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if sock.family in (socket.AF_INET, socket.AF_INET6) and str(host) not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(sock, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


def _service_missing(reason: str) -> None:
    """CI (STANCHION_REQUIRE_SERVICES=1) must have every service; elsewhere, skip with the reason."""
    if os.environ.get("STANCHION_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 16 + pgvector (pgserver) for the whole session."""
    from stanchion.testing.services import ServiceUnavailable, postgres_server

    try:
        with postgres_server(tmp_path_factory.mktemp("pg")) as dsn:
            yield dsn
    except (ServiceUnavailable, ImportError) as exc:
        _service_missing(f"PostgreSQL (pgserver): {exc}")


@pytest.fixture
def pg_dsn(pg_admin_dsn: str) -> str:
    """An empty database of its own for each test."""
    from stanchion.testing.services import fresh_database

    return fresh_database(pg_admin_dsn)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback for the whole session; tests use distinct key prefixes."""
    from stanchion.testing.services import ServiceUnavailable, redis_server

    try:
        with redis_server(tmp_path_factory.mktemp("redis")) as url:
            yield url
    except ServiceUnavailable as exc:
        _service_missing(f"Redis: {exc}")


def pytest_unconfigure(config: pytest.Config) -> None:
    # llama-cpp-python opens /dev/null twice at import and never closes it; at exit, under pytest's
    # warning filters, that prints two ResourceWarnings that would bury a real one.
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()
