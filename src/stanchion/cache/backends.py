"""Which backend holds a spec's response cache: Redis when the server has one (``cache_redis_url``,
else ``redis_url``: entries shared by every worker and host), else a SQLite file beside the
server's state (one machine)."""

from __future__ import annotations

from pathlib import Path

from stanchion.cache.entry import CacheBackend
from stanchion.spec import Spec


def cache_path(spec: Spec) -> Path:
    """The embedded cache's file: ``<state_path>`` with the suffix ``.cache.db``."""
    return spec.resolve(spec.server.state_path).with_suffix(".cache.db")


def open_cache_backend(spec: Spec) -> CacheBackend:
    url = spec.server.cache_redis_url or spec.server.redis_url
    if url:
        from stanchion.cache.redis_backend import RedisCacheBackend

        redis: CacheBackend = RedisCacheBackend(url)
        return redis
    from stanchion.cache.sqlite_backend import SQLiteCacheBackend

    embedded: CacheBackend = SQLiteCacheBackend(cache_path(spec))
    return embedded
