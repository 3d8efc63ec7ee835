"""``FallbackModel``: a chain of ChatModels tried in order, itself a ChatModel.

Each ``Attempt`` gets a time limit per call and a number of retries on the same model. What
happens on an error:

==============================================  ================================================
error                                           action
==============================================  ================================================
RateLimited, ModelTimeout, ModelUnavailable,    retry the same model after a backoff (exponential,
ModelHTTPError with status >= 500 (or 408/409,  full jitter; RateLimited.retry_after when given,
which the adapters report as transient)         unless it exceeds ``max_retry_after_s``: then the
                                                next model), then the next model
ContextTooLong, AllModelsFailed (a nested       the next model at once (another window may fit)
chain)
BadRequest, ContentFiltered, any other          re-raised at once: another model would not help
ModelError
any other exception (a bug)                     propagates unchanged
==============================================  ================================================

A circuit breaker per model name (``BreakerRegistry``; share one between chains so a model has
one health state) opens after ``failure_threshold`` consecutive retryable failures. While open
the model is skipped at once and ``ModelUnavailable`` is recorded as its attempt; after
``cooldown_s`` one probe call is let through (half-open): success closes it, failure re-opens it.
When every attempt fails, ``AllModelsFailed.attempts`` lists each try as (model, error) in order.

Streams: the time limit applies to each event (the first token and every gap), not to the whole
answer. A failure before this try's first token is handled like ``complete``. A failure after it
continues on the next model: it gets the original messages, an assistant message holding the
text already sent and a user instruction to continue without repeating; any text it repeats at
the joint is removed (``_Joiner``), so the client reads one answer. The final event's ``model``
is the model that finished the answer; its usage sums every try (estimated by chars/4 for a try
cut off before it reported usage), each credited to the model that made it (``Usage.by_model``),
so every token is priced by the model that produced it. ``complete`` credits its usage the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from stanchion.errors import (
    AllModelsFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    ModelError,
    ModelHTTPError,
    ModelTimeout,
    ModelUnavailable,
    RateLimited,
)
from stanchion.models.base import (
    Capabilities,
    ChatModel,
    ChatOptions,
    Piece,
    aclose_quietly,
    events_from_pieces,
)
from stanchion.models.pricing import estimate_message_tokens, estimate_tokens
from stanchion.types import Completion, Message, StreamEvent, ToolCall, Usage

__all__ = ["Attempt", "BreakerRegistry", "CircuitBreaker", "FallbackModel"]

T = TypeVar("T")
Verdict = Literal["retry", "next", "raise"]
CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without repeating "
    "anything already written and without any preamble."
)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One link of a chain: ``model``, its time limit per call, and retries before moving on."""

    model: ChatModel
    timeout_s: float = 30.0
    max_retries: int = 2

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.max_retries < 0:
            raise ValueError(f"{self.model.name}: timeout_s must be > 0 and max_retries >= 0")


class CircuitBreaker:
    """closed -> open after ``failure_threshold`` consecutive failures -> half-open after ``cooldown_s``.

    ``allow()`` asks for a call; every allowed call must end in ``record_success``,
    ``record_failure`` or ``release`` (an outcome that says nothing about the model's health).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """True when a call may go ahead; in half-open state only one probe at a time."""
        state = self.state
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return state == "closed"

    def record_success(self) -> None:
        self._failures, self._opened_at, self._probing = 0, None, False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            self._opened_at, self._probing = self._clock(), False

    def release(self) -> None:
        self._probing = False


class BreakerRegistry:
    """One ``CircuitBreaker`` per model name, created on first use with the same settings."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str) -> CircuitBreaker:
        if name not in self._breakers:
            self._breakers[name] = CircuitBreaker(
                failure_threshold=self.failure_threshold, cooldown_s=self.cooldown_s, clock=self._clock
            )
        return self._breakers[name]


