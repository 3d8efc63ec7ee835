"""A live API server over a small two-tenant corpus, on real loopback HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stanchion.app import build
from stanchion.core.embed import Embedder, SentenceTransformerEmbedder
from stanchion.server.app import create_app
from stanchion.spec import Spec
from stanchion.state import StateStore, open_state
from stanchion.testing.live_server import LiveServer

CORPUS = {
    "acme/public/refunds.md": "# Refund policy\n\nAcme refunds any order within 30 days of delivery. "
    "Refunds are paid to the original card within five business days.",
    "acme/finance/budget.md": "# Q3 budget\n\nThe Q3 marketing budget is 4.2 million dollars, approved by the CFO.",
    "globex/launch.md": "# Launch plan\n\nThe Globex launch code is zebra-42 and the launch date is 12 March.",
}


@dataclass
class Keys:
    ops: str  # acme, groups ops, query
    finance: str  # acme, groups finance, query
    ingest: str  # acme, groups ops, query + ingest
    admin: str  # acme, admin
    globex: str  # globex, query + ingest


def write_corpus(root: Path) -> None:
    for rel, text in CORPUS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def make_spec(
    root: Path,
    *,
    index: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    models: dict[str, Any] | None = None,
    routes: dict[str, Any] | None = None,
    guards: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Spec:
    raw: dict[str, Any] = {
        "index": index or {"path": str(root / "index.db")},
        "sources": [
            {"name": "acme-public", "path": str(root / "acme/public"), "tenant": "acme"},
            {
                "name": "acme-finance",
                "path": str(root / "acme/finance"),
                "tenant": "acme",
                "access_groups": ["finance"],
            },
            {"name": "globex", "path": str(root / "globex"), "tenant": "globex"},
        ],
        "server": {"state_path": str(root / "state.db"), "job_stale_s": 3, **(server or {})},
    }
    if models is not None:
        raw["models"] = models
    if routes is not None:
        raw["routes"] = routes
    if guards is not None:
        raw["guards"] = guards
    raw.update(extra or {})  # any other top-level keys (tools, agents)
    return Spec.model_validate({**raw, "base_dir": root})


def ingest_and_keys(spec: Spec, embedder: SentenceTransformerEmbedder | None) -> Keys:
    """Ingest the corpus and create the keys; ``embedder=None`` embeds with the spec's own."""
    system = build(spec, embedder=embedder)
    try:
        summary = system.pipeline.run()
        assert summary.documents == 3, summary.as_json()
        state = system.state

        def key(tenant: str, groups: list[str], scopes: list[str]) -> str:
            return state.create_key(tenant=tenant, user=f"{tenant}-user", groups=groups, scopes=scopes)[1]

        return Keys(
            ops=key("acme", ["ops"], ["query"]),
            finance=key("acme", ["finance"], ["query"]),
            ingest=key("acme", ["ops"], ["query", "ingest"]),
            admin=key("acme", [], ["admin"]),
            globex=key("globex", [], ["query", "ingest"]),
        )
    finally:
        system.close()


@dataclass
class Api:
    url: str
    keys: Keys
    spec: Spec

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def state(self) -> StateStore:
        """The server's control-plane state, opened beside it (close it after use)."""
        if self.spec.index.backend == "postgres":
            return open_state(dsn=self.spec.index.dsn)
        return open_state(sqlite_path=self.spec.resolve(self.spec.server.state_path))


ServerFactory = Callable[..., Api]


@pytest.fixture
def serve(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, request: pytest.FixtureRequest
) -> Iterator[ServerFactory]:
    """Start a server; ``backend="postgres"`` puts index and state in PostgreSQL and rate limits in
    Redis; ``server_embedder`` replaces the embedder the server uses (ingestion uses the real one);
    other keyword arguments go to ``make_spec``."""
    servers: list[LiveServer] = []

    def start(backend: str = "sqlite", *, server_embedder: Embedder | None = None, **spec_args: Any) -> Api:
        write_corpus(tmp_path)
        if backend == "postgres":
            spec_args["index"] = {"backend": "postgres", "dsn": request.getfixturevalue("pg_dsn")}
            spec_args["server"] = {
                "redis_url": request.getfixturevalue("redis_url"),
                **spec_args.get("server", {}),
            }
        spec = make_spec(tmp_path, **spec_args)
        keys = ingest_and_keys(spec, embedder)
        server = LiveServer(create_app(spec, embedder=server_embedder or embedder))
        url = server.__enter__()
        servers.append(server)
        return Api(url, keys, spec)

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture(params=["sqlite", "postgres"])
def api(serve: ServerFactory, request: pytest.FixtureRequest) -> Api:
    """The same API on the embedded default and on PostgreSQL + Redis."""
    return serve(backend=request.param)
