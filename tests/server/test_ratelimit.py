"""Rate limits: both backends pass one suite; a fake clock stands in for the minute."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from stanchion.errors import StanchionError
from stanchion.server.ratelimit import (
    WINDOW_S,
    Limits,
    RateLimitBackendDown,
    RateLimiter,
    RedisRateLimiter,
    SQLiteRateLimiter,
    rate_limiter,
    redact_url,
)

T = TypeVar("T")

# Mid-window, so that a full budget frees up within one minute as an exact sliding log would.
START = 1_000 * WINDOW_S + WINDOW_S / 2


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """Makes limiters (= workers) that share one store and one fake clock."""

    name: str
    clock: FakeClock
    make: Callable[[], RateLimiter]
    spec: str  # how a subprocess builds the same limiter: "redis <url> <prefix>" or "sqlite <path>"


@pytest.fixture(params=["redis", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    clock = FakeClock()
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"test:{uuid.uuid4().hex}:"
        return Backend(
            "redis",
            clock,
            lambda: RedisRateLimiter(url, key_prefix=prefix, now=clock),
            f"redis {url} {prefix}",
        )
    path = tmp_path / "ratelimit.sqlite"
    return Backend("sqlite", clock, lambda: SQLiteRateLimiter(path, now=clock), f"sqlite {path}")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def admit_n(limiter: RateLimiter, key: str, limits: Limits, n: int, tokens: int = 0) -> list[bool]:
    return [(await limiter.admit(key, limits, estimated_tokens=tokens)).allowed for _ in range(n)]


class TestBudgets:
    def test_requests_allowed_then_refused(self, backend: Backend) -> None:
        """N requests pass, the next is refused on 'requests' with a retry-after within a minute."""

        async def main() -> None:
            limiter = backend.make()
            limits = Limits(requests_per_minute=5, tokens_per_minute=1_000)
            assert await admit_n(limiter, "k", limits, 5) == [True] * 5
            refused = await limiter.admit("k", limits)
            assert not refused.allowed
            assert refused.limit == "requests"
            assert 0 < refused.retry_after_s <= 60
            assert refused.remaining_requests == 0
            await limiter.close()

        run(main())

    def test_remaining_counts_down(self, backend: Backend) -> None:
        """remaining_requests counts this request; remaining_tokens the charged tokens."""

        async def main() -> None:
            limiter = backend.make()
            limits = Limits(requests_per_minute=3, tokens_per_minute=100)
            first = await limiter.admit("k", limits)
            assert (first.allowed, first.limit, first.retry_after_s) == (True, None, 0.0)
            assert (first.remaining_requests, first.remaining_tokens) == (2, 100)
            await limiter.charge("k", 30, limits)
            second = await limiter.admit("k", limits)
            assert (second.remaining_requests, second.remaining_tokens) == (1, 70)
            await limiter.close()

        run(main())

    def test_retry_after_is_when_budget_frees(self, backend: Backend) -> None:
        """Just before retry_after the call is still refused; at retry_after it passes."""

        async def main() -> None:
            limiter = backend.make()
            limits = Limits(requests_per_minute=5, tokens_per_minute=1_000)
            await admit_n(limiter, "k", limits, 5)
            wait = (await limiter.admit("k", limits)).retry_after_s
            backend.clock.now += wait - 1
            assert not (await limiter.admit("k", limits)).allowed
            backend.clock.now += 1 + 1e-6
            assert (await limiter.admit("k", limits)).allowed
            await limiter.close()

        run(main())

    def test_token_budget_refuses(self, backend: Backend) -> None:
        """Charged tokens plus the estimate may not exceed the token budget."""

        async def main() -> None:
            limiter = backend.make()
            limits = Limits(requests_per_minute=100, tokens_per_minute=1_000)
            assert (await limiter.admit("k", limits, estimated_tokens=600)).allowed
            await limiter.charge("k", 700, limits)
            assert (await limiter.admit("k", limits, estimated_tokens=300)).allowed
            refused = await limiter.admit("k", limits, estimated_tokens=301)
            assert (refused.allowed, refused.limit) == (False, "tokens")
            assert 0 < refused.retry_after_s <= 60
            assert refused.remaining_tokens == 300
            await limiter.close()

        run(main())

    def test_estimate_above_budget_passes_on_empty_window(self, backend: Backend) -> None:
        """An estimate larger than the whole budget is capped, so it is not refused forever."""

        async def main() -> None:
            limiter = backend.make()
            limits = Limits(requests_per_minute=10, tokens_per_minute=100)
            assert (await limiter.admit("k", limits, estimated_tokens=5_000)).allowed
            await limiter.charge("k", 5_000, limits)
            refused = await limiter.admit("k", limits, estimated_tokens=1)
            assert (refused.allowed, refused.limit) == (False, "tokens")
            # Overdrawn 50x: only once the overdrawn window has slid out entirely.
            assert WINDOW_S < refused.retry_after_s <= 2 * WINDOW_S
            await limiter.close()

        run(main())

    def test_keys_are_independent(self, backend: Backend) -> None:
        """One key's exhausted budget does not touch another's."""

        async def main() -> None:
            limiter = backend.make()
            limits = Limits(requests_per_minute=2, tokens_per_minute=1_000)
            assert await admit_n(limiter, "a", limits, 3) == [True, True, False]
            assert await admit_n(limiter, "b", limits, 2) == [True, True]
            await limiter.close()

        run(main())


class TestWorkers:
    def test_two_limiters_share_one_budget(self, backend: Backend) -> None:
        """Two limiter instances (two workers) draw on the same budget."""

        async def main() -> None:
            first, second = backend.make(), backend.make()
            limits = Limits(requests_per_minute=4, tokens_per_minute=1_000)
            assert await admit_n(first, "k", limits, 2) == [True, True]
            assert await admit_n(second, "k", limits, 3) == [True, True, False]
            assert not (await first.admit("k", limits)).allowed
            await first.close()
            await second.close()

        run(main())

    def test_concurrent_admits_never_exceed_budget(self, backend: Backend) -> None:
        """200 concurrent admits on a limit of 50 let exactly 50 through."""

        async def main() -> int:
            limiter = backend.make()
            limits = Limits(requests_per_minute=50, tokens_per_minute=10**6)
            decisions = await asyncio.gather(*(limiter.admit("k", limits) for _ in range(200)))
            await limiter.close()
            return sum(d.allowed for d in decisions)

        assert run(main()) == 50

    def test_processes_never_exceed_budget(self, backend: Backend) -> None:
        """Four processes admitting at once share the budget exactly (Lua / BEGIN IMMEDIATE)."""
        script = textwrap.dedent(
            """
            import asyncio, sys
            from pathlib import Path
            from stanchion.server.ratelimit import Limits, RedisRateLimiter, SQLiteRateLimiter

            kind, *where = sys.argv[1].split()
            now = float(sys.argv[2])
            if kind == "redis":
                limiter = RedisRateLimiter(where[0], key_prefix=where[1], now=lambda: now)
            else:
                limiter = SQLiteRateLimiter(Path(where[0]), now=lambda: now)

            async def main():
                limits = Limits(requests_per_minute=150, tokens_per_minute=10**6)
                allowed = 0
                for _ in range(100):
                    allowed += (await limiter.admit("k", limits)).allowed
                await limiter.close()
                print(allowed)

            asyncio.run(main())
            """
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, backend.spec, repr(START)], stdout=subprocess.PIPE, text=True
            )
            for _ in range(4)
        ]
        counts = [int(proc.communicate(timeout=60)[0]) for proc in procs]
        assert all(proc.returncode == 0 for proc in procs)
        assert sum(counts) == 150


class TestSlidingWindow:
    def test_window_slides(self, backend: Backend) -> None:
        """Budget frees up gradually as the old window's weight decays, not all at a boundary."""

        async def main() -> None:
            limiter = backend.make()
            limits = Limits(requests_per_minute=10, tokens_per_minute=1_000)
            assert await admit_n(limiter, "k", limits, 11) == [True] * 10 + [False]
            # Half a minute later the next fixed window starts: a fixed window would allow 10 again.
            backend.clock.now += WINDOW_S / 2
            assert not (await limiter.admit("k", limits)).allowed
            # One minute after the burst half the old window still weighs: 5 of 10 are free.
            backend.clock.now += WINDOW_S / 2
            assert await admit_n(limiter, "k", limits, 6) == [True] * 5 + [False]
            # Two windows later everything has slid out.
            backend.clock.now += 2 * WINDOW_S
            assert await admit_n(limiter, "k", limits, 11) == [True] * 10 + [False]
            await limiter.close()

        run(main())

    def test_steady_overload_admits_the_limit(self, backend: Backend) -> None:
        """Offered three times the limit evenly, any 60 s after the first burst holds the limit within 5%."""

        async def main() -> list[float]:
            limiter = backend.make()
            limits = Limits(requests_per_minute=60, tokens_per_minute=10**6)
            admitted: list[float] = []
            for _ in range(10 * 180):
                if (await limiter.admit("k", limits)).allowed:
                    admitted.append(backend.clock.now)
                backend.clock.now += 1 / 3
            await limiter.close()
            return admitted

        admitted = run(main())
        end = START + 10 * WINDOW_S
        # The first minute's burst (the whole budget at once) weighs on the next window: the known
        # worst case of the estimate. From the third window on, traffic is steady.
        starts = [t for t in admitted if START + 2.5 * WINDOW_S <= t <= end - WINDOW_S]
        counts = [sum(1 for t in admitted if start <= t < start + WINDOW_S) for start in starts]
        assert 57 <= min(counts) <= max(counts) <= 63


