"""The PII vault stores, in-process and Redis, each through the conformance suite, plus what only
one of them has: the in-process clock and cap, Redis' expiry, and failing closed when Redis is down
or silent."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stanchion.errors import GuardError
from stanchion.guards.vault import PseudonymVault, Span, Style, VaultScope
from stanchion.guards.vault_store import InMemoryVaultStore, open_vault_store
from stanchion.guards.vault_store_redis import RedisVaultStore
from stanchion.redis_client import RedisClient
from stanchion.spec import Spec
from stanchion.testing.vault_suite import OpenStore, VaultStoreConformance

SCOPE = VaultScope("acme", "conv-1")


class TestInMemoryVaultStore(VaultStoreConformance):
    @pytest.fixture
    def open_store(self) -> OpenStore:
        stores: dict[str, InMemoryVaultStore] = {}
        return lambda style="placeholder": stores.setdefault(style, InMemoryVaultStore(style=style))


class TestRedisVaultStore(VaultStoreConformance):
    @pytest.fixture
    def open_store(self, redis_url: str) -> OpenStore:
        prefix = f"test:{uuid.uuid4().hex[:8]}:"

        def open_store(style: Style = "placeholder") -> RedisVaultStore:
            return RedisVaultStore(redis_url, style=style, prefix=prefix)

        return open_store


class TestInMemoryOnly:
    def test_one_scope_gets_its_vault_object_back(self) -> None:
        """Requests of one process share the vault object of their scope; other scopes do not."""

        async def scenario() -> None:
            store = InMemoryVaultStore()
            a = await store.vault(VaultScope("acme", "c1"))
            b = await store.vault(VaultScope("globex", "c1"))
            assert a is not b and await store.vault(VaultScope("acme", "c1")) is a
            assert await store.vault(VaultScope("acme", "c1", user="u2")) is not a

        asyncio.run(scenario())

    def test_expires_ttl_after_last_use(self) -> None:
        now = [1000.0]
        store = InMemoryVaultStore(ttl=60, clock=lambda: now[0])

        async def scenario() -> None:
            first = await store.vault(SCOPE)
            now[0] += 59
            assert await store.vault(SCOPE) is first  # used again: lives another 60 s
            now[0] += 59
            await store.save(first)  # saving is a use too
            now[0] += 59
            assert await store.vault(SCOPE) is first
            now[0] += 60
            assert len(store) == 0
            assert await store.vault(SCOPE) is not first
            assert first.expired(now[0]) and first.restore("x") == "x"  # a holder can still use it

        asyncio.run(scenario())

    def test_a_dropped_vault_saved_is_kept_unless_replaced(self) -> None:
        """A vault dropped while its request ran comes back on save, unless a newer one holds the
        scope (whose request keeps its own)."""
        now = [0.0]
        store = InMemoryVaultStore(ttl=10, clock=lambda: now[0])

        async def scenario() -> None:
            old = await store.vault(SCOPE)
            now[0] += 11
            assert len(store) == 0
            await store.save(old)
            assert await store.vault(SCOPE) is old
            now[0] += 11
            newer = await store.vault(SCOPE)
            await store.save(old)
            assert await store.vault(SCOPE) is newer

        asyncio.run(scenario())

    def test_least_recently_used_dropped_past_the_cap(self) -> None:
        async def scenario() -> None:
            store = InMemoryVaultStore(max_vaults=2)
            one = await store.vault(VaultScope("t", "1"))
            await store.vault(VaultScope("t", "2"))
            await store.vault(VaultScope("t", "1"))
            await store.vault(VaultScope("t", "3"))
            assert len(store) == 2 and await store.vault(VaultScope("t", "1")) is one

        asyncio.run(scenario())

    def test_bad_settings_are_refused(self) -> None:
        with pytest.raises(ValueError, match="ttl must be positive"):
            InMemoryVaultStore(ttl=0)
        with pytest.raises(ValueError, match="max_vaults"):
            InMemoryVaultStore(max_vaults=0)


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"


async def _pttl(url: str, key: str) -> int:
    client = RedisClient(url)
    try:
        reply = await client.call("PTTL", key)
    finally:
        client.close()
    assert isinstance(reply, int)
    return reply


class TestRedisOnly:
    def test_the_key_is_the_scope_key_and_expires_with_the_ttl(self, redis_url: str, prefix: str) -> None:
        """The hash lives under prefix + VaultScope.key with Redis expiry = ttl, refreshed by use."""

        async def scenario() -> None:
            store = RedisVaultStore(redis_url, ttl=30, prefix=prefix)
            try:
                assert store.key(SCOPE) == prefix + "pii-vault:acme::conv-1"
                vault = await store.vault(SCOPE)
                assert 0 < await _pttl(redis_url, store.key(SCOPE)) <= 30_000
                client = RedisClient(redis_url)
                await client.call("PEXPIRE", store.key(SCOPE), 1000)
                vault.mask("Ann", [Span(0, 3, "PERSON")])
                await store.save(vault)
                assert await _pttl(redis_url, store.key(SCOPE)) > 1000  # save refreshed it
                await client.call("PEXPIRE", store.key(SCOPE), 1000)
                await store.vault(SCOPE)
                assert await _pttl(redis_url, store.key(SCOPE)) > 1000  # so did handing it out
                client.close()
            finally:
                store.close()

        asyncio.run(scenario())

    def test_an_expired_vault_is_forgotten(self, redis_url: str, prefix: str) -> None:
        async def scenario() -> None:
            store = RedisVaultStore(redis_url, prefix=prefix)
            client = RedisClient(redis_url)
            try:
                vault = await store.vault(SCOPE)
                vault.mask("Ann", [Span(0, 3, "PERSON")])
                await store.save(vault)
                await client.call("DEL", store.key(SCOPE))  # what expiry does
                fresh = await store.vault(SCOPE)
                assert len(fresh) == 0 and fresh.restore("<PERSON_1>") == "<PERSON_1>"
                assert vault.restore("<PERSON_1>") == "Ann"  # the holder keeps its copy
            finally:
                client.close()
                store.close()

        asyncio.run(scenario())

    def test_a_flushed_script_cache_is_reloaded(self, redis_url: str, prefix: str) -> None:
        """A restarted Redis forgot the scripts: the store loads them again (NOSCRIPT)."""

        async def scenario() -> None:
            store = RedisVaultStore(redis_url, prefix=prefix)
            client = RedisClient(redis_url)
            try:
                await store.vault(SCOPE)
                await client.call("SCRIPT", "FLUSH")
                vault = await store.vault(SCOPE)
                vault.mask("Ann", [Span(0, 3, "PERSON")])
                await store.save(vault)
                assert len(await store.vault(SCOPE)) == 1
            finally:
                client.close()
                store.close()

        asyncio.run(scenario())

    def test_the_first_style_stays_for_the_conversation(self, redis_url: str, prefix: str) -> None:
        """A worker configured with another style reads a conversation's vault as it was made."""

        async def scenario() -> None:
            fake = RedisVaultStore(redis_url, style="fake", prefix=prefix)
            plain = RedisVaultStore(redis_url, style="placeholder", prefix=prefix)
            try:
                await fake.vault(SCOPE)
                assert (await plain.vault(SCOPE)).style == "fake"
            finally:
                fake.close()
                plain.close()

        asyncio.run(scenario())

    def test_a_hash_of_another_scope_is_refused(self, redis_url: str, prefix: str) -> None:
        """Should the key ever hold another scope's vault (a bug, a hand edit), nothing is mixed."""

        async def scenario() -> None:
            store = RedisVaultStore(redis_url, prefix=prefix)
            client = RedisClient(redis_url)
            try:
                await client.call("HSET", store.key(SCOPE), "scope", "globex\n\nconv-1")
                with pytest.raises(GuardError, match="unreadable"):
                    await store.vault(SCOPE)
            finally:
                client.close()
                store.close()

        asyncio.run(scenario())

    def test_bad_settings_are_refused(self, redis_url: str) -> None:
        with pytest.raises(ValueError, match="ttl must be positive"):
            RedisVaultStore(redis_url, ttl=0)
        with pytest.raises(ValueError, match="unknown pseudonym style"):
            RedisVaultStore(redis_url, style="mask")  # type: ignore[arg-type]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: a hung Redis."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        server.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestFailsClosed:
    def test_redis_down_refuses_with_a_guard_error(self) -> None:
        """Nothing listening: vault() and save() raise GuardError, never hand out an empty vault."""
        store = RedisVaultStore(f"redis://127.0.0.1:{_closed_port()}/0", timeout_s=1.0)

        async def scenario() -> None:
            try:
                with pytest.raises(GuardError, match=r"did not answer.*nothing was sent") as caught:
                    await store.vault(SCOPE)
                assert "connect" in caught.value.detail
                with pytest.raises(GuardError):
                    await store.save(PseudonymVault(SCOPE))
            finally:
                store.close()

        asyncio.run(scenario())

    def test_a_silent_redis_is_bounded_by_the_timeout(self, silent_server: str) -> None:
        """A Redis that accepts and never replies: GuardError once the time limit passes."""
        store = RedisVaultStore(silent_server, timeout_s=0.2)

        async def scenario() -> None:
            try:
                with pytest.raises(GuardError) as caught:
                    await store.vault(SCOPE)
                assert "no reply from Redis within 0.2 s" in caught.value.detail
            finally:
                store.close()

        asyncio.run(scenario())


class TestOpenVaultStore:
    def test_redis_when_the_server_has_one(self, tmp_path: Path) -> None:
        spec = Spec.model_validate(
            {
                "server": {"redis_url": "redis://127.0.0.1:6390/0"},
                "guards": {"pii": {"vault_ttl_s": 120, "style": "fake", "timeout_s": 0.5}},
            }
        )
        store = open_vault_store(spec)
        assert isinstance(store, RedisVaultStore)
        assert (store.ttl, store.style) == (120, "fake")
        store.close()

    def test_in_process_otherwise_with_the_spec_settings(self) -> None:
        store = open_vault_store(Spec.model_validate({"guards": {"pii": {"vault_ttl_s": 60}}}))
        assert isinstance(store, InMemoryVaultStore) and (store.ttl, store.style) == (60, "placeholder")
        default = open_vault_store(Spec.model_validate({}))
        assert isinstance(default, InMemoryVaultStore) and default.ttl == 3600