class FallbackModel:
    """Try ``attempts`` in order with retries, timeouts and circuit breakers (module docstring)."""

    def __init__(
        self,
        attempts: Sequence[Attempt],
        *,
        breakers: BreakerRegistry | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_retry_after_s: float = 30.0,
    ) -> None:
        if not attempts:
            raise ValueError("a fallback chain needs at least one attempt")
        self.attempts = tuple(attempts)
        self.breakers = breakers or BreakerRegistry()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._max_retry_after_s = max_retry_after_s
        self._name = f"fallback({','.join(a.model.name for a in self.attempts)})"
        # Any link may answer, so the chain can do what all of them can; it makes pieces itself.
        self._capabilities = Capabilities.common((a.model for a in self.attempts), streams_pieces=True)

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        """What every model of the chain can do (extractive only when each one quotes its sources)."""
        return self._capabilities

    async def aclose(self) -> None:
        """Close every model of the chain (each once); they stay usable, so this is safe twice."""
        for model in {id(a.model): a.model for a in self.attempts}.values():
            await model.aclose()

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        failures: list[tuple[str, ModelError]] = []
        for attempt in self.attempts:
            name = attempt.model.name
            breaker = self.breakers.get(name)
            for retry in range(attempt.max_retries + 1):
                if not breaker.allow():
                    failures.append((name, ModelUnavailable("circuit breaker open; skipped", model=name)))
                    break
                try:
                    completion = await _timed(
                        name, attempt.timeout_s, attempt.model.complete(messages, options)
                    )
                except ModelError as exc:
                    if _settle(exc, breaker) == "raise":
                        raise
                    failures.append((name, exc))
                    if not await self._backoff(exc, retry, attempt.max_retries):
                        break
                    continue
                except BaseException:
                    breaker.release()
                    raise
                breaker.record_success()
                model = completion.model or name
                return dataclasses.replace(completion, model=model, usage=completion.usage.attributed(model))
        raise AllModelsFailed(failures)

    def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        # Each try's first piece is an event naming its model; plain text follows it.
        return events_from_pieces(self.stream_pieces(messages, options), "")

    async def stream_pieces(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncGenerator[Piece, None]:
        """``stream`` without an event per token (``models.base.stream_pieces``): the first text of
        each try comes as a StreamEvent naming its model, then plain text until the next event."""
        failures: list[tuple[str, ModelError]] = []
        sent: list[str] = []  # text the client has received, from every model so far
        sent_tool_calls = False
        usage = Usage()
        for attempt in self.attempts:
            name = attempt.model.name
            breaker = self.breakers.get(name)
            for retry in range(attempt.max_retries + 1):
                if not breaker.allow():
                    failures.append((name, ModelUnavailable("circuit breaker open; skipped", model=name)))
                    break
                request = _continuation(messages, "".join(sent)) if sent else list(messages)
                inner = attempt.model.stream_pieces(request, options)
                joiner = _Joiner("".join(sent)) if sent else None
                received: list[str] = []
                reported, finish, delivered = None, None, False
                watchdog = _Watchdog(name, attempt.timeout_s)
                try:
                    while True:
                        watchdog.since = watchdog.loop.time()  # inlined: this runs once per token
                        if watchdog.handle is None:
                            watchdog.arm()
                        try:
                            piece = await anext(inner)
                        except StopAsyncIteration:
                            break
                        except asyncio.CancelledError:
                            watchdog.raise_if_fired()
                            raise
                        finally:
                            watchdog.since = None
                        calls: tuple[ToolCall, ...] = ()
                        if type(piece) is str:
                            text = piece
                        else:
                            assert isinstance(piece, StreamEvent)
                            text, calls = piece.text, piece.tool_calls
                            reported = piece.usage or reported
                            finish = piece.finish_reason or finish
                        received.append(text)
                        if joiner is not None:
                            text = joiner.feed(text)
                        if not (text or calls):
                            continue
                        sent.append(text)
                        if delivered and not calls:
                            yield text  # the common case: one more token of this try
                            continue
                        delivered = True
                        sent_tool_calls = sent_tool_calls or bool(calls)
                        yield StreamEvent(text=text, tool_calls=calls, model=name)
                    if joiner is not None and (tail := joiner.flush()):
                        sent.append(tail)
                        yield StreamEvent(text=tail, model=name)
                except ModelError as exc:
                    usage += _try_usage(reported, request, "".join(received)).attributed(name)
                    if _settle(exc, breaker) == "raise":
                        raise
                    failures.append((name, exc))
                    if sent_tool_calls:  # a call already handed to the client cannot be continued
                        raise AllModelsFailed(failures) from exc
                    if delivered or not await self._backoff(exc, retry, attempt.max_retries):
                        break
                    continue
                except BaseException:
                    breaker.release()
                    raise
                finally:
                    watchdog.stop()
                    await aclose_quietly(inner)
                breaker.record_success()
                usage += _try_usage(reported, request, "".join(received)).attributed(name)
                yield StreamEvent(usage=usage, finish_reason=finish or "stop", model=name)
                return
        raise AllModelsFailed(failures)

    async def _backoff(self, exc: ModelError, retry: int, max_retries: int) -> bool:
        """Sleep before retrying the same model; False when it should not be retried."""
        if retry >= max_retries or _verdict(exc) != "retry":
            return False
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            if exc.retry_after > self._max_retry_after_s:
                return False
            delay = exc.retry_after
        else:
            delay = self._rng.uniform(0.0, min(self._backoff_max_s, self._backoff_base_s * 2**retry))
        await self._sleep(delay)
        return True


def _verdict(exc: ModelError) -> Verdict:
    if isinstance(exc, ContextTooLong | AllModelsFailed):
        return "next"
    if isinstance(exc, BadRequest | ContentFiltered):
        return "raise"
    if isinstance(exc, RateLimited | ModelTimeout | ModelUnavailable):
        return "retry"
    if isinstance(exc, ModelHTTPError) and (exc.status_code >= 500 or exc.status_code in (408, 409)):
        return "retry"  # what is left of ModelHTTPError: server errors, and 408/409 (transient)
    return "raise"


def _settle(exc: ModelError, breaker: CircuitBreaker) -> Verdict:
    """Tell the breaker how the call ended: only retryable errors count against the model."""
    verdict = _verdict(exc)
    if verdict == "retry":
        breaker.record_failure()
    else:
        breaker.release()
    return verdict


async def _timed(name: str, timeout_s: float, awaitable: Awaitable[T]) -> T:
    """Await within ``timeout_s``; only this deadline becomes ModelTimeout (a TimeoutError raised
    inside the model is a bug and propagates)."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            return await awaitable
    except TimeoutError:
        if deadline.expired():
            raise ModelTimeout(f"no answer within {timeout_s:g} s", model=name) from None
        raise


class _Watchdog:
    """The per-piece deadline of a stream: each ``wait`` must finish within ``timeout_s``.

    Same rule as wrapping each wait in ``asyncio.timeout``, but one timer per period instead of
    one per token: at a gateway's thousands of tokens a second the timers were a measurable share
    of the CPU. The stream sets ``since`` when a wait begins and clears it when the wait ends; the
    timer only cancels while a wait is pending, never while the stream is handed to the consumer
    between pieces.
    """

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.since: float | None = None  # when the pending wait began
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        """Start the timer for the wait that began at ``since`` (the caller sets ``since``)."""
        assert self.since is not None
        self.handle = self.loop.call_at(self.since + self.timeout_s, self._check)

    def raise_if_fired(self) -> None:
        """In a CancelledError handler: turn our own cancellation into ModelTimeout."""
        if self.fired and self.task is not None and self.task.uncancel() == 0:
            raise ModelTimeout(f"no answer within {self.timeout_s:g} s", model=self.name) from None

    def _check(self) -> None:
        self.handle = None
        if self.since is None:
            return  # between pieces: the next wait re-arms
        left = self.since + self.timeout_s - self.loop.time()
        if left > 0:
            self.handle = self.loop.call_at(self.loop.time() + left, self._check)
        elif self.task is not None:
            self.fired = True
            self.task.cancel()

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def _continuation(messages: Sequence[Message], sent: str) -> list[Message]:
    return [*messages, Message("assistant", sent), Message("user", CONTINUE_INSTRUCTION)]


def _try_usage(reported: Usage | None, messages: Sequence[Message], received: str) -> Usage:
    """What one try cost: as reported, else estimated when the model wrote something."""
    if reported is not None:
        return reported
    if not received:
        return Usage()
    return Usage(estimate_message_tokens(messages), estimate_tokens(received))


class _Joiner:
    """Removes what a continuation repeats of the text already sent.

    The start of the continuation is held back until the longest overlap is known: the longest
    suffix of the sent text that equals a prefix of the continuation, comparing with whitespace
    runs collapsed. The suffix must start at a word and be ``min_overlap`` characters long, or
    else be whole words in the continuation too (a repeated "It", but not "the" of "theatre"). Text that cannot be
    part of such an overlap is released as soon as that is certain, usually within a few words.
    """

    def __init__(self, sent: str, *, window: int = 200, min_overlap: int = 4) -> None:
        tail = sent[-window:]
        if len(sent) > window:  # start the window at a word
            tail = tail[len(tail.split(maxsplit=1)[0]) :] if tail.split() else tail
        self._tail, _ = _collapse(tail.strip())
        self._sent_ends_in_space = sent[-1:].isspace()
        self._min = min_overlap
        self._buffer = ""
        self._done = not sent

    def feed(self, text: str) -> str:
        if self._done:
            return self._joint(text)
        self._buffer += text
        cut = self._decide(final=False)
        return "" if cut is None else self._release(cut)

    def flush(self) -> str:
        if self._done:
            return ""
        cut = self._decide(final=True)
        return self._release(cut or 0)

    def _release(self, cut: int) -> str:
        out, self._buffer, self._done = self._buffer[cut:], "", True
        return self._joint(out)

    def _joint(self, text: str) -> str:
        """Drop the continuation's leading space when the sent text already ends with one."""
        if self._sent_ends_in_space:
            text = text.lstrip()
            self._sent_ends_in_space = not text
        return text

    def _decide(self, *, final: bool) -> int | None:
        """Where the repeated text ends in the buffer (0: nothing repeated); None: not known yet."""
        body, ends = _collapse(self._buffer)
        tail = self._tail
        if not body and not final:
            return None
        best = 0
        for k in range(2, len(tail) + 1):
            start = len(tail) - k
            if start and tail[start - 1].isalnum() and tail[start].isalnum():
                continue  # the suffix would begin inside a word
            if k > len(body):
                if not final and tail[start : start + len(body)] == body:
                    return None  # a longer overlap is still possible
            elif tail[start:] == body[:k]:
                if k == len(body) and not final and k < self._min:
                    return None  # whether the word ends here is not known yet
                if k >= self._min or k == len(body) or not (body[k - 1] + body[k]).isalnum():
                    best = k  # long enough, or whole words ("It" in "It is", not "the" in "theatre")
        return ends[best - 1] if best else 0


def _collapse(text: str) -> tuple[str, list[int]]:
    """``text`` without leading space and with whitespace runs as one space; for each character
    kept, the index in ``text`` just after it."""
    chars: list[str] = []
    ends: list[int] = []
    for i, ch in enumerate(text):
        if ch.isspace():
            if chars and chars[-1] != " ":
                chars.append(" ")
                ends.append(i + 1)
            elif chars:
                ends[-1] = i + 1
        else:
            chars.append(ch)
            ends.append(i + 1)
    return "".join(chars), ends
