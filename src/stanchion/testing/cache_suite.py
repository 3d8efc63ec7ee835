"""The response cache's backend conformance suite. Every backend's tests subclass
``CacheBackendConformance`` and give an ``open_backend`` fixture: a callable that opens a new
backend instance on the same store each time it is called (two instances are two workers)::

    class TestSQLiteCacheBackend(CacheBackendConformance):
        @pytest.fixture
        def open_backend(self, tmp_path):
            return lambda: SQLiteCacheBackend(tmp_path / "cache.db")

Each test runs its scenario in one event loop (``asyncio.run``) and closes what it opened.
Vectors are small hand-made ones (no model), so the suite runs in well under a second per backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from stanchion.cache.entry import CacheBackend, CacheEntry, Dependency

__all__ = ["DIM", "CacheBackendConformance", "make_entry", "unit"]

DIM = 8
HOUR = 3600.0

Scenario = Callable[..., Awaitable[None]]


def unit(*values: float, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[: len(values)] = values
    return (v / np.linalg.norm(v)).astype(np.float32)


def at_cosine(cosine: float) -> np.ndarray:
    """A unit vector at ``cosine`` to ``unit(1)``."""
    return unit(cosine, float(np.sqrt(1 - cosine**2)))


def make_entry(
    entry_id: str,
    *,
    tenant: str = "acme",
    partition: str = "route-a",
    key: str | None = None,
    vector: np.ndarray | None = None,
    ttl_s: float = HOUR,
    question: str = "",
    response: dict[str, Any] | None = None,
    dependencies: tuple[Dependency, ...] = (),
    tokens: int = 0,
    cost_usd: float = 0.0,
) -> CacheEntry:
    now = time.time()
    return CacheEntry(
        id=entry_id,
        tenant=tenant,
        partition=partition,
        exact_key=key if key is not None else f"key-{entry_id}",
        question=question or f"question {entry_id}?",
        response=response if response is not None else {"text": f"answer {entry_id}"},
        created=now,
        expires=now + ttl_s,
        vector=vector,
        dependencies=dependencies,
        tokens=tokens,
        cost_usd=cost_usd,
    )


async def ids_near(backend: CacheBackend, vector: np.ndarray, k: int = 10, **where: str) -> list[str]:
    tenant, partition = where.get("tenant", "acme"), where.get("partition", "route-a")
    return [c.entry.id for c in await backend.nearest(tenant, partition, vector, k)]


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.05)
    return False


class CacheBackendConformance:
    """Behaviour every cache backend must have. Subclasses provide ``open_backend``."""

    @pytest.fixture
    def open_backend(self) -> Callable[[], CacheBackend]:  # pragma: no cover - overridden by every backend
        raise NotImplementedError

    @staticmethod
    def run(open_backend: Callable[[], CacheBackend], scenario: Scenario, *, workers: int = 1) -> None:
        async def main() -> None:
            backends = [open_backend() for _ in range(workers)]
            try:
                await scenario(*backends)
            finally:
                for backend in backends:
                    backend.close()

        asyncio.run(main())

    # --- exact tier ---------------------------------------------------------------------------

    def test_an_entry_is_found_under_its_exact_key(self, open_backend: Callable[[], CacheBackend]) -> None:
        """get_exact returns what put stored under that key, and nothing under any other key."""

        async def scenario(cache: CacheBackend) -> None:
            entry = make_entry("e1", key="k1", vector=unit(1))
            await cache.put(entry, max_entries=10)
            found = await cache.get_exact("acme", "route-a", "k1")
            assert found is not None and found.id == "e1" and found.response == {"text": "answer e1"}
            assert await cache.get_exact("acme", "route-a", "k2") is None

        self.run(open_backend, scenario)

    def test_a_put_under_a_taken_key_replaces_the_entry(
        self, open_backend: Callable[[], CacheBackend]
    ) -> None:
        """The older entry under the same exact key is gone from both tiers."""

        async def scenario(cache: CacheBackend) -> None:
            await cache.put(make_entry("old", key="k", vector=unit(1)), max_entries=10)
            assert await ids_near(cache, unit(1)) == ["old"]
            await cache.put(make_entry("new", key="k", vector=unit(0, 1)), max_entries=10)
            found = await cache.get_exact("acme", "route-a", "k")
            assert found is not None and found.id == "new"
            assert await ids_near(cache, unit(1)) == ["new"]
            assert (await cache.stats("acme")).entries["acme"] == 1

        self.run(open_backend, scenario)

    # --- semantic tier --------------------------------------------------------------------------

    def test_nearest_gives_k_entries_most_similar_first(
        self, open_backend: Callable[[], CacheBackend]
    ) -> None:
        """Candidates come in order of cosine (given as ``similarity``), at most ``k``; an entry
        without a vector is in the exact tier only."""

        async def scenario(cache: CacheBackend) -> None:
            for name, cosine in [("c50", 0.5), ("c99", 0.99), ("c70", 0.7), ("c90", 0.9), ("c10", 0.1)]:
                await cache.put(make_entry(name, vector=at_cosine(cosine)), max_entries=100)
            await cache.put(make_entry("novector"), max_entries=100)
            found = await cache.nearest("acme", "route-a", unit(1), 3)
            assert [c.entry.id for c in found] == ["c99", "c90", "c70"]
            assert [c.similarity for c in found] == pytest.approx([0.99, 0.9, 0.7], abs=1e-5)
            assert await ids_near(cache, unit(1), k=50) == ["c99", "c90", "c70", "c50", "c10"]
            assert await cache.get_exact("acme", "route-a", "key-novector") is not None
            assert await ids_near(cache, unit(1), k=1) == ["c99"]

        self.run(open_backend, scenario)

    def test_a_partition_may_hold_vectors_of_two_dimensions(
        self, open_backend: Callable[[], CacheBackend]
    ) -> None:
        """After an embedding model change, a query is compared with the vectors of its dimension."""

        async def scenario(cache: CacheBackend) -> None:
            await cache.put(make_entry("small", vector=unit(1)), max_entries=10)
            await cache.put(make_entry("large", vector=unit(1, dim=16)), max_entries=10)
            assert await ids_near(cache, unit(1)) == ["small"]
            assert await ids_near(cache, unit(1, dim=16)) == ["large"]
            assert await ids_near(cache, unit(1, dim=4)) == []

        self.run(open_backend, scenario)

    # --- isolation ------------------------------------------------------------------------------

    def test_tenants_never_see_each_other(self, open_backend: Callable[[], CacheBackend]) -> None:
        """The same partition, key and even entry id in two tenants: each gets only its own, and a
        delete or clear of one leaves the other."""

        async def scenario(cache: CacheBackend) -> None:
            for tenant in ("acme", "globex"):
                entry = make_entry("same-id", tenant=tenant, key="k", vector=unit(1), response={"t": tenant})
                await cache.put(entry, max_entries=10)
            for tenant in ("acme", "globex"):
                found = await cache.get_exact(tenant, "route-a", "k")
                assert found is not None and found.tenant == tenant and found.response == {"t": tenant}
                [near] = await cache.nearest(tenant, "route-a", unit(1), 5)
                assert near.entry.tenant == tenant and near.entry.response == {"t": tenant}
            assert await cache.delete("acme", ["same-id"]) == 1
            assert await cache.get_exact("acme", "route-a", "k") is None
            assert await ids_near(cache, unit(1), tenant="globex") == ["same-id"]
            await cache.put(make_entry("a2", tenant="acme", vector=unit(1)), max_entries=10)
            assert await cache.clear("globex") == 1
            assert await cache.get_exact("globex", "route-a", "k") is None
            assert await ids_near(cache, unit(1), tenant="acme") == ["a2"]

        self.run(open_backend, scenario)

    def test_tenant_names_with_any_characters_stay_apart(
        self, open_backend: Callable[[], CacheBackend]
    ) -> None:
        """Dots, globs, braces, colons and percent signs in tenant names neither cross tenants
        nor widen a clear."""

        names = ["acme", "acme.eu", "ac*me", "a}:e:x", "%7D", "}", "Ünï"]

        async def scenario(cache: CacheBackend) -> None:
            for tenant in names:
                await cache.put(
                    make_entry("e", tenant=tenant, key="k", vector=unit(1), response={"t": tenant}),
                    max_entries=5,
                )
            for tenant in names:
                found = await cache.get_exact(tenant, "route-a", "k")
                assert found is not None and found.response == {"t": tenant}
                [near] = await cache.nearest(tenant, "route-a", unit(1), 5)
                assert near.entry.tenant == tenant
            assert (await cache.stats()).entries == dict.fromkeys(names, 1)
            assert await cache.clear("ac*me") == 1
            assert await cache.clear("}") == 1
            assert (await cache.stats()).entries == dict.fromkeys(
                [n for n in names if n not in ("ac*me", "}")], 1
            )

        self.run(open_backend, scenario)

    def test_partitions_never_see_each_other(self, open_backend: Callable[[], CacheBackend]) -> None:
        async def scenario(cache: CacheBackend) -> None:
            await cache.put(make_entry("a", partition="p1", key="k", vector=unit(1)), max_entries=10)
            await cache.put(make_entry("b", partition="p2", key="k", vector=unit(1)), max_entries=10)
            for partition, entry_id in (("p1", "a"), ("p2", "b")):
                found = await cache.get_exact("acme", partition, "k")
                assert found is not None and found.id == entry_id
                assert await ids_near(cache, unit(1), partition=partition) == [entry_id]
            assert await ids_near(cache, unit(1), partition="p3") == []

        self.run(open_backend, scenario)

    def test_bad_input_is_refused_by_name_and_stores_nothing(
        self, open_backend: Callable[[], CacheBackend]
    ) -> None:
        async def scenario(cache: CacheBackend) -> None:
            with pytest.raises(ValueError, match="tenant"):
                await cache.put(make_entry("x", tenant=""), max_entries=10)
            with pytest.raises(ValueError, match="max_entries"):
                await cache.put(make_entry("x"), max_entries=0)
            with pytest.raises(ValueError, match="vector"):
                await cache.put(make_entry("x", vector=np.zeros(DIM, dtype=np.float32)), max_entries=10)
            with pytest.raises(ValueError, match="tenant"):
                await cache.get_exact("", "route-a", "k")
            assert (await cache.stats()).entries == {}

        self.run(open_backend, scenario)

    # --- lifetime -------------------------------------------------------------------------------

    def test_an_expired_entry_is_never_returned(self, open_backend: Callable[[], CacheBackend]) -> None:
        """Stored already expired, it is not found (and it still replaced what its key held);
        stored for half a second, it is found, then gone from both tiers once its time passes."""

        async def scenario(cache: CacheBackend) -> None:
            await cache.put(make_entry("held", key="k", vector=unit(1)), max_entries=10)
            await cache.put(make_entry("past", key="k", vector=unit(1), ttl_s=-1), max_entries=10)
            assert await cache.get_exact("acme", "route-a", "k") is None
            assert await ids_near(cache, unit(1)) == []
            await cache.put(make_entry("brief", key="b", vector=unit(1), ttl_s=0.5), max_entries=10)
            assert await ids_near(cache, unit(1)) == ["brief"]

            async def gone() -> bool:
                return await cache.get_exact("acme", "route-a", "b") is None

            assert await wait_for(gone)
            assert await ids_near(cache, unit(1)) == []
            assert (await cache.stats("acme")).entries["acme"] == 0

        self.run(open_backend, scenario)

    def test_max_entries_keeps_the_newest(self, open_backend: Callable[[], CacheBackend]) -> None:
        async def scenario(cache: CacheBackend) -> None:
            for i in range(7):
                await cache.put(make_entry(f"e{i}", vector=at_cosine(0.5 + i / 20)), max_entries=4)
            assert sorted(await ids_near(cache, unit(1))) == ["e3", "e4", "e5", "e6"]
            for i in range(7):
                assert (await cache.get_exact("acme", "route-a", f"key-e{i}") is None) == (i < 3)
            assert (await cache.stats("acme")).entries["acme"] == 4
            await cache.put(make_entry("other", partition="p2", vector=unit(1)), max_entries=4)
            assert len(await ids_near(cache, unit(1))) == 4  # the bound is per partition

        self.run(open_backend, scenario)

    def test_delete_removes_entries_and_says_how_many_existed(
        self, open_backend: Callable[[], CacheBackend]
    ) -> None:
        async def scenario(cache: CacheBackend) -> None:
            for name in ("a", "b", "c"):
                await cache.put(make_entry(name, vector=unit(1)), max_entries=10)
            assert sorted(await ids_near(cache, unit(1))) == ["a", "b", "c"]
            assert await cache.delete("acme", ["a", "b", "nope"]) == 2
            assert await cache.delete("acme", ["a"]) == 0
            assert await ids_near(cache, unit(1)) == ["c"]
            assert await cache.get_exact("acme", "route-a", "key-a") is None

        self.run(open_backend, scenario)

    def test_clear_one_tenant_or_all(self, open_backend: Callable[[], CacheBackend]) -> None:
        """clear(tenant) removes that tenant's entries and counters; clear() everyone's."""

        async def scenario(cache: CacheBackend) -> None:
            for tenant in ("acme", "globex", "initech"):
                for i in range(2):
                    await cache.put(make_entry(f"e{i}", tenant=tenant, vector=unit(1)), max_entries=10)
                await cache.count(tenant, {"miss": 1})
            assert await cache.clear("acme") == 2
            stats = await cache.stats()
            assert stats.entries == {"globex": 2, "initech": 2}
            assert set(stats.counters) == {"globex", "initech"}
            assert await cache.clear() == 4
            stats = await cache.stats()
            assert stats.entries == {} and stats.counters == {}
            assert await ids_near(cache, unit(1), tenant="globex") == []

        self.run(open_backend, scenario)

    # --- shared by workers ----------------------------------------------------------------------

    def test_counters_are_summed_over_workers(self, open_backend: Callable[[], CacheBackend]) -> None:
        async def scenario(one: CacheBackend, two: CacheBackend) -> None:
            await one.count("acme", {"hit_exact": 1, "tokens_saved": 120, "cost_saved_usd": 0.25})
            await two.count("acme", {"hit_exact": 2, "tokens_saved": 30, "cost_saved_usd": 0.5, "miss": 1})
            await two.count("globex", {"miss": 4})
            for reader in (one, two):
                stats = await reader.stats("acme")
                assert stats.counters == {
                    "acme": {"hit_exact": 3.0, "tokens_saved": 150.0, "cost_saved_usd": 0.75, "miss": 1.0}
                }
            assert (await one.stats()).counters["globex"] == {"miss": 4.0}

        self.run(open_backend, scenario, workers=2)

    def test_workers_see_each_others_entries_at_once(self, open_backend: Callable[[], CacheBackend]) -> None:
        """An entry put through one instance is found through another at once, in both tiers, even
        after that one has searched the partition (its local index catches up)."""

        async def scenario(one: CacheBackend, two: CacheBackend) -> None:
            await one.put(make_entry("first", vector=at_cosine(0.8)), max_entries=10)
            assert await ids_near(two, unit(1)) == ["first"]
            await one.put(make_entry("second", key="k2", vector=at_cosine(0.95)), max_entries=10)
            assert await ids_near(two, unit(1)) == ["second", "first"]
            found = await two.get_exact("acme", "route-a", "k2")
            assert found is not None and found.id == "second"

        self.run(open_backend, scenario, workers=2)

    def test_an_entry_removed_through_one_worker_is_never_returned_by_another(
        self, open_backend: Callable[[], CacheBackend]
    ) -> None:
        """Deleted, replaced, evicted or cleared through one instance, after the other has indexed
        it: the other never returns it."""

        async def scenario(one: CacheBackend, two: CacheBackend) -> None:
            for i in range(4):
                await one.put(make_entry(f"e{i}", vector=at_cosine(0.9 + i / 50)), max_entries=4)
            assert await ids_near(two, unit(1)) == ["e3", "e2", "e1", "e0"]
            await one.delete("acme", ["e3"])
            assert await ids_near(two, unit(1), k=1) == ["e2"]
            await one.put(make_entry("e2b", key="key-e2", vector=at_cosine(0.1)), max_entries=4)
            assert await ids_near(two, unit(1), k=2) == ["e1", "e0"]
            await one.put(make_entry("e4", vector=at_cosine(0.2)), max_entries=3)  # evicts e0
            assert await ids_near(two, unit(1)) == ["e1", "e4", "e2b"]
            assert await two.get_exact("acme", "route-a", "key-e0") is None
            await one.clear("acme")
            assert await ids_near(two, unit(1)) == []

        self.run(open_backend, scenario, workers=2)

    # --- what is stored -------------------------------------------------------------------------

    def test_every_field_round_trips_exactly(self, open_backend: Callable[[], CacheBackend]) -> None:
        """Vector bits, response JSON (nested, unicode, numbers), dependencies, tokens and cost."""

        async def scenario(cache: CacheBackend) -> None:
            rng = np.random.default_rng(5)
            vector = rng.standard_normal(384).astype(np.float32)
            vector /= np.linalg.norm(vector)
            response = {
                "text": 'Ünïcode ✓, quotes " and \\ and a newline\n',
                "citations": [{"chunk_id": "doc#1", "score": 0.123456789012345}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 30},
                "finish_reason": "stop",
                "tool_calls": [],
                "abstained": False,
                "extra": None,
            }
            deps = (Dependency("doc#1", "sha256:aa"), Dependency("doc#2 ü", "sha256:bb"))
            entry = make_entry(
                "full:id/1",
                key="key with spaces: and *globs*",
                vector=vector,
                question="Wie geht's? ✓",
                response=response,
                dependencies=deps,
                tokens=150,
                cost_usd=0.00123,
            )
            await cache.put(entry, max_entries=10)
            by_key = await cache.get_exact("acme", "route-a", "key with spaces: and *globs*")
            [near] = await cache.nearest("acme", "route-a", vector, 1)
            for found in (by_key, near.entry):
                assert found is not None
                assert found.vector is not None and found.vector.dtype == np.float32
                assert found.vector.tobytes() == vector.tobytes()
                assert dict(found.response) == response
                assert found.dependencies == deps
                assert (found.id, found.tenant, found.partition, found.exact_key) == (
                    entry.id,
                    entry.tenant,
                    entry.partition,
                    entry.exact_key,
                )
                assert (found.question, found.tokens, found.cost_usd) == (entry.question, 150, 0.00123)
                assert found.created == entry.created and found.expires == entry.expires
            assert near.similarity == pytest.approx(1.0, abs=1e-5)

        self.run(open_backend, scenario)

    def test_stats_count_live_entries_per_tenant(self, open_backend: Callable[[], CacheBackend]) -> None:
        async def scenario(cache: CacheBackend) -> None:
            for i in range(3):
                await cache.put(make_entry(f"a{i}", tenant="acme", partition=f"p{i}"), max_entries=10)
            await cache.put(make_entry("g", tenant="globex"), max_entries=10)
            assert (await cache.stats()).entries == {"acme": 3, "globex": 1}
            assert (await cache.stats("globex")).entries == {"globex": 1}
            assert (await cache.stats("nobody")).entries == {"nobody": 0}
            await cache.ping()

        self.run(open_backend, scenario)
