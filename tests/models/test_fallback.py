"""FallbackModel over in-process scripted models: retries, failover rules, breakers, streams."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import pytest

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
from stanchion.models.base import ChatModel
from stanchion.models.fallback import (
    CONTINUE_INSTRUCTION,
    Attempt,
    BreakerRegistry,
    CircuitBreaker,
    FallbackModel,
)
from stanchion.models.openai_compat import OpenAICompatModel
from stanchion.models.pricing import estimate_message_tokens, estimate_tokens
from stanchion.testing.fake_chat import Delay, FakeChatModel, Step, Tokens
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply
from stanchion.types import Completion, Message, StreamEvent, Usage

T = TypeVar("T")
QUESTION = [Message("user", "What is Paris known for?")]
NAMES = ("primary", "backup")
SENTENCE = "The capital of France is Paris. It is known for the Eiffel Tower."


class Sleeps:
    """A fake ``sleep`` that records what it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chain(
    *models: ChatModel,
    retries: int = 0,
    timeout_s: float = 5.0,
    sleep: Sleeps | None = None,
    breakers: BreakerRegistry | None = None,
) -> FallbackModel:
    return FallbackModel(
        [Attempt(m, timeout_s=timeout_s, max_retries=retries) for m in models],
        sleep=sleep or Sleeps(),
        rng=random.Random(7),
        breakers=breakers,
    )


def complete(model: FallbackModel) -> Completion:
    return asyncio.run(model.complete(QUESTION))


def collect(model: ChatModel, messages: Sequence[Message] = QUESTION) -> list[StreamEvent]:
    async def run() -> list[StreamEvent]:
        return [event async for event in model.stream(messages)]

    return asyncio.run(run())


def failures(exc: AllModelsFailed) -> list[tuple[str, type[ModelError]]]:
    return [(name, type(err)) for name, err in exc.attempts]


class TestRetries:
    def test_retry_then_success_on_the_same_model(self) -> None:
        """A 5xx is retried on the same model after a jittered backoff within the exponential cap."""
        sleeps = Sleeps()
        a = FakeChatModel("a", [ModelHTTPError("oops", status_code=502), ModelUnavailable("reset"), "ok"])
        b = FakeChatModel("b")
        result = complete(chain(a, b, retries=2, sleep=sleeps))
        assert (result.text, result.model) == ("ok", "a")
        assert len(a.calls) == 3 and not b.calls
        assert len(sleeps.waits) == 2
        assert 0 <= sleeps.waits[0] <= 0.5 and 0 <= sleeps.waits[1] <= 1.0

    def test_retry_after_is_honoured(self) -> None:
        """RateLimited.retry_after is waited exactly, retry by retry."""
        sleeps = Sleeps()
        a = FakeChatModel(
            "a", [RateLimited("slow", retry_after=2.0), RateLimited("slow", retry_after=1.5), "ok"]
        )
        assert complete(chain(a, retries=2, sleep=sleeps)).text == "ok"
        assert sleeps.waits == [2.0, 1.5]

    def test_retry_after_beyond_the_cap_moves_on_without_waiting(self) -> None:
        """A Retry-After longer than max_retry_after_s sends the request to the next model at once."""
        sleeps = Sleeps()
        a = FakeChatModel("a", [RateLimited("come back tomorrow", retry_after=3600.0)])
        b = FakeChatModel("b", ["from b"])
        result = complete(chain(a, b, retries=3, sleep=sleeps))
        assert (result.text, result.model) == ("from b", "b")
        assert sleeps.waits == [] and len(a.calls) == 1

    def test_context_too_long_is_not_retried_on_the_same_model(self) -> None:
        """ContextTooLong goes to the next model (maybe a bigger window), never the same one again."""
        a = FakeChatModel("a", [ContextTooLong("too long", status_code=400)])
        b = FakeChatModel("b", ["fits"])
        assert complete(chain(a, b, retries=3)).model == "b"
        assert len(a.calls) == 1


