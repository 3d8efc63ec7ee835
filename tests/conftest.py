"""Shared fixtures. The network is denied to models: everything loads from installed packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stanchion.index.embed import SentenceTransformerEmbedder

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
