"""Answers with citations: retrieve -> rerank -> pack -> generate -> verify -> (retry once) -> cite.

- **Retrieve** ``spec.candidates`` chunks (hybrid), **screen** them for prompt injection under
  ``guards.injection.sources`` (``guards/sources.py``: flag, strip or block; before the reranker,
  which may be a model too), and **rerank** them when a reranker is set.
- **Pack** the best ``k`` into the prompt within ``context_tokens``: near-identical chunks are
  dropped, and sources are placed best first, second best last, the weakest in the middle
  ("lost in the middle", Liu et al. 2023), then numbered ``[1]..[n]`` in prompt order. When
  verification may need a retry, room for its correction note is kept free.
- **Generate** with the route's ChatModel (format: ``stanchion.answer.prompt``).
- **Verify** every sentence against the source it cites (``stanchion.answer.verify``). If some
  are unsupported and the model is not extractive, retry **once**, naming them; then drop what
  is still unsupported, or abstain (``spec.on_unsupported``).
- **Cite** only the sources the final text cites, renumbered in order of first citation.

``stream`` yields the final answer's text sentence by sentence as each is generated and
verified, then the ``Answer``. On a retry it keeps what it has sent and adds the retry's
supported sentences that say something new, so its text can differ from ``answer``'s, which
takes the retry's answer whole.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from stanchion.answer.prompt import (
    CharEstimate,
    CitedSentence,
    Packed,
    Source,
    TokenCounter,
    pack,
    retry_prompt,
    split_answer,
    strip_citations,
)
from stanchion.answer.verify import Assembly, Citation, SentenceCheck, Verifier
from stanchion.core.analyze import contextual_query
from stanchion.core.embed import Embedder
from stanchion.core.filters import SearchFilter
from stanchion.guards.sources import SourceScreen, unmarked
from stanchion.models.base import ChatModel, ChatOptions
from stanchion.models.pricing import ModelCost, model_costs
from stanchion.request_context import RequestContext
from stanchion.retrieve.rerank import Reranker
from stanchion.retrieve.search import Retriever
from stanchion.spec import AnswerSpec, PriceSpec
from stanchion.tracing import span
from stanchion.types import Completion, Message, Usage

__all__ = [
    "Answer",
    "AnswerEvent",
    "Answerer",
    "Citation",
    "Source",
    "TokenCounter",
    "answer_questions",
    "contextual_query",
]

RETRY_RESERVE = 160  # prompt tokens kept free for the correction note of a retry
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class Answer:
    """``model`` is the model that wrote the final text (empty when none was asked: nothing was
    retrieved to answer from); ``usage`` credits every token to the model that produced it (a
    retry may have run on another one), and ``cost_usd`` prices each model's tokens at its own
    price."""

    question: str
    text: str
    citations: tuple[Citation, ...]
    model: str
    usage: Usage
    cost_usd: float
    latency_ms: Mapping[str, float]  # retrieve, rerank, generate, verify, total
    abstained: bool = False
    unsupported: tuple[str, ...] = ()  # sentences dropped (or that made the answer abstain)
    retried: bool = False
    sources: tuple[Source, ...] = ()  # what the model was shown, in prompt order
    costs: tuple[ModelCost, ...] = ()  # per model that produced tokens; they sum to cost_usd
    # Retrieved chunks the injection guard flagged (``guards.injection.sources``), by chunk id,
    # whatever it did with them: marked in the prompt (flag), cut (strip) or left out (block).
    flagged_sources: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "answer": self.text,
            "citations": [c.as_json() for c in self.citations],
            "model": self.model,
            "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens},
            "cost_usd": self.cost_usd,
            "models": [c.as_json() for c in self.costs],
            "latency_ms": dict(self.latency_ms),
            "abstained": self.abstained,
            **({"flagged_sources": list(self.flagged_sources)} if self.flagged_sources else {}),
        }


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    """A piece of the answer text, or (last event only) the finished ``Answer``."""

    text: str = ""
    answer: Answer | None = None


@dataclass
class Retrieved:
    """One question's run: what retrieval found and packed into its prompt (``Answerer.retrieve``,
    the pipeline's retrieve place), then what generating and verifying added."""

    question: str
    started: float
    packed: Packed = field(default_factory=lambda: Packed({}, [], []))
    timings: dict[str, float] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    retried: bool = False
    context: RequestContext | None = None  # whose request: told to every model call
    flagged: tuple[str, ...] = ()  # chunk ids the injection guard flagged (``Answer.flagged_sources``)

    def add_time(self, stage: str, started: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + (time.perf_counter() - started) * 1000


class Answerer:
    """Answers questions from a Retriever's index with a ChatModel; see the module docstring."""

    def __init__(
        self,
        retriever: Retriever,
        model: ChatModel,
        *,
        spec: AnswerSpec,
        embedder: Embedder,
        context_tokens: int,
        reranker: Reranker | None = None,
        counter: TokenCounter | None = None,
        prices: Mapping[str, PriceSpec] | None = None,
        max_output_tokens: int | None = None,
        mode: str = "hybrid",
        verifier: Verifier | None = None,
        retry: bool | None = None,
        sources: SourceScreen | None = None,
    ) -> None:
        """``sources``: the ``guards.injection.sources`` policy on retrieved chunks (None: the
        prompts are built as before the guard existed)."""
        self.retriever = retriever
        self.sources = sources
        self.model = model
        self.spec = spec
        self.reranker = reranker
        self.context_tokens = context_tokens
        self.counter: TokenCounter = counter or CharEstimate()
        self.prices = prices or {}
        self.max_output_tokens = max_output_tokens
        self.mode = mode
        self.verifier = verifier or Verifier(embedder)
        # A model that copies source sentences cannot be corrected by asking again. ``retry=None``
        # asks the model (``capabilities.extractive``; fallback chains and routers report it for the
        # models they wrap); ``retry`` overrides.
        extractive = model.capabilities.extractive
        self.may_retry = spec.verify and (not extractive if retry is None else retry)

    async def answer(
        self,
        question: str,
        *,
        where: SearchFilter | None = None,
        k: int | None = None,
        history: Sequence[Message] = (),
        search_query: str | None = None,
        context: RequestContext | None = None,
        retrieved: Retrieved | None = None,
    ) -> Answer:
        """Answer ``question``; ``search_query`` (default: the question) is what is retrieved for;
        ``context`` (whose request it is) goes with every model call; ``retrieved`` is what
        ``retrieve`` found already (else it is retrieved here)."""
        run = retrieved or await self._prepare(question, where, k, history, search_query, context)
        if not run.packed.sources:
            return self._finish(run, [], abstained=True)
        completion = await self._generate(run, run.packed.messages)
        sentences = self._claims(completion.text)
        if not sentences:  # the model abstained
            return self._finish(run, [], abstained=True)
        checks = await self._verify(run, sentences)
        unsupported = [c.sentence.body for c in checks if not c.supported]
        if unsupported and self.may_retry:
            run.retried = True
            retry = await self._generate(run, self._retry_messages(run, unsupported))
            retry_checks = await self._verify(run, self._claims(retry.text))
            if any(c.supported and c.sentence.numbers for c in retry_checks) or not any(
                c.supported and c.sentence.numbers for c in checks
            ):
                checks = retry_checks
                unsupported = [c.sentence.body for c in checks if not c.supported]
        if unsupported and self.spec.on_unsupported == "abstain":
            return self._finish(run, [], abstained=True, unsupported=unsupported)
        kept = [c for c in checks if c.supported]
        if self.spec.verify and not any(c.sentence.numbers for c in kept):
            return self._finish(run, [], abstained=True, unsupported=unsupported)
        return self._finish(run, kept, unsupported=unsupported)

    async def stream(
        self,
        question: str,
        *,
        where: SearchFilter | None = None,
        k: int | None = None,
        history: Sequence[Message] = (),
        search_query: str | None = None,
        context: RequestContext | None = None,
        retrieved: Retrieved | None = None,
    ) -> AsyncIterator[AnswerEvent]:
        """The answer text, sentence by sentence once verified, then the finished ``Answer``."""
        if self.spec.verify and self.spec.on_unsupported == "abstain":
            # Any unsupported sentence voids the answer, so nothing can be sent before the end.
            answer = await self.answer(
                question,
                where=where,
                k=k,
                history=history,
                search_query=search_query,
                context=context,
                retrieved=retrieved,
            )
            yield AnswerEvent(text=answer.text)
            yield AnswerEvent(answer=answer)
            return
        run = retrieved or await self._prepare(question, where, k, history, search_query, context)
        out = Assembly(run.packed.sources, hold_uncited=self.spec.verify)
        unsupported: list[str] = []
        if run.packed.sources:
            async for sentence in self._sentences(run):
                if self._abstains(sentence.body):
                    continue
                check = (await self._verify(run, [sentence]))[0]
                if check.supported:
                    if delta := out.add(check):
                        yield AnswerEvent(text=delta)
                else:
                    unsupported.append(sentence.body)
            if unsupported and self.may_retry:
                run.retried = True
                retry = await self._generate(run, self._retry_messages(run, unsupported))
                for check in await self._verify(run, self._claims(retry.text)):
                    if check.supported and not out.repeats(check.sentence) and (delta := out.add(check)):
                        yield AnswerEvent(text=delta)
        nothing = not out.cited if self.spec.verify else not out.parts
        answer = self._finish(run, out.accepted, unsupported=unsupported, abstained=nothing)
        if answer.abstained:
            yield AnswerEvent(text=answer.text)
        yield AnswerEvent(answer=answer)

    async def retrieve(
        self,
        question: str,
        *,
        where: SearchFilter | None = None,
        k: int | None = None,
        history: Sequence[Message] = (),
        search_query: str | None = None,
        context: RequestContext | None = None,
    ) -> Retrieved:
        """Retrieve, rerank and pack the sources for ``question`` (the request pipeline's retrieve
        place, where a stage can see them before any model does); pass the result to ``answer`` or
        ``stream`` as ``retrieved``."""
        return await self._prepare(question, where, k, history, search_query, context)

    # --- stages ----------------------------------------------------------------------------------

    async def _prepare(
        self,
        question: str,
        where: SearchFilter | None,
        k: int | None,
        history: Sequence[Message],
        search_query: str | None,
        context: RequestContext | None = None,
    ) -> Retrieved:
        run = Retrieved(
            question, time.perf_counter(), context=context
        )  # model: set by the model that answers
        started = time.perf_counter()
        with span("retrieve", mode=self.mode, candidates=self.spec.candidates) as current:
            result = await asyncio.to_thread(
                self.retriever.search,
                search_query or question,
                k=self.spec.candidates,
                mode=self.mode,
                where=where or SearchFilter(),
            )
            current.set_attribute("hits", len(result.hits))
        hits = result.hits
        if self.sources is not None and hits:  # its time counts as retrieval's
            with span("screen_sources", policy=self.sources.policy) as current:
                screened = await asyncio.to_thread(self.sources.screen, hits)
                current.set_attribute("flagged", len(screened.flagged))
            hits, run.flagged = screened.hits, screened.flagged
        else:
            hits = unmarked(hits)
        run.add_time("retrieve", started)
        started = time.perf_counter()
        if self.reranker is not None and hits:
            with span("rerank", candidates=len(hits)):
                hits = await self.reranker.rerank(search_query or question, hits, len(hits))
        run.add_time("rerank", started)
        budget = self.context_tokens - (RETRY_RESERVE if self.may_retry else 0)
        run.packed = pack(
            question,
            hits,
            k=k or self.spec.k,
            budget=budget,
            counter=self.counter,
            abstain_text=self.spec.abstain_text,
            history=history,
        )
        return run

    def _retry_messages(self, run: Retrieved, unsupported: Sequence[str]) -> list[Message]:
        return retry_prompt(
            run.packed, run.question, unsupported, budget=self.context_tokens, counter=self.counter
        )

    async def _generate(self, run: Retrieved, messages: Sequence[Message]) -> Completion:
        started = time.perf_counter()
        with span("generate", model=self.model.name) as current:
            completion = await self.model.complete(messages, self._options(run))
            current.set_attribute("model.used", completion.model)
            current.set_attribute("tokens.input", completion.usage.input_tokens)
            current.set_attribute("tokens.output", completion.usage.output_tokens)
        run.add_time("generate", started)
        run.model = completion.model or self.model.name
        run.usage += completion.usage.attributed(run.model)
        return completion

    async def _sentences(self, run: Retrieved) -> AsyncIterator[CitedSentence]:
        """Complete sentences of a streamed generation, as soon as the next one has begun."""
        started = time.perf_counter()
        buffer, done = "", 0
        run.model = self.model.name  # until an event names the model that answered
        async for event in self.model.stream(run.packed.messages, self._options(run)):
            buffer += event.text
            if event.model:
                run.model = event.model
            if event.usage is not None:
                run.usage += event.usage.attributed(run.model)
            sentences = split_answer(buffer)
            # The last sentence may still grow; while it has no words yet, it may be a citation
            # ("[2" so far) that belongs to the sentence before it.
            started_words = bool(sentences) and any(c.isalpha() for c in sentences[-1].body)
            ready = max(len(sentences) - (1 if started_words else 2), 0)
            for sentence in sentences[done:ready]:
                run.add_time("generate", started)
                yield sentence
                started = time.perf_counter()
            done = max(done, ready)
        run.add_time("generate", started)
        for sentence in split_answer(buffer)[done:]:
            yield sentence

    async def _verify(self, run: Retrieved, sentences: Sequence[CitedSentence]) -> list[SentenceCheck]:
        started = time.perf_counter()
        if self.spec.verify:
            texts = {n: s.checked_text for n, s in run.packed.sources.items()}
            with span("verify", sentences=len(sentences)):
                checks = await asyncio.to_thread(self.verifier.check, sentences, texts)
        else:
            checks = [SentenceCheck(s, supported=True) for s in sentences]
        run.add_time("verify", started)
        return checks

    def _finish(
        self,
        run: Retrieved,
        kept: Sequence[SentenceCheck],
        *,
        abstained: bool = False,
        unsupported: Sequence[str] = (),
    ) -> Answer:
        out = Assembly(run.packed.sources, hold_uncited=self.spec.verify)
        for check in [] if abstained else kept:
            out.add(check)
        for stage in ("retrieve", "rerank", "generate", "verify"):
            run.timings.setdefault(stage, 0.0)
        run.add_time("total", run.started)
        costs = tuple(model_costs(run.usage, self.prices))
        return Answer(
            question=run.question,
            text=self.spec.abstain_text if abstained else out.text,
            citations=() if abstained else out.citations(),
            model=run.model,
            usage=run.usage,
            cost_usd=sum(c.cost_usd for c in costs),
            latency_ms={stage: round(ms, 3) for stage, ms in run.timings.items()},
            abstained=abstained,
            unsupported=tuple(unsupported),
            retried=run.retried,
            sources=tuple(run.packed.sources.values()),
            costs=costs,
            flagged_sources=run.flagged,
        )

    def _abstains(self, text: str) -> bool:
        said, abstain = _words(text), _words(self.spec.abstain_text)
        return not said or said[: len(abstain)] == abstain

    def _claims(self, text: str) -> list[CitedSentence]:
        """The sentences of a reply, without an abstention the model may have added."""
        return [s for s in split_answer(text) if not self._abstains(s.body)]

    def _options(self, run: Retrieved) -> ChatOptions:
        return ChatOptions(temperature=0.0, max_tokens=self.max_output_tokens, context=run.context)


def _words(text: str) -> list[str]:
    return _WORD.findall(strip_citations(text).casefold())


async def answer_questions(answerer: Answerer, questions: Sequence[str]) -> list[Answer]:
    """Answer each question in turn (for the demo and scripts; ``App.answerer()`` wires one)."""
    return [await answerer.answer(q) for q in questions]
