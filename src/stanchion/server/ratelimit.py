"""Per-API-key rate limits (requests and tokens per minute) shared by every worker process.

Algorithm: a sliding-window counter over two fixed one-minute windows (the scheme Cloudflare
describes). Each key keeps the request and token counts of the current window and of the one
before; the usage "in the last minute" is estimated as::

    used = previous * (1 - elapsed_fraction_of_current_window) + current

which assumes the previous window's traffic was spread evenly. On steady traffic it is within a
few percent of an exact sliding log (tests/server/test_ratelimit.py measures 59-60 per any 60 s
at a limit of 60). Its error is a burst: the whole budget spent at the very end of a window still
weighs as if spread out, so up to twice the limit can pass in the 60 s around it (1.5x measured
after a burst at mid-window). In exchange it needs two integers per budget instead of a timestamp
per request, and one atomic read-modify-write per call.

``admit`` counts one request when allowed. It does not reserve the estimated tokens: it refuses
when the tokens already charged in the window plus the estimate exceed the budget, and ``charge``
adds the real count once the answer is known. An estimate above the whole budget is capped to the
budget, so an oversized request can still pass when the window is empty instead of never.

``retry_after_s`` is the exact time after which the same call would be admitted under this
estimate (assuming no other traffic). It is at most 120 s, and exceeds 60 s when a budget was
overdrawn by ``charge`` or filled in the first seconds of a window.

Backends: Redis >= 5 (one Lua script per call, atomic across workers and machines; the clock is
Redis's ``TIME`` unless one is injected) and a SQLite file in WAL mode for the workers of one machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from stanchion.errors import RateLimitBackendDown, RedisError, RedisUnavailable
from stanchion.migrations import Ledger, Migration, SQLiteTarget, Tx, migrate
from stanchion.redis_client import RedisClient, RespValue

__all__ = [
    "WINDOW_S",
    "Decision",
    "Limits",
    "RateLimitBackendDown",
    "RateLimiter",
    "RedisRateLimiter",
    "SQLiteRateLimiter",
    "rate_limiter",
    "redact_url",
]

WINDOW_S = 60.0

Clock = Callable[[], float]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int
    tokens_per_minute: int

    def __post_init__(self) -> None:
        if self.requests_per_minute < 1 or self.tokens_per_minute < 1:
            raise ValueError(f"rate limits must be positive, got {self}")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float  # 0.0 when allowed
    limit: Literal["requests", "tokens"] | None  # the budget that refused, None when allowed
    remaining_requests: int
    remaining_tokens: int


class RateLimiter(Protocol):
    async def admit(self, key_id: str, limits: Limits, *, estimated_tokens: int = 0) -> Decision:
        """Count one request if both budgets allow it (tokens charged in the window + estimate)."""
        ...

    async def charge(self, key_id: str, tokens: int, limits: Limits) -> None:
        """Add the real token count of an answer to the key's token budget."""
        ...

    async def ping(self) -> None:
        """Raise ``RateLimitBackendDown`` when the store cannot be reached (for /readyz)."""
        ...

    async def close(self) -> None: ...


def rate_limiter(redis_url: str | None, sqlite_path: Path) -> RateLimiter:
    """Redis when a URL is configured (several machines), else a SQLite file (one machine)."""
    if redis_url:
        return RedisRateLimiter(redis_url)
    return SQLiteRateLimiter(sqlite_path)


# --- The sliding-window arithmetic, shared by both backends -------------------------------------


@dataclass(frozen=True, slots=True)
class _Windows:
    """One key's counts: ``window`` is the index of the current fixed window (time // WINDOW_S)."""

    window: int
    requests: int = 0
    prev_requests: int = 0
    tokens: int = 0
    prev_tokens: int = 0

    def rolled_to(self, window: int) -> _Windows:
        """The counts as seen from ``window``; a clock behind the stored one stays in its window."""
        if window <= self.window:
            return self
        if window == self.window + 1:
            return _Windows(window, 0, self.requests, 0, self.tokens)
        return _Windows(window)

    def fraction(self, now: float) -> float:
        """How far ``now`` is into the current window, in [0, 1]."""
        return min(max(now / WINDOW_S - self.window, 0.0), 1.0)


