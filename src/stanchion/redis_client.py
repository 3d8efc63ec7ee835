"""A lean Redis client (the rate limiter, the response cache): one pipelined connection per worker, RESP2.

The limiter makes one Redis call at the start of every request, so the call's latency is
request latency. Through redis-py's asyncio pool (8.x: a pool condition, a health read and
timing hooks around each command, several suspensions per call) it took 10-20 ms at the median
and up to 400 ms at p99 on a worker serving 500 streams, while Redis itself sat at 3% of a core.
Here a command is one write, and its reply completes a future in the protocol callback: one
wake-up of the waiting task per call. Replies arrive in the order of the commands, so many
concurrent calls share one connection.

It speaks what the limiter needs: ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs with
user, password and database; commands with string and number arguments; the five reply types.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

# Both belong to the package's one exception tree (errors.py): StoreError -> 503, never a 500.
from stanchion.errors import RedisError, RedisUnavailable

__all__ = ["RedisAddress", "RedisClient", "RedisError", "RedisUnavailable", "RespValue", "encode", "parse"]

RespValue = bytes | int | str | list["RespValue"] | None


@dataclass(frozen=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): {parts.scheme}://...")
        password = query.get("password") or (unquote(parts.password) if parts.password else None)
        username = query.get("username") or (unquote(parts.username) if parts.username else None)
        if parts.scheme == "unix":
            return cls(path=parts.path, username=username, password=password, db=int(query.get("db", 0)))
        db = query.get("db") or parts.path.strip("/") or "0"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            tls=parts.scheme == "rediss",
            username=username,
            password=password,
            db=int(db),
        )


def encode(*args: str | bytes | int | float) -> bytes:
    """A command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Incomplete(Exception):
    pass


def parse(buffer: bytes | bytearray, start: int = 0) -> tuple[RespValue | RedisError, int]:
    """One reply from ``buffer[start:]`` and where the next begins; ``_Incomplete`` if cut short."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise _Incomplete
    kind, line, after = buffer[start : start + 1], bytes(buffer[start + 1 : end]), end + 2
    if kind == b"+":
        return line.decode(), after
    if kind == b"-":
        return RedisError(line.decode(errors="replace")), after
    if kind == b":":
        return int(line), after
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            raise _Incomplete
        return bytes(buffer[after : after + size]), after + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items: list[RespValue] = []
        for _ in range(count):
            item, after = parse(buffer, after)
            if isinstance(item, RedisError):
                raise RedisUnavailable(f"unexpected error inside an array reply: {item}")
            items.append(item)
        return items, after
    raise RedisUnavailable(f"not a RESP reply: {bytes(buffer[start : start + 40])!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[RespValue]] = deque()
        self.buffer = bytearray()
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        start = 0
        try:
            while start < len(self.buffer):
                reply, start = parse(self.buffer, start)
                future = self.waiting.popleft()
                if future.done():
                    continue  # its caller gave up (time limit); the reply still had to be read
                if isinstance(reply, RedisError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except _Incomplete:
            pass
        except (RedisUnavailable, ValueError, IndexError) as exc:
            self._fail(RedisUnavailable(f"broken reply from Redis: {exc}"))
            if self.transport is not None:
                self.transport.close()
            return
        del self.buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisUnavailable(f"connection to Redis lost ({exc or 'closed by the server'})"))

    def _fail(self, error: Exception) -> None:
        self.lost = error
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class RedisClient:
    """Commands over one connection, opened on first use and reopened after a failure."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self.address = RedisAddress.from_url(url)
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: str | bytes | int | float) -> RespValue:
        """One command's reply; ``RedisError`` for an error reply, ``RedisUnavailable`` when the
        connection fails or no reply comes within the time limit (one retry on a fresh
        connection covers a connection the server closed while idle)."""
        command = encode(*args)
        protocol = await self._connect()
        try:
            return await self._send(protocol, command)
        except RedisUnavailable:
            if protocol.lost is None:
                raise  # a timeout on a live connection is not retried: Redis is slow, not gone
        return await self._send(await self._connect(), command)

    async def _send(self, protocol: _Protocol, command: bytes) -> RespValue:
        assert protocol.transport is not None
        future: asyncio.Future[RespValue] = asyncio.get_running_loop().create_future()
        protocol.waiting.append(future)
        protocol.transport.write(command)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await future
        except TimeoutError:
            raise RedisUnavailable(f"no reply from Redis within {self.timeout_s:g} s") from None

    async def _connect(self) -> _Protocol:
        """The open connection, or a new one when there is none or it was lost."""
        if self._protocol is not None and self._protocol.lost is None:
            return self._protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one connection attempt at a time; the others reuse it
            if self._protocol is not None and self._protocol.lost is None:
                return self._protocol
            self.close()
            protocol = await self._open()
            self._protocol = protocol
            return protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        address = self.address
        try:
            async with asyncio.timeout(self.timeout_s):
                if address.path is not None:
                    _, protocol = await loop.create_unix_connection(_Protocol, address.path)
                else:
                    context = ssl.create_default_context() if address.tls else None
                    _, protocol = await loop.create_connection(
                        _Protocol, address.host, address.port, ssl=context
                    )
                try:
                    if address.password is not None:
                        auth = (
                            (address.username, address.password) if address.username else (address.password,)
                        )
                        await self._send(protocol, encode("AUTH", *auth))
                    if address.db:
                        await self._send(protocol, encode("SELECT", address.db))
                except BaseException:
                    if protocol.transport is not None:
                        protocol.transport.close()
                    raise
        except (OSError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise RedisUnavailable(f"cannot connect to Redis ({reason})") from exc
        return protocol

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(Exception):
                protocol.transport.close()
