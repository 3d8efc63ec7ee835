"""The response cache's backends, SQLite and Redis, each through the conformance suite, plus what
only one of them has (several processes on one SQLite file; a Redis worker that fell behind)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stanchion.cache.entry import CacheBackend
from stanchion.cache.redis_backend import RedisCacheBackend
from stanchion.cache.sqlite_backend import SQLiteCacheBackend
from stanchion.errors import RedisUnavailable, StoreError
from stanchion.testing.cache_suite import CacheBackendConformance, ids_near, make_entry, unit, wait_for
from stanchion.testing.services import free_port


class TestSQLiteCacheBackend(CacheBackendConformance):
    @pytest.fixture
    def open_backend(self, tmp_path: Path) -> Callable[[], CacheBackend]:
        return lambda: SQLiteCacheBackend(tmp_path / "cache" / "cache.db")


class TestRedisCacheBackend(CacheBackendConformance):
    @pytest.fixture
    def open_backend(self, redis_url: str) -> Callable[[], CacheBackend]:
        prefix = f"test:{uuid.uuid4().hex[:8]}:"
        return lambda: RedisCacheBackend(redis_url, prefix=prefix)


@pytest.fixture(params=["sqlite", "redis"])
def two_workers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], SQLiteCacheBackend | RedisCacheBackend]:
    if request.param == "sqlite":
        return lambda: SQLiteCacheBackend(tmp_path / "cache.db")
    url = request.getfixturevalue("redis_url")
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    return lambda: RedisCacheBackend(url, prefix=prefix)


class TestLocalIndexesStayBounded:
    """A worker's in-process index drops what was evicted or expired through other workers, not
    only what turns up as a candidate: a long-running worker's memory follows the live entries."""

    def test_entries_evicted_by_another_worker_leave_the_index(
        self, two_workers: Callable[[], SQLiteCacheBackend | RedisCacheBackend]
    ) -> None:
        """Worker two indexes the partition; worker one then adds so many entries that everything
        two saw is evicted (for Redis: trimmed before two read the records, so two reloads)."""

        async def scenario() -> None:
            one, two = two_workers(), two_workers()
            try:
                for i in range(5):
                    await one.put(make_entry(f"old{i}", vector=unit(1, i)), max_entries=5)
                assert len(await ids_near(two, unit(1))) == 5
                for i in range(8):
                    await one.put(make_entry(f"new{i}", vector=unit(1, i)), max_entries=5)
                assert sorted(await ids_near(two, unit(1), k=1)) == ["new3"]
                assert len(two.indexes.get("acme", "route-a")) == 5
                await one.put(make_entry("newest", vector=unit(1)), max_entries=5)
                assert await ids_near(two, unit(0, 1), k=1) == ["new7"]
                assert len(two.indexes.get("acme", "route-a")) == 5
            finally:
                one.close()
                two.close()

        asyncio.run(scenario())

    def test_expired_entries_leave_the_index(
        self, two_workers: Callable[[], SQLiteCacheBackend | RedisCacheBackend]
    ) -> None:
        async def scenario() -> None:
            one, two = two_workers(), two_workers()
            try:
                for i in range(4):
                    await one.put(make_entry(f"brief{i}", vector=unit(1, i), ttl_s=0.3), max_entries=10)
                await one.put(make_entry("lasting", vector=unit(0, 1)), max_entries=10)
                assert len(await ids_near(two, unit(0, 1))) == 5

                async def forgotten() -> bool:
                    await two.nearest("acme", "route-a", unit(0, 1), 1)  # far from the brief ones
                    return len(two.indexes.get("acme", "route-a")) == 1

                assert await wait_for(forgotten)
            finally:
                one.close()
                two.close()

        asyncio.run(scenario())


class TestRedisOnly:
    def test_keys_of_one_prefix_are_never_touched_by_another(self, redis_url: str) -> None:
        """clear() empties its own prefix only."""
        a = f"test:{uuid.uuid4().hex[:8]}:"

        async def scenario() -> None:
            one, two = RedisCacheBackend(redis_url, prefix=a), RedisCacheBackend(redis_url, prefix=a + "x:")
            try:
                await one.put(make_entry("e", vector=unit(1)), max_entries=5)
                await two.put(make_entry("e", vector=unit(1)), max_entries=5)
                assert await two.clear() == 1
                assert await ids_near(one, unit(1)) == ["e"]
            finally:
                one.close()
                two.close()

        asyncio.run(scenario())

    def test_redis_down_raises_redis_unavailable(self) -> None:
        async def scenario() -> None:
            cache = RedisCacheBackend(f"redis://127.0.0.1:{free_port()}", timeout_s=0.5)
            try:
                with pytest.raises(RedisUnavailable):
                    await cache.ping()
                with pytest.raises(RedisUnavailable):
                    await cache.nearest("acme", "route-a", unit(1), 3)
            finally:
                cache.close()

        asyncio.run(scenario())


class TestSQLiteOnly:
    def test_two_processes_share_one_file(self, tmp_path: Path) -> None:
        """A put in another process is found here at once, after this worker indexed the partition."""
        import subprocess
        import sys

        path = tmp_path / "cache.db"
        code = (
            "import asyncio, sys\n"
            "from stanchion.cache.sqlite_backend import SQLiteCacheBackend\n"
            "from stanchion.testing.cache_suite import make_entry, unit\n"
            "async def main():\n"
            "    cache = SQLiteCacheBackend(sys.argv[1])\n"
            "    await cache.put(make_entry('theirs', vector=unit(1, 1)), max_entries=10)\n"
            "    await cache.delete('acme', ['mine'])\n"
            "    cache.close()\n"
            "asyncio.run(main())\n"
        )

        async def scenario() -> None:
            cache = SQLiteCacheBackend(path)
            try:
                await cache.put(make_entry("mine", vector=unit(1)), max_entries=10)
                assert await ids_near(cache, unit(1)) == ["mine"]
                subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
                assert await ids_near(cache, unit(1)) == ["theirs"]
            finally:
                cache.close()

        asyncio.run(scenario())

    def test_an_unusable_file_is_a_store_error(self, tmp_path: Path) -> None:
        (tmp_path / "cache.db").write_bytes(b"not a database" * 100)

        async def scenario() -> None:
            cache = SQLiteCacheBackend(tmp_path / "cache.db")
            try:
                with pytest.raises(StoreError):
                    await cache.ping()
            finally:
                cache.close()

        asyncio.run(scenario())

    def test_vectors_read_back_are_float32(self, tmp_path: Path) -> None:
        """A float64 vector is stored as float32."""

        async def scenario() -> None:
            cache = SQLiteCacheBackend(tmp_path / "c.db")
            try:
                await cache.put(make_entry("e", vector=np.array([1.0, 0.0]), key="k"), max_entries=3)
                found = await cache.get_exact("acme", "route-a", "k")
                assert found is not None and found.vector is not None and found.vector.dtype == np.float32
            finally:
                cache.close()

        asyncio.run(scenario())