class TestBackends:
    def test_redis_unreachable_raises_backend_down(self) -> None:
        """A dead Redis raises RateLimitBackendDown: its ``url`` names the server but never its password."""
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"redis://user:s3cret@127.0.0.1:{port}/0?password=s3cret"

        async def main() -> None:
            limiter = RedisRateLimiter(url)
            with pytest.raises(RateLimitBackendDown) as caught:
                await limiter.admit("k", Limits(10, 100))
            await limiter.close()
            assert isinstance(caught.value, StanchionError)
            assert f"127.0.0.1:{port}" not in str(caught.value)  # the message goes to clients
            assert "s3cret" not in str(caught.value) + caught.value.detail
            assert caught.value.url == f"redis://user:***@127.0.0.1:{port}/0"

        run(main())

    def test_redis_clock_by_default(self, redis_url: str) -> None:
        """Without an injected clock, Redis's own TIME places the window (one clock for all hosts)."""

        async def main() -> None:
            limiter = RedisRateLimiter(redis_url, key_prefix=f"test:{uuid.uuid4().hex}:")
            limits = Limits(requests_per_minute=2, tokens_per_minute=100)
            assert await admit_n(limiter, "k", limits, 2) == [True, True]
            refused = await limiter.admit("k", limits)
            assert (refused.allowed, refused.limit) == (False, "requests")
            assert 0 < refused.retry_after_s <= 2 * WINDOW_S
            await limiter.close()

        run(main())

    def test_redact_url(self) -> None:
        """Passwords and query strings are removed; the rest is kept."""
        assert redact_url("redis://:pw@host:6380/1") == "redis://:***@host:6380/1"
        assert redact_url("rediss://host/0") == "rediss://host/0"
        assert redact_url("unix:///run/redis.sock?db=0&password=pw") == "unix:///run/redis.sock"

    def test_sqlite_wal_is_checkpointed(self, tmp_path: Path) -> None:
        """Automatic checkpoints are off, so the limiter's own (on a thread) keep the WAL bounded."""
        path = tmp_path / "rl.sqlite"

        async def main() -> None:
            limiter = SQLiteRateLimiter(path)
            for i in range(3_000):
                await limiter.admit(f"k{i % 100}", Limits(10**6, 10**6))
                if i % 500 == 0:
                    await asyncio.sleep(0.01)  # the server's loop yields all the time; this one must
            pages = Path(f"{path}-wal").stat().st_size // 4096
            assert pages < 1_500  # one page per commit without checkpoints: ~3,000
            await limiter.close()

        run(main())

    def test_factory_picks_backend(self, tmp_path: Path) -> None:
        """A Redis URL selects Redis; none selects the SQLite file."""

        async def main() -> None:
            redis = rate_limiter("redis://127.0.0.1:1/0", tmp_path / "rl.sqlite")
            sqlite = rate_limiter(None, tmp_path / "rl.sqlite")
            assert isinstance(redis, RedisRateLimiter)
            assert isinstance(sqlite, SQLiteRateLimiter)
            await redis.close()
            await sqlite.close()

        run(main())

    def test_limits_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            Limits(requests_per_minute=0, tokens_per_minute=10)