class TestFailover:
    @pytest.mark.parametrize(
        "error",
        [
            RateLimited("429", retry_after=None),
            ModelHTTPError("503", status_code=503),
            ModelUnavailable("connection refused"),
            ModelTimeout("provider timed out"),
            Delay(10.0),
        ],
        ids=["429", "503", "unavailable", "timeout", "deadline"],
    )
    def test_fails_over_to_the_next_model(self, error: Step) -> None:
        """Each failover-worthy error ends on the second model, which answers."""
        a = FakeChatModel("a", [error])
        b = FakeChatModel("b", ["from b"])
        result = complete(chain(a, b, timeout_s=0.05))
        assert (result.text, result.model) == ("from b", "b")
        assert len(b.calls) == 1

    @pytest.mark.parametrize(
        "error",
        [BadRequest("bad", status_code=400), ContentFiltered("no", status_code=400)],
        ids=["bad-request", "content-filtered"],
    )
    def test_no_failover_on_our_own_mistakes(self, error: ModelError) -> None:
        """BadRequest and ContentFiltered are re-raised unchanged; the next model is never called."""
        a = FakeChatModel("a", [error])
        b = FakeChatModel("b")
        with pytest.raises(type(error)) as raised:
            complete(chain(a, b, retries=2))
        assert raised.value is error
        assert len(a.calls) == 1 and not b.calls

    def test_a_bug_propagates_unchanged(self) -> None:
        """A non-ModelError exception is a bug: no retry, no failover, same exception object."""
        bug = ValueError("bug in our code")
        a = FakeChatModel("a", [bug])
        b = FakeChatModel("b")
        with pytest.raises(ValueError) as raised:
            complete(chain(a, b, retries=2))
        assert raised.value is bug and not b.calls

    def test_a_timeout_error_from_inside_the_model_is_not_a_deadline(self) -> None:
        """Only the attempt's own deadline becomes ModelTimeout; a stray TimeoutError is a bug."""
        a = FakeChatModel("a", [TimeoutError("raised by a bug")])
        with pytest.raises(TimeoutError):
            complete(chain(a, FakeChatModel("b")))

    def test_all_models_failed_lists_every_attempt_in_order(self) -> None:
        """Every try, retries included, is listed as (model, error) in the order it happened."""
        a = FakeChatModel("a", [ModelHTTPError("500", status_code=500), RateLimited("429")])
        b = FakeChatModel("b", [Delay(10.0), ModelHTTPError("503", status_code=503)])
        model = chain(a, b, retries=1, timeout_s=0.05)
        with pytest.raises(AllModelsFailed) as raised:
            complete(model)
        assert failures(raised.value) == [
            ("a", ModelHTTPError),
            ("a", RateLimited),
            ("b", ModelTimeout),
            ("b", ModelHTTPError),
        ]
        assert model.name == "fallback(a,b)"


