"""redis_client.py: the Redis client of the rate limiter and the cache, against a real redis-server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from stanchion.redis_client import (
    RedisAddress,
    RedisClient,
    RedisError,
    RedisUnavailable,
    _Incomplete,
    _Protocol,
    encode,
    parse,
)
from stanchion.server.ratelimit import Limits, RateLimitBackendDown, RedisRateLimiter
from stanchion.testing.services import free_port


def test_parse_every_reply_type() -> None:
    data = b"+OK\r\n-ERR bad\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n"
    replies, at = [], 0
    while at < len(data):
        reply, at = parse(data, at)
        replies.append(str(reply) if isinstance(reply, RedisError) else reply)
    assert replies == ["OK", "ERR bad", 42, b"abc", None, [1, [b""]]]


@pytest.mark.parametrize("cut", range(1, 20))
def test_a_reply_cut_anywhere_waits_for_the_rest(cut: int) -> None:
    data = b"*2\r\n$5\r\nhello\r\n:7\r\n"
    with pytest.raises(_Incomplete):
        parse(data[: min(cut, len(data) - 1)])


def test_replies_split_across_reads_complete_their_futures_in_order() -> None:
    async def run() -> list[object]:
        protocol = _Protocol()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        protocol.waiting.extend(futures)
        stream = b":1\r\n$2\r\nhi\r\n-ERR no\r\n"
        for i in range(len(stream)):  # one byte per read
            protocol.data_received(stream[i : i + 1])
        return [f.exception() or f.result() for f in futures]

    first, second, third = asyncio.run(run())
    assert first == 1 and second == b"hi" and isinstance(third, RedisError)


def test_encode_is_a_resp_array_of_bulk_strings() -> None:
    assert encode("SET", "k", 1.5, b"\r\n") == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n$2\r\n\r\n\r\n"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://localhost:6380/2", RedisAddress("localhost", 6380, db=2)),
        ("redis://u:p%40ss@h/0", RedisAddress("h", username="u", password="p@ss")),
        ("redis://h?password=q&db=3", RedisAddress("h", password="q", db=3)),
        ("rediss://h:1", RedisAddress("h", 1, tls=True)),
        ("unix:///run/r.sock?db=1&password=pw", RedisAddress(path="/run/r.sock", password="pw", db=1)),
    ],
)
def test_urls(url: str, address: RedisAddress) -> None:
    assert RedisAddress.from_url(url) == address


def test_not_a_redis_url() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisAddress.from_url("http://h:6379")


def test_concurrent_calls_share_one_connection(redis_url: str) -> None:
    key = f"test:{uuid.uuid4().hex}"

    async def run() -> list[object]:
        client = RedisClient(redis_url)
        try:
            values = await asyncio.gather(*(client.call("INCR", key) for _ in range(500)))
            clients = await client.call("CLIENT", "LIST")
            await client.call("DEL", key)
        finally:
            client.close()
        return [sorted(values), clients]

    values, clients = asyncio.run(run())
    assert values == list(range(1, 501))  # every call got its own reply
    assert isinstance(clients, bytes)


def test_error_replies_leave_the_connection_usable(redis_url: str) -> None:
    async def run() -> object:
        client = RedisClient(redis_url)
        try:
            with pytest.raises(RedisError, match="unknown command"):
                await client.call("NOSUCHCOMMAND")
            return await client.call("PING")
        finally:
            client.close()

    assert asyncio.run(run()) == "PONG"


def test_a_connection_closed_by_the_server_is_reopened(redis_url: str) -> None:
    async def run() -> object:
        client = RedisClient(redis_url)
        try:
            own_id = await client.call("CLIENT", "ID")
            other = RedisClient(redis_url)
            await other.call("CLIENT", "KILL", "ID", own_id)  # type: ignore[arg-type]
            other.close()
            await asyncio.sleep(0.05)
            return await client.call("PING")
        finally:
            client.close()

    assert asyncio.run(run()) == "PONG"


def test_nothing_listening_fails_fast() -> None:
    async def run() -> None:
        client = RedisClient(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1.0)
        await client.call("PING")

    with pytest.raises(RedisUnavailable, match="cannot connect"):
        asyncio.run(run())


def test_a_silent_server_times_out() -> None:
    async def run() -> None:
        accepted: list[asyncio.BaseTransport] = []

        class Silent(asyncio.Protocol):  # accepts, never answers
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.append(transport)

        server = await asyncio.get_running_loop().create_server(Silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = RedisClient(f"redis://127.0.0.1:{port}/0", timeout_s=0.3)
        try:
            await client.call("PING")
        finally:
            client.close()
            for transport in accepted:
                transport.close()
            server.close()
            await server.wait_closed()

    with pytest.raises(RedisUnavailable, match="no reply"):
        asyncio.run(run())


def test_wrong_password_is_backend_down(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://:wrong@", 1)

    async def run() -> None:
        limiter = RedisRateLimiter(url)
        try:
            await limiter.admit("k", Limits(10, 1000))
        finally:
            await limiter.close()

    with pytest.raises(RateLimitBackendDown) as caught:
        asyncio.run(run())
    assert "wrong" not in str(caught.value)


def test_the_limiter_survives_a_script_flush(redis_url: str) -> None:
    """A restarted or flushed Redis has forgotten the script: it is loaded again (NOSCRIPT)."""

    async def run() -> tuple[bool, bool]:
        limiter = RedisRateLimiter(redis_url, key_prefix=f"test:{uuid.uuid4().hex}:")
        admin = RedisClient(redis_url)
        try:
            first = await limiter.admit("k", Limits(10, 1000))
            await admin.call("SCRIPT", "FLUSH")
            second = await limiter.admit("k", Limits(10, 1000))
            return first.allowed, second.allowed
        finally:
            admin.close()
            await limiter.close()

    assert asyncio.run(run()) == (True, True)