def _used(current: int, previous: int, fraction: float) -> float:
    return previous * (1.0 - fraction) + current


def _admissible(w: _Windows, limits: Limits, fraction: float, estimated_tokens: int) -> bool:
    # The Lua script in RedisRateLimiter repeats this test; keep the two identical.
    token_cost = min(estimated_tokens, limits.tokens_per_minute)
    return (
        _used(w.requests, w.prev_requests, fraction) + 1 <= limits.requests_per_minute
        and _used(w.tokens, w.prev_tokens, fraction) + token_cost <= limits.tokens_per_minute
    )


def _wait_s(current: int, previous: int, limit: int, cost: float, fraction: float) -> float:
    """Seconds until ``cost`` more fits under ``limit`` as the windows slide, with no new traffic."""
    room = limit - cost  # what the counted traffic may still weigh once this cost is added
    if current <= room:
        # Within this window, as the previous window's weight decays: previous * (1 - f) <= room - current.
        if previous <= 0:
            return 0.0
        needed = 1.0 - (room - current) / previous
        return max(0.0, needed - fraction) * WINDOW_S
    # Only in the next window, once this window's count itself decays: current * (1 - f) <= room.
    needed = 1.0 - room / current
    return (1.0 - fraction + needed) * WINDOW_S


def _decision(
    before: _Windows, limits: Limits, fraction: float, estimated_tokens: int, allowed: bool
) -> Decision:
    """The decision for an admit, from the counts before it and whether it was allowed."""
    used_requests = _used(before.requests, before.prev_requests, fraction)
    used_tokens = _used(before.tokens, before.prev_tokens, fraction)
    remaining_tokens = max(0, math.floor(limits.tokens_per_minute - used_tokens))
    if allowed:
        remaining_requests = max(0, math.floor(limits.requests_per_minute - used_requests - 1))
        return Decision(True, 0.0, None, remaining_requests, remaining_tokens)
    token_cost = min(estimated_tokens, limits.tokens_per_minute)
    request_wait = _wait_s(before.requests, before.prev_requests, limits.requests_per_minute, 1, fraction)
    token_wait = _wait_s(before.tokens, before.prev_tokens, limits.tokens_per_minute, token_cost, fraction)
    # Both budgets must have room again; name the one that refused now (requests first).
    refused: Literal["requests", "tokens"] = (
        "requests" if used_requests + 1 > limits.requests_per_minute else "tokens"
    )
    retry = max(request_wait, token_wait, 0.001)  # never 0: the caller was refused just now
    remaining_requests = max(0, math.floor(limits.requests_per_minute - used_requests))
    return Decision(False, retry, refused, remaining_requests, remaining_tokens)


# --- Redis --------------------------------------------------------------------------------------

# KEYS[1]: the key's hash {w, rc, rp, tc, tp}. ARGV: now ("" = Redis TIME), window_s, mode
# ("admit" | "charge"), requests/min, tokens/min, tokens (the estimate, or the amount charged).
# Returns {allowed, rc, rp, tc, tp, now, window} after the call; the caller recomputes the rest.
_LUA = """
local W = tonumber(ARGV[2])
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local win = math.floor(now / W)
local s = redis.call('HMGET', KEYS[1], 'w', 'rc', 'rp', 'tc', 'tp')
local w = tonumber(s[1])
local rc, rp = tonumber(s[2]) or 0, tonumber(s[3]) or 0
local tc, tp = tonumber(s[4]) or 0, tonumber(s[5]) or 0
if w == nil or w < win - 1 then
  rc, rp, tc, tp = 0, 0, 0, 0
elseif w == win - 1 then
  rc, rp, tc, tp = 0, rc, 0, tc
elseif w > win then
  win = w
end
local f = math.min(math.max(now / W - win, 0), 1)
local allowed = 1
if ARGV[3] == 'charge' then
  tc = tc + tonumber(ARGV[6])
else
  local rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
  local cost = math.min(tonumber(ARGV[6]), tpm)
  if rp * (1 - f) + rc + 1 <= rpm and tp * (1 - f) + tc + cost <= tpm then
    rc = rc + 1
  else
    allowed = 0
  end
end
redis.call('HSET', KEYS[1], 'w', win, 'rc', rc, 'rp', rp, 'tc', tc, 'tp', tp)
redis.call('EXPIRE', KEYS[1], math.ceil(2 * W) + 1)
return {allowed, rc, rp, tc, tp, string.format('%.17g', now), win}
"""