class TestCircuitBreaker:
    def test_opens_after_consecutive_failures_and_skips_the_model(self) -> None:
        """After N failures the model is skipped without a call, recorded as ModelUnavailable."""
        clock = Clock()
        breakers = BreakerRegistry(failure_threshold=2, cooldown_s=10.0, clock=clock)
        a = FakeChatModel("a", [ModelUnavailable("down"), ModelUnavailable("down")], default="a is back")
        b = FakeChatModel("b", default="from b")
        model = chain(a, b, breakers=breakers)
        assert [complete(model).model for _ in range(3)] == ["b", "b", "b"]
        assert len(a.calls) == 2 and breakers.get("a").state == "open"

        failed = chain(a, FakeChatModel("c", [ModelUnavailable("also down")]), breakers=breakers)
        with pytest.raises(AllModelsFailed) as raised:
            complete(failed)
        assert failures(raised.value) == [("a", ModelUnavailable), ("c", ModelUnavailable)]
        assert "circuit breaker open" in str(raised.value.attempts[0][1])
        assert len(a.calls) == 2

    def test_half_opens_after_cooldown_and_one_success_closes_it(self) -> None:
        """After the cooldown one probe goes through; its success closes the breaker."""
        clock = Clock()
        breakers = BreakerRegistry(failure_threshold=1, cooldown_s=10.0, clock=clock)
        a = FakeChatModel("a", [ModelUnavailable("down")], default="a is back")
        model = chain(a, FakeChatModel("b", default="from b"), breakers=breakers)
        assert complete(model).model == "b"
        clock.now += 9.9
        assert complete(model).model == "b" and len(a.calls) == 1
        clock.now += 0.1
        assert breakers.get("a").state == "half_open"
        assert complete(model).model == "a"
        assert breakers.get("a").state == "closed"

    def test_a_failed_probe_opens_it_again(self) -> None:
        """A failing probe re-opens the breaker for another cooldown."""
        clock = Clock()
        breaker = CircuitBreaker(failure_threshold=3, cooldown_s=5.0, clock=clock)
        for _ in range(3):
            assert breaker.allow()
            breaker.record_failure()
        assert breaker.state == "open" and not breaker.allow()
        clock.now += 5.0
        assert breaker.allow()
        assert not breaker.allow(), "only one probe at a time while half-open"
        breaker.record_failure()
        assert breaker.state == "open"
        clock.now += 5.0
        assert breaker.allow()
        breaker.release()
        assert breaker.allow(), "a probe with a neutral outcome frees the slot"

    def test_our_mistakes_do_not_count_against_the_model(self) -> None:
        """BadRequest says nothing about the provider's health: the breaker stays closed."""
        breakers = BreakerRegistry(failure_threshold=1)
        a = FakeChatModel("a", [BadRequest("bad", status_code=422)])
        with pytest.raises(BadRequest):
            complete(chain(a, breakers=breakers))
        assert breakers.get("a").state == "closed"


