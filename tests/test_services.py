"""The backing services the test fixtures start are real: PostgreSQL with pgvector, redis-server."""

from __future__ import annotations

import psycopg
import redis


def test_postgres_has_pgvector(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    assert row is not None and row[0].startswith("0.")


def test_redis_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.set("stanchion:test:services", "1")
        assert client.get("stanchion:test:services") == b"1"
    finally:
        client.close()