class RedisRateLimiter:
    """Budgets in Redis hashes ``{key_prefix}{key_id}``, expiring two windows after last use.

    Each check is one ``EVALSHA`` of the script above over ``RedisClient`` (one pipelined
    connection per worker; ``stanchion/redis_client.py`` says why not redis-py's pool). A dead or silent
    Redis fails the request within ``timeout_s`` (503), after one retry on a fresh connection.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "stanchion:rl:",
        now: Clock | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self._redis = RedisClient(url, timeout_s=timeout_s)
        self._sha = hashlib.sha1(_LUA.encode()).hexdigest()
        self._prefix = key_prefix
        self._now = now
        self._url = redact_url(url)

    async def admit(self, key_id: str, limits: Limits, *, estimated_tokens: int = 0) -> Decision:
        allowed, after, now = await self._call(key_id, "admit", limits, max(estimated_tokens, 0))
        before = replace(after, requests=after.requests - allowed)
        return _decision(before, limits, before.fraction(now), estimated_tokens, bool(allowed))

    async def charge(self, key_id: str, tokens: int, limits: Limits) -> None:
        if tokens > 0:
            await self._call(key_id, "charge", limits, tokens)

    async def ping(self) -> None:
        await self._guarded(self._redis.call("PING"))

    async def close(self) -> None:
        self._redis.close()

    async def _call(self, key_id: str, mode: str, limits: Limits, tokens: int) -> tuple[int, _Windows, float]:
        now_arg = "" if self._now is None else repr(self._now())
        limit_args = (limits.requests_per_minute, limits.tokens_per_minute, tokens)
        reply = await self._guarded(
            self._script(1, self._prefix + key_id, now_arg, WINDOW_S, mode, *limit_args)
        )
        try:
            if not isinstance(reply, list) or len(reply) != 7:
                raise ValueError("not seven values")
            allowed, rc, rp, tc, tp, now, window = (_number(value) for value in reply)
        except ValueError as exc:
            raise self._down(RedisError(f"unexpected reply to the rate-limit script: {reply!r}")) from exc
        return int(allowed), _Windows(int(window), int(rc), int(rp), int(tc), int(tp)), now

    async def _script(self, *args: str | int | float) -> RespValue:
        try:
            return await self._redis.call("EVALSHA", self._sha, *args)
        except RedisError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self._redis.call("SCRIPT", "LOAD", _LUA)  # a restarted or flushed Redis forgot it
        return await self._redis.call("EVALSHA", self._sha, *args)

    async def _guarded(self, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except (RedisUnavailable, RedisError) as exc:
            raise self._down(exc) from exc

    def _down(self, exc: Exception) -> RateLimitBackendDown:
        return RateLimitBackendDown(
            "the rate-limit store (Redis) is unreachable", backend="redis", url=self._url, detail=str(exc)
        )


def _number(value: RespValue) -> float:
    if isinstance(value, int | bytes | str):
        return float(value)
    raise ValueError(f"not a number: {value!r}")


def redact_url(url: str) -> str:
    """``url`` without its password (shown as ``***``) or query string (which may hold one)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    if parts.password is not None:
        user = f"{user}:***"
    netloc = f"{user}@{host}" if user else host
    return f"{parts.scheme}://{netloc}{parts.path}"


# --- SQLite -------------------------------------------------------------------------------------