class TestStream:
    def test_failure_before_the_first_token_moves_on_transparently(self) -> None:
        """The client sees only the second model's text, and the final event names it."""
        a = FakeChatModel("a", [Tokens([], error=ModelHTTPError("500", status_code=500))])
        b = FakeChatModel("b", [SENTENCE])
        events = collect(chain(a, b))
        assert "".join(e.text for e in events) == SENTENCE
        assert {e.model for e in events} == {"b"}
        assert events[-1].finish_reason == "stop"
        assert b.calls[0].messages == tuple(QUESTION)

    def test_failure_before_the_first_token_retries_the_same_model(self) -> None:
        """Before any text is sent, a stream follows the same retry rules as complete."""
        sleeps = Sleeps()
        a = FakeChatModel("a", [RateLimited("busy", retry_after=0.25), SENTENCE])
        events = collect(chain(a, FakeChatModel("b"), retries=1, sleep=sleeps))
        assert "".join(e.text for e in events) == SENTENCE
        assert sleeps.waits == [0.25] and events[-1].model == "a"

    def test_mid_stream_failure_continues_without_duplicated_text(self) -> None:
        """The second model repeats the last words; the client reads the sentence exactly once."""
        sent = ["The", " capital", " of", " France", " is", " Paris.", " It", " is", " known"]
        a = FakeChatModel("a", [Tokens(sent, error=ModelUnavailable("connection reset"))])
        b = FakeChatModel("b", [Tokens(["It", " is", " known", " for", " the", " Eiffel", " Tower."])])
        events = collect(chain(a, b))
        assert "".join(e.text for e in events) == SENTENCE
        assert events[-1].model == "b"  # the model that finished; usage.by_model names both
        continuation = b.calls[0].messages
        assert continuation[:-2] == tuple(QUESTION)
        assert continuation[-2] == Message("assistant", "".join(sent))
        assert continuation[-1] == Message("user", CONTINUE_INSTRUCTION)

    def test_mid_stream_stall_times_out_and_continues(self) -> None:
        """A stream that goes quiet past the time limit is cut and continued on the next model."""
        a = FakeChatModel("a", [Tokens(["The capital of France", " is"], stall_s=10.0)])
        b = FakeChatModel("b", [" Paris."])
        events = collect(chain(a, b, timeout_s=0.05))
        assert "".join(e.text for e in events) == "The capital of France is Paris."

    def test_a_slow_consumer_is_not_a_stalled_model(self) -> None:
        """The per-piece limit counts only time spent waiting on the model, not on the reader."""
        a = FakeChatModel("a", [Tokens(["The capital", " of France", " is Paris."])])

        async def read_slowly() -> list[StreamEvent]:
            events = []
            async for event in chain(a, timeout_s=0.05).stream(QUESTION):
                events.append(event)
                await asyncio.sleep(0.15)  # three times the limit, between pieces
            return events

        events = asyncio.run(read_slowly())
        assert "".join(e.text for e in events) == "The capital of France is Paris."
        assert events[-1].model == "a"

    def test_usage_of_every_try_is_summed(self) -> None:
        """Reported usage is added up, each try's credited to its model; a try cut off before
        reporting is estimated by chars/4."""
        partial = "The capital of France is"
        a = FakeChatModel("a", [Tokens([partial], error=ModelHTTPError("502", status_code=502))])
        b = FakeChatModel("b", [Tokens([" Paris."], usage=Usage(40, 3))])
        events = collect(chain(a, b))
        estimated = Usage(estimate_message_tokens(QUESTION), estimate_tokens(partial))
        assert events[-1].usage == estimated + Usage(40, 3)
        assert events[-1].usage.by_model == (("a", estimated), ("b", Usage(40, 3)))
        assert [e.usage for e in events[:-1]] == [None] * (len(events) - 1)

    def test_bad_request_mid_stream_is_raised_not_continued(self) -> None:
        """A non-failover error is raised even after text was sent; the next model is not called."""
        a = FakeChatModel("a", [Tokens(["Some"], error=ContentFiltered("filtered", status_code=400))])
        b = FakeChatModel("b")
        with pytest.raises(ContentFiltered):
            collect(chain(a, b))
        assert not b.calls

    def test_every_stream_failing_raises_all_models_failed(self) -> None:
        """The attempts of a failed stream are listed like those of complete."""
        a = FakeChatModel("a", [Tokens(["Half"], error=ModelUnavailable("reset"))])
        b = FakeChatModel("b", [Tokens([], error=RateLimited("busy"))])
        with pytest.raises(AllModelsFailed) as raised:
            collect(chain(a, b))
        assert failures(raised.value) == [("a", ModelUnavailable), ("b", RateLimited)]

    def test_closing_the_stream_early_closes_the_inner_stream(self) -> None:
        """A client that stops reading frees the breaker's probe slot and closes the model stream."""
        breakers = BreakerRegistry(failure_threshold=1, cooldown_s=0.0)
        breakers.get("a").record_failure()
        a = FakeChatModel("a", [SENTENCE, SENTENCE])
        model = chain(a, breakers=breakers)

        async def first_event() -> str:
            events = model.stream(QUESTION)
            event = await anext(events)
            await events.aclose()  # type: ignore[attr-defined]
            return event.text

        assert asyncio.run(first_event()) == "The"
        assert breakers.get("a").allow(), "the probe slot was released"


class TestJoint:
    @pytest.mark.parametrize(
        ("sent", "continuation", "joined"),
        [
            ("It is known", " for art.", "It is known for art."),
            ("It is known ", "for art.", "It is known for art."),
            ("Paris. It is known", "It is known for art.", "Paris. It is known for art."),
            ("Paris. It ", "It is known for art.", "Paris. It is known for art."),
            ("Paris. It is\nknown ", "is known  for art.", "Paris. It is\nknown for art."),
            ("I went to the", " theatre.", "I went to the theatre."),
            ("Ends here.", "Ends here.", "Ends here."),
        ],
        ids=["no-repeat", "space-in-sent", "repeat", "one-word", "whitespace", "not-a-repeat", "all-repeat"],
    )
    def test_continuation_joins_without_duplicates(self, sent: str, continuation: str, joined: str) -> None:
        """Whatever the continuation repeats at the joint is dropped, whitespace-insensitively."""
        a = FakeChatModel("a", [Tokens([sent], error=ModelUnavailable("reset"))])
        b = FakeChatModel("b", [continuation])
        assert "".join(e.text for e in collect(chain(a, b))) == joined


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    with FakeOpenAIServer() as primary, FakeOpenAIServer() as backup:
        yield primary, backup


