"""``/v1/memory`` in process: the caller's memories only, listed with or without history, deleted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from stanchion.memory import Memory
from stanchion.memory.fakes import WordEmbedder
from stanchion.memory.store import DatabaseMemoryStore
from stanchion.server.app import create_app
from stanchion.server.context import ServerContext
from stanchion.spec import Spec
from stanchion.types import Message


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FastAPI, dict[str, str], Memory]]:
    spec = Spec.model_validate(
        {"index": {"path": str(tmp_path / "index.db")}, "server": {"state_path": str(tmp_path / "state.db")}}
    )
    app = create_app(spec, embedder=WordEmbedder(), run_jobs=False)
    ctx: ServerContext = app.state.ctx
    state = ctx.app.state
    keys = {
        who: state.create_key(tenant=tenant, user=user)[1]
        for who, tenant, user in (("ann", "acme", "ann"), ("bob", "acme", "bob"), ("globex", "globex", "ann"))
    }
    memory = Memory(DatabaseMemoryStore(state.db), WordEmbedder())
    try:
        yield app, keys, memory
    finally:
        ctx.app.close()


def _say(memory: Memory, tenant: str, user: str, *said: str) -> None:
    for text in said:
        asyncio.run(memory.remember(tenant, user, [Message("user", text)], source="chat-1"))


def _call(app: FastAPI, key: str, method: str, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, headers={"Authorization": f"Bearer {key}"})

    return asyncio.run(go())


def test_list_shows_the_callers_memories_and_history_on_request(
    api: tuple[FastAPI, dict[str, str], Memory],
) -> None:
    app, keys, memory = api
    _say(memory, "acme", "ann", "I love Python.", "I now prefer Rust.", "I live in Oslo.")
    _say(memory, "acme", "bob", "I love Java.")
    _say(memory, "globex", "ann", "I love Haskell.")
    current = _call(app, keys["ann"], "GET", "/v1/memory")
    assert current.status_code == 200, current.text
    assert sorted(m["value"] for m in current.json()["data"]) == ["Oslo", "Rust"]
    full = _call(app, keys["ann"], "GET", "/v1/memory?include_history=true").json()["data"]
    old = [m for m in full if not m["current"]]
    assert [m["value"] for m in old] == ["Python"] and old[0]["superseded_by"]
    assert [m["value"] for m in _call(app, keys["globex"], "GET", "/v1/memory").json()["data"]] == ["Haskell"]


def test_delete_one_and_all_touch_only_the_caller(api: tuple[FastAPI, dict[str, str], Memory]) -> None:
    app, keys, memory = api
    _say(memory, "acme", "ann", "I live in Oslo.", "I love tea.")
    _say(memory, "acme", "bob", "I love Java.")
    anns = {m.value: m.id for m in memory.store.memories("acme", "ann")}
    bobs = [m.id for m in memory.store.memories("acme", "bob")]
    # Bob and ann's namesake in another tenant cannot delete ann's memory: 404, and it stays.
    for other in ("bob", "globex"):
        refused = _call(app, keys[other], "DELETE", f"/v1/memory/{anns['Oslo']}")
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "memory_not_found"
    assert memory.store.get("acme", "ann", anns["Oslo"]) is not None
    done = _call(app, keys["ann"], "DELETE", f"/v1/memory/{anns['Oslo']}")
    assert done.status_code == 200 and done.json()["deleted"] == 1
    assert [m.value for m in memory.store.memories("acme", "ann")] == ["tea"]
    wiped = _call(app, keys["ann"], "DELETE", "/v1/memory")
    assert wiped.json() == {"id": None, "object": "memory.deleted", "deleted": 1}
    assert memory.store.memories("acme", "ann") == []
    assert [m.id for m in memory.store.memories("acme", "bob")] == bobs
    ctx: ServerContext = app.state.ctx
    audited = [r for r in ctx.app.state.audit_log("acme") if r.action == "memory.delete"]
    assert sorted(str(r.detail["memory"]) for r in audited) == sorted([anns["Oslo"], "all"])
    assert {r.user for r in audited} == {"ann"}


def test_requests_without_a_key_or_with_a_bad_id_are_refused(
    api: tuple[FastAPI, dict[str, str], Memory],
) -> None:
    app, keys, _ = api
    assert _call(app, "sk-stn-nope", "GET", "/v1/memory").status_code == 401
    assert _call(app, keys["ann"], "DELETE", "/v1/memory/bad%20id").status_code == 422