# Run by ``stanchion.migrations``; applied names live in ``_migrations``. Files made before that
# recorded a count in ``PRAGMA user_version`` instead: it is adopted once (``_applied_before``).
_LEDGER = Ledger(
    "_migrations",
    "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
    "INSERT INTO _migrations(name, applied_at) VALUES (?, datetime('now'))",
)
_MIGRATIONS: list[Migration] = [
    Migration(
        "m001_rate_windows",
        {
            "sqlite": """CREATE TABLE rate_windows (
            key_id TEXT PRIMARY KEY,
            win INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            prev_requests INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            prev_tokens INTEGER NOT NULL
        ) WITHOUT ROWID;
        PRAGMA user_version = 1"""  # the old count too, for a worker of an older release
        },
    ),
]

_PRUNE_EVERY = 1024  # commits between deletions of keys idle for two windows
_CHECKPOINT_EVERY = 1000  # commits between WAL checkpoints (SQLite's own default interval)
_CHECKPOINT_RETRY = 50  # commits before trying again when a checkpoint could not take the lock
# Sleeps between tries of a busy write lock, doubling up to the cap. A short cap keeps a waiting
# worker from losing the lock again and again to busier ones (measured: 4 saturating workers on 2
# cores waited up to 0.5 s with a 10 ms cap, 0.1-0.2 s with 2 ms); one task per process polls.
_BACKOFF_FIRST_S = 0.0001
_BACKOFF_MAX_S = 0.002