def over_http(
    servers: tuple[FakeOpenAIServer, FakeOpenAIServer],
    run: Callable[[FallbackModel], Awaitable[T]],
    **kw: Any,
) -> T:
    """Run ``run`` on a chain of two OpenAICompatModels pointed at the fake servers, then close them."""

    async def main() -> T:
        models = [
            OpenAICompatModel(n, base_url=s.url, model="fake-model")
            for n, s in zip(NAMES, servers, strict=True)
        ]
        try:
            return await run(chain(*models, **kw))
        finally:
            for model in models:
                await model.aclose()

    return asyncio.run(main())


async def stream_text(model: FallbackModel) -> list[StreamEvent]:
    return [event async for event in model.stream(QUESTION)]


class TestLoopback:
    """The chain over OpenAICompatModel and FakeOpenAIServer on real loopback HTTP."""

    def test_retry_after_header_is_honoured(self, servers: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> None:
        """A 429 with Retry-After: 2 is waited out on the same server, which then answers."""
        primary, backup = servers
        primary.script(Reply(status=429, headers={"Retry-After": "2"}), Reply(text="hello there"))
        sleeps = Sleeps()
        result = over_http(servers, lambda m: m.complete(QUESTION), retries=1, sleep=sleeps)
        assert (result.text, result.model) == ("hello there", "primary")
        assert sleeps.waits == [2.0]
        assert len(primary.requests) == 2 and not backup.requests

    @pytest.mark.parametrize(
        "failure",
        [Reply(status=500), Reply(status=503), Reply(reset=True), Reply(delay_s=5.0, text="too late")],
        ids=["500", "503", "connection-reset", "slow"],
    )
    def test_fails_over_to_the_backup_server(
        self, servers: tuple[FakeOpenAIServer, FakeOpenAIServer], failure: Reply
    ) -> None:
        """5xx, a reset connection and a slow answer all end on the backup, within the time limit."""
        primary, backup = servers
        primary.script(failure)
        backup.script(Reply(text="from the backup", usage=(12, 3)))
        result = over_http(servers, lambda m: m.complete(QUESTION), timeout_s=1.0)
        assert (result.text, result.model, result.usage) == ("from the backup", "backup", Usage(12, 3))
        assert result.usage.by_model == (("backup", Usage(12, 3)),)
        assert len(primary.requests) == 1 and len(backup.requests) == 1

    def test_bad_request_is_not_failed_over(self, servers: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> None:
        """A 400 is raised as BadRequest and the backup server never sees a request."""
        primary, backup = servers
        primary.script(Reply(status=400))
        with pytest.raises(BadRequest):
            over_http(servers, lambda m: m.complete(QUESTION), retries=2)
        assert len(primary.requests) == 1 and not backup.requests

    def test_all_failing_lists_every_attempt(
        self, servers: tuple[FakeOpenAIServer, FakeOpenAIServer]
    ) -> None:
        """Both servers failing raises AllModelsFailed with each HTTP attempt in order."""
        primary, backup = servers
        primary.script(Reply(status=502), Reply(status=429, headers={"Retry-After": "600"}))
        backup.script(Reply(reset=True), Reply(status=500))
        with pytest.raises(AllModelsFailed) as raised:
            over_http(servers, lambda m: m.complete(QUESTION), retries=1)
        assert failures(raised.value) == [
            ("primary", ModelHTTPError),
            ("primary", RateLimited),
            ("backup", ModelUnavailable),
            ("backup", ModelHTTPError),
        ]

    def test_stream_dying_mid_way_is_continued_on_the_backup(
        self, servers: tuple[FakeOpenAIServer, FakeOpenAIServer]
    ) -> None:
        """The primary resets after 7 words; the backup repeats a few and the client reads one sentence."""
        primary, backup = servers
        primary.script(Reply(text=SENTENCE, die_after_tokens=7))
        backup.script(Reply(text="Paris. It is known for the Eiffel Tower.", usage=(30, 9)))
        events = over_http(servers, stream_text)
        assert "".join(e.text for e in events) == SENTENCE
        assert events[-1].model == "backup" and events[-1].finish_reason == "stop"
        partial = "The capital of France is Paris. It "
        estimated = Usage(estimate_message_tokens(QUESTION), estimate_tokens(partial))
        assert events[-1].usage == estimated + Usage(30, 9)
        assert events[-1].usage.by_model == (("primary", estimated), ("backup", Usage(30, 9)))
        messages = backup.requests[0].json["messages"]
        assert messages[-2] == {"role": "assistant", "content": partial}
        assert messages[-1] == {"role": "user", "content": CONTINUE_INSTRUCTION}

    def test_stream_failing_before_the_first_token_moves_on(
        self, servers: tuple[FakeOpenAIServer, FakeOpenAIServer]
    ) -> None:
        """A 429 whose Retry-After is beyond the cap sends the stream to the backup at once."""
        primary, backup = servers
        primary.script(Reply(status=429, headers={"Retry-After": "120"}))
        backup.script(Reply(text=SENTENCE))
        sleeps = Sleeps()
        events = over_http(servers, stream_text, retries=2, sleep=sleeps)
        assert "".join(e.text for e in events) == SENTENCE
        assert {e.model for e in events} == {"backup"} and sleeps.waits == []

    def test_stream_stalling_mid_way_times_out_and_is_continued(
        self, servers: tuple[FakeOpenAIServer, FakeOpenAIServer]
    ) -> None:
        """The primary sends one word and goes quiet; past the limit the backup finishes the answer."""
        primary, backup = servers
        primary.script(Reply(text=SENTENCE, token_delay_s=5.0))
        backup.script(Reply(text=SENTENCE))
        events = over_http(servers, stream_text, timeout_s=0.3)
        assert "".join(e.text for e in events) == SENTENCE
        assert events[-1].model == "backup"

    def test_open_breaker_keeps_requests_away_from_a_failing_server(
        self, servers: tuple[FakeOpenAIServer, FakeOpenAIServer]
    ) -> None:
        """After two 500s the primary's breaker opens: the third request goes straight to the backup."""
        primary, backup = servers
        primary.script(Reply(status=500), Reply(status=500))
        breakers = BreakerRegistry(failure_threshold=2, cooldown_s=60.0)

        async def three(model: FallbackModel) -> list[str]:
            return [(await model.complete(QUESTION)).model for _ in range(3)]

        assert over_http(servers, three, breakers=breakers) == ["backup"] * 3
        assert len(primary.requests) == 2 and len(backup.requests) == 3


class TestPieces:
    """``stream_pieces``: what a gateway relays, without an event per token."""

    def test_each_try_opens_with_an_event_naming_its_model_then_plain_text(self) -> None:
        a = FakeChatModel("a", [Tokens(["It is ", "known "], error=ModelUnavailable("reset"))])
        b = FakeChatModel("b", [Tokens(["for art."])])

        async def run() -> list[object]:
            return [piece async for piece in chain(a, b).stream_pieces(QUESTION)]

        pieces = asyncio.run(run())
        opened = [(p.model, p.text) for p in pieces if isinstance(p, StreamEvent) and p.text]
        assert opened == [("a", "It is "), ("b", "for art.")]
        assert "known " in pieces  # later text of a try comes as a plain string
        final = pieces[-1]
        assert isinstance(final, StreamEvent) and final.model == "b" and final.finish_reason == "stop"
        text = "".join(p if isinstance(p, str) else p.text for p in pieces)
        assert text == "It is known for art."

    def test_stream_and_pieces_tell_the_same_answer(self) -> None:
        def model() -> FallbackModel:
            return chain(FakeChatModel("a", [Tokens(["one ", "two ", "three"])]))

        async def pieces() -> str:
            return "".join(
                [p if isinstance(p, str) else p.text async for p in model().stream_pieces(QUESTION)]
            )

        events = collect(model())
        assert "".join(e.text for e in events) == asyncio.run(pieces()) == "one two three"
        assert {e.model for e in events[:-1]} == {"a"}  # stream() names the model on every event