class SQLiteRateLimiter:
    """Budgets in one SQLite file shared by the workers of a machine.

    Each call is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken before the read, so
    two processes cannot both admit the last request). It runs on the event loop: a transaction
    takes about 15 µs, less than the ~40 µs round trip of handing it to a thread
    (bench/ratelimit_overhead.py measures both). Two things could still stall the loop, so neither
    happens on it: waiting for another process's lock (SQLite's blocking busy handler is off; a busy
    lock is retried after an ``asyncio.sleep`` backoff until ``busy_timeout_s``), and the WAL
    checkpoint, which fsyncs and took 2-10 ms every ~1000 commits (automatic checkpoints are off;
    one runs on a worker thread, on its own connection, every ``_CHECKPOINT_EVERY`` commits;
    admits that meet it wait in the asyncio backoff).
    """

    def __init__(self, path: Path, *, now: Clock = time.time, busy_timeout_s: float = 2.0) -> None:
        self._path = Path(path)
        self._now = now
        self._busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._commits = 0
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._next_checkpoint = _CHECKPOINT_EVERY
        self._busy = asyncio.Lock()  # held while waiting out another process's write lock

    async def admit(self, key_id: str, limits: Limits, *, estimated_tokens: int = 0) -> Decision:
        estimate = max(estimated_tokens, 0)
        return await self._transact(lambda db: self._admit(db, key_id, limits, estimate))

    async def charge(self, key_id: str, tokens: int, limits: Limits) -> None:
        if tokens > 0:
            await self._transact(lambda db: self._charge(db, key_id, tokens))

    async def ping(self) -> None:
        try:
            self._connection().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise RateLimitBackendDown(
                "the rate-limit store (SQLite) is unusable",
                backend="sqlite",
                url=str(self._path),
                detail=str(exc),
            ) from exc

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
            self._checkpoint = None
        for db in (self._db, self._checkpointer):
            if db is not None:
                db.close()
        self._db = self._checkpointer = None

    def _admit(self, db: sqlite3.Connection, key_id: str, limits: Limits, estimate: int) -> Decision:
        now = self._now()
        before = self._read(db, key_id, now)
        fraction = before.fraction(now)
        allowed = _admissible(before, limits, fraction, estimate)
        after = before
        if allowed:
            after = replace(before, requests=before.requests + 1)
        self._write(db, key_id, after)
        return _decision(before, limits, fraction, estimate, allowed)

    def _charge(self, db: sqlite3.Connection, key_id: str, tokens: int) -> None:
        w = self._read(db, key_id, self._now())
        self._write(db, key_id, replace(w, tokens=w.tokens + tokens))

    @staticmethod
    def _read(db: sqlite3.Connection, key_id: str, now: float) -> _Windows:
        row = db.execute(
            "SELECT win, requests, prev_requests, tokens, prev_tokens FROM rate_windows WHERE key_id = ?",
            (key_id,),
        ).fetchone()
        window = math.floor(now / WINDOW_S)
        return (_Windows(*row) if row else _Windows(window)).rolled_to(window)

    @staticmethod
    def _write(db: sqlite3.Connection, key_id: str, w: _Windows) -> None:
        db.execute(
            "INSERT OR REPLACE INTO rate_windows VALUES (?, ?, ?, ?, ?, ?)",
            (key_id, w.window, w.requests, w.prev_requests, w.tokens, w.prev_tokens),
        )

    async def _transact(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        # Uncontended, this runs to the end without yielding. When the file is locked by another
        # process, the other tasks of this one queue on self._busy (in order) instead of polling.
        async with self._busy:
            return await self._transact_locked(body)

    async def _transact_locked(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        deadline = time.monotonic() + self._busy_timeout_s
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                result = self._run_immediate(body)
            except sqlite3.OperationalError as exc:
                # Extended codes (SQLITE_BUSY_RECOVERY, _SNAPSHOT, ...) are busy too: the low byte.
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise RateLimitBackendDown(
                        "the rate-limit store (SQLite) failed",
                        backend="sqlite",
                        url=str(self._path),
                        detail=str(exc),
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            self._after_commit()
            return result

    def _run_immediate(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = body(db)
            if (self._commits + 1) % _PRUNE_EVERY == 0:
                window = math.floor(self._now() / WINDOW_S)
                db.execute("DELETE FROM rate_windows WHERE win < ?", (window - 1,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (I/O error, full disk)
                db.execute("ROLLBACK")
            raise
        return result

    def _after_commit(self) -> None:
        self._commits += 1
        idle = self._checkpoint is None or self._checkpoint.done()
        if self._commits >= self._next_checkpoint and idle:
            self._checkpoint = asyncio.create_task(self._run_checkpoint())

    async def _run_checkpoint(self) -> None:
        complete = await asyncio.to_thread(self._checkpoint_wal)
        self._next_checkpoint = self._commits + (_CHECKPOINT_EVERY if complete else _CHECKPOINT_RETRY)

    def _checkpoint_wal(self) -> bool:
        """Copy the WAL back into the database and restart it (on a worker thread); True if done."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(
                self._path, timeout=0, isolation_level=None, check_same_thread=False
            )
        # RESTART, not PASSIVE: a passive checkpoint racing steady writes never catches up with the
        # last frames, so the WAL would never restart and would grow without bound. RESTART holds
        # the write lock while it copies (writers wait in _transact's asyncio backoff); timeout=0
        # because a busy handler waiting for the lock would hold back every writer meanwhile, in
        # sleeps of up to 100 ms. A failed or partial one is retried soon; a broken file fails the
        # next transaction loudly.
        try:
            row = self._checkpointer.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error:
            return False
        busy: int = row[0]  # the row is (busy, frames in the WAL, frames copied)
        return busy == 0

    def _connection(self) -> sqlite3.Connection:
        # Opened on first use so that constructing a limiter stays free (and fork-safe).
        if self._db is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # timeout=0: a busy lock raises at once and _transact backs off without blocking the loop.
            db = sqlite3.connect(self._path, timeout=0, isolation_level=None)
            try:
                _prepare(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db


def _prepare(db: sqlite3.Connection) -> None:
    # WAL lets readers and the writer overlap; losing the last commits on power loss is harmless for
    # rate-limit counts, so commits need not fsync (synchronous=NORMAL). Checkpoints are ours.
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    migrate(SQLiteTarget(db), _MIGRATIONS, _LEDGER, adopt=_applied_before)


def _applied_before(tx: Tx) -> int:
    """How many migrations a file made before the ledger applied: it counted them in user_version."""
    return int(tx.query("PRAGMA user_version")[0][0])
