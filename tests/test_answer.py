"""The answer pipeline: prompt format, packing, verification, retry, citations, streaming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from stanchion.answer import Answer, Answerer, answer_questions, contextual_query
from stanchion.answer.answerer import RETRY_RESERVE
from stanchion.answer.prompt import (
    CitedSentence,
    edge_order,
    pack,
    parse_prompt,
    prompt_tokens,
    render_sentence,
    retry_prompt,
    source_block,
    split_answer,
    system_prompt,
    user_prompt,
)
from stanchion.answer.verify import Verifier, is_connective
from stanchion.app import App, build
from stanchion.cli.answer import register
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.ingest.tokens import tokenizer_for
from stanchion.models.base import Capabilities, ChatOptions
from stanchion.models.extractive import ExtractiveModel
from stanchion.spec import AnswerSpec, IndexSpec, PriceSpec, SourceSpec, Spec
from stanchion.types import Chunk, Completion, Grounding, Hit, Message, StreamEvent, Usage

DOCS = {
    "leave.md": "# Parental leave\n\nEvery parent gets 16 weeks of fully paid parental leave. Leave can be "
    "split into two blocks of eight weeks. Requests go to HR at least 30 days before the start date.\n",
    "travel.md": "# Travel policy\n\nHotels are capped at $225 per night in the US. Book flights through "
    "the travel desk. Economy class is the default for flights under six hours.\n",
    "security.md": "# Security\n\nLaptops must use full-disk encryption. Passwords are rotated every 90 "
    "days. Report phishing to the security team within one hour.\n",
    "expenses.md": "# Expenses\n\nThe CFO approves expenses above $5,000. Managers approve expenses up to "
    "$500, and department directors up to $5,000.\n",
    "cafeteria.md": "# Cafeteria\n\nThe cafeteria serves lunch from noon until two. Vegetarian dishes are "
    "available every day.\n",
}
LEAVE = "Every parent gets 16 weeks of fully paid parental leave."
HOTEL = "Hotels are capped at $225 per night in the US."
CHEESE = "The moon is made of green cheese."


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder) -> Iterator[App]:
    root = tmp_path_factory.mktemp("answer-corpus")
    (root / "docs").mkdir()
    for name, text in DOCS.items():
        (root / "docs" / name).write_text(text, encoding="utf-8")
    spec = Spec(
        index=IndexSpec(path=str(root / "index.db")),
        sources=[SourceSpec(name="docs", type="markdown", path="docs")],
        base_dir=root,
    )
    stanchion = build(spec, embedder=embedder)
    stanchion.pipeline.run()
    yield stanchion
    stanchion.close()


class PromptModel:
    """A ChatModel whose reply is a function of the parsed prompt and the call index."""

    def __init__(self, reply: Callable[[Grounding, int], str], *, extractive: bool = False) -> None:
        self.reply = reply
        self.capabilities = Capabilities(extractive=extractive)
        self.calls: list[list[Message]] = []

    @property
    def name(self) -> str:
        return "prompt-model"

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        self.calls.append(list(messages))
        parsed = parse_prompt(messages)
        assert parsed is not None
        return Completion(self.reply(parsed, len(self.calls) - 1), self.name, Usage(1000, 100))

    async def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        completion = await self.complete(messages, options)
        for i, word in enumerate(completion.text.split(" ")):
            yield StreamEvent(text=word if i == 0 else f" {word}")
        yield StreamEvent(usage=completion.usage, finish_reason="stop", model=self.name)


def number(parsed: Grounding, title: str) -> int:
    return next(s.number for s in parsed.sources if s.title == title)


def answerer(app: App, model: object, **spec: object) -> Answerer:
    return Answerer(
        app.retriever,
        model,  # type: ignore[arg-type]
        spec=AnswerSpec(**spec),  # type: ignore[arg-type]
        embedder=app.embedder,
        context_tokens=4000,
        counter=app.tokenizer,
    )


def ask(answerer: Answerer, question: str) -> Answer:
    return asyncio.run(answerer.answer(question))


def hit(cid: str, text: str, rank: int, title: str = "") -> Hit:
    chunk = Chunk(id=cid, document_id=f"d:{cid}", text=text, position=0, metadata={"title": title})
    return Hit(chunk=chunk, score=1.0 / rank, rank=rank)


class TestPromptFormat:
    def test_prompt_round_trip(self) -> None:
        """What the prompt builder writes, parse_prompt reads back; markup in a chunk is defused."""
        blocks = [source_block(1, 'The "A" doc', "alpha </source> beta"), source_block(2, "", "gamma")]
        messages = [Message("system", system_prompt("Nope.")), Message("user", user_prompt(blocks, "Why?"))]
        parsed = parse_prompt(messages)
        assert parsed is not None
        assert parsed.question == "Why?" and parsed.abstain_text == "Nope."
        assert [(s.number, s.title) for s in parsed.sources] == [(1, "The 'A' doc"), (2, "")]
        assert "beta" in parsed.sources[0].text and parsed.sources[1].text == "gamma"

    def test_citation_forms(self) -> None:
        """[n], [1, 2], [1][2], ranges, and a marker after the full stop all parse."""
        sentences = split_answer("Alpha holds. [1] Beta holds [1, 2]. Gamma holds[2][3]. Delta holds [1-3].")
        assert [s.numbers for s in sentences] == [(1,), (1, 2), (2, 3), (1, 2, 3)]
        assert [s.body for s in sentences][:2] == ["Alpha holds.", "Beta holds."]

    def test_renumbering_rewrites_and_drops_unknown(self) -> None:
        """Markers are rewritten through the map; numbers not in it disappear."""
        sentence = CitedSentence("Beta holds [3, 9][1].", "Beta holds.", (3, 9, 1))
        assert render_sentence(sentence, {3: 1, 1: 2}) == "Beta holds [1][2]."

    def test_a_fenced_code_block_is_one_cited_piece(self) -> None:
        """A code block is one piece whatever full stops and line breaks it holds; it is cited by the
        markers after its closing fence (``a[0]`` inside it is code), and keeps its lines when rendered."""
        code = "```\n$ make deb-pkg LOCALVERSION=-falcot. Then\n  echo a[0]\n```"
        sentences = split_answer(f"Build it as follows: [1]\n\n{code}\n[2]\n\nDone now. [1]")
        assert [s.numbers for s in sentences] == [(1,), (2,), (1,)]
        assert sentences[1].body == "$ make deb-pkg LOCALVERSION=-falcot. Then echo a[0]"
        assert sentences[1].separator == sentences[2].separator == "\n\n"
        assert render_sentence(sentences[1], {2: 1}) == f"{code}\n[1]"

    def test_edge_order(self) -> None:
        """Best first, second best last, weakest in the middle."""
        hits = [hit(str(i), "t", i) for i in range(1, 7)]
        assert [h.chunk.id for h in edge_order(hits)] == ["1", "3", "5", "6", "4", "2"]


class TestPack:
    COUNTER = tokenizer_for("all-MiniLM-L6-v2")

    def test_budget_is_respected(self) -> None:
        """A small budget packs fewer sources, and the prompt stays within it."""
        long = " ".join(f"Sentence number {i} says something about policy." for i in range(40))
        hits = [hit(str(i), f"{i} {long}", i) for i in range(1, 7)]
        packed = pack(
            "What does the policy say?", hits, k=6, budget=700, counter=self.COUNTER, abstain_text="No."
        )
        assert 1 <= len(packed.sources) < 6
        assert prompt_tokens(packed.messages, self.COUNTER) <= 700

    def test_near_duplicates_are_packed_once(self) -> None:
        """A chunk that repeats a better one in nearly the same words is skipped."""
        text = "Hotels are capped at $225 per night in the US. Book flights through the travel desk."
        hits = [hit("a", text, 1), hit("b", text.replace("Book", "Please book"), 2), hit("c", LEAVE, 3)]
        packed = pack("hotel?", hits, k=6, budget=4000, counter=self.COUNTER, abstain_text="No.")
        assert sorted(s.hit.chunk.id for s in packed.sources.values()) == ["a", "c"]

    def test_lost_in_the_middle_numbering(self) -> None:
        """The best source is [1], the second best is [n]."""
        texts = [LEAVE, HOTEL, CHEESE, DOCS["security.md"], DOCS["cafeteria.md"]]
        hits = [hit(c, t, r) for r, (c, t) in enumerate(zip("abcde", texts, strict=True), 1)]
        packed = pack("q", hits, k=5, budget=4000, counter=self.COUNTER, abstain_text="No.")
        assert [packed.sources[n].hit.chunk.id for n in sorted(packed.sources)] == ["a", "c", "e", "d", "b"]

    def test_the_prompt_carries_its_grounding(self) -> None:
        """The packed prompt and its retry carry, on the user message, what parse_prompt reads from
        their text: the sources, question and abstain text in structure, for the extractive model."""
        hits = [hit("a", HOTEL, 1), hit("b", LEAVE, 2)]
        packed = pack("hotel?", hits, k=5, budget=4000, counter=self.COUNTER, abstain_text="No.")
        retry = retry_prompt(packed, "hotel?", ["Made up."], budget=4000, counter=self.COUNTER)
        for messages in (packed.messages, retry):
            grounding = messages[-1].grounding
            assert grounding is not None and grounding == parse_prompt(messages)
            assert [s.number for s in grounding.sources] == [1, 2] and grounding.abstain_text == "No."
        assert retry[-1].grounding is not None and "Made up." in retry[-1].grounding.correction


@pytest.fixture(scope="module")
def verifier(embedder: SentenceTransformerEmbedder) -> Verifier:
    return Verifier(embedder)


class TestVerifier:
    def check(self, verifier: Verifier, answer: str) -> list[bool]:
        sources = {1: "Travel policy\n" + DOCS["travel.md"], 2: "Parental leave\n" + DOCS["leave.md"]}
        return [c.supported for c in verifier.check(split_answer(answer), sources)]

    def test_quotes_and_paraphrases_pass(self, verifier: Verifier) -> None:
        """A verbatim sentence and a faithful paraphrase are supported."""
        assert self.check(
            verifier, f"{HOTEL} [1] In the US, hotel costs are capped at $225 per night [1]."
        ) == [
            True,
            True,
        ]

    def test_wrong_source_number_or_unrelated_claim_fails(self, verifier: Verifier) -> None:
        """The right fact cited to the wrong source, a changed figure, and a made-up claim all fail."""
        answer = f"{HOTEL} [2] Hotels are capped at $300 per night in the US [1]. {CHEESE} [1]"
        assert self.check(verifier, answer) == [False, False, False]

    def test_uncited_sentences(self, verifier: Verifier) -> None:
        """An uncited connective passes; an uncited claim does not."""
        assert self.check(verifier, f"Sure, here is what I found. {HOTEL}") == [True, False]
        assert is_connective("Hope this helps!") and not is_connective("The cap is $225.")


class TestAnswerer:
    def test_extractive_answer_cites_the_right_source(self, app: App) -> None:
        """The fact is in the answer, cited, and the citation points to its document."""
        answer = ask(
            answerer(app, ExtractiveModel(app.embedder)), "How many weeks of parental leave do parents get?"
        )
        assert LEAVE in answer.text and not answer.abstained
        assert answer.citations[0].number == 1 and answer.citations[0].title == "Parental leave"
        assert answer.citations[0].path.endswith("leave.md") and "16 weeks" in answer.citations[0].snippet
        assert set(answer.latency_ms) == {"retrieve", "rerank", "generate", "verify", "total"}
        assert answer.cost_usd == 0.0 and answer.model == "extractive"

    def test_retrieved_sources_are_handed_to_answer_not_fetched_again(
        self, app: App, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``retrieve`` (the pipeline's retrieve place) packs the sources a stage can inspect;
        ``answer(retrieved=...)`` answers from exactly those, without searching again."""
        chat = answerer(app, ExtractiveModel(app.embedder))
        question = "How many weeks of parental leave do parents get?"
        retrieved = asyncio.run(chat.retrieve(question))
        assert any("16 weeks" in source.text for source in retrieved.packed.sources.values())
        searches: list[str] = []
        real = chat.retriever.search
        monkeypatch.setattr(
            chat.retriever, "search", lambda query, **kw: searches.append(query) or real(query, **kw)
        )
        answer = asyncio.run(chat.answer(question, retrieved=retrieved))
        assert searches == [] and LEAVE in answer.text
        assert answer.citations[0].title == "Parental leave"

    def test_abstains_on_an_unanswerable_question(self, app: App) -> None:
        """Nothing relevant: the abstain text, no citations."""
        answer = ask(
            answerer(app, ExtractiveModel(app.embedder)), "What is the boiling point of liquid nitrogen?"
        )
        assert answer.abstained and answer.text == AnswerSpec().abstain_text and answer.citations == ()

    def test_citations_renumbered_by_first_use(self, app: App) -> None:
        """Only cited sources appear, numbered in order of first citation in the final text."""
        model = PromptModel(
            lambda p, _: (
                f"{HOTEL} [{number(p, 'Travel policy')}] {LEAVE} "
                f"[{number(p, 'Parental leave')}, {number(p, 'Travel policy')}]"
            )
        )
        answer = ask(answerer(app, model), "What are the hotel cap and the parental leave?")
        assert answer.text == f"{HOTEL} [1] {LEAVE} [2][1]"
        assert [(c.number, c.title) for c in answer.citations] == [
            (1, "Travel policy"),
            (2, "Parental leave"),
        ]

    def test_unsupported_sentence_retried_once_then_dropped(self, app: App) -> None:
        """One corrective retry names the sentence; still unsupported, it is dropped."""
        model = PromptModel(lambda p, _: f"{HOTEL} [{number(p, 'Travel policy')}] {CHEESE} [1]")
        answer = ask(answerer(app, model), "What is the hotel cap?")
        assert len(model.calls) == 2
        assert CHEESE in model.calls[1][-1].content and "<correction-" in model.calls[1][-1].content
        assert answer.text == f"{HOTEL} [1]" and answer.unsupported == (CHEESE,) and answer.retried

    def test_unsupported_sentence_abstains_when_the_spec_says_so(self, app: App) -> None:
        """With on_unsupported=abstain, a sentence still unsupported after the retry voids the answer."""
        model = PromptModel(lambda p, _: f"{HOTEL} [{number(p, 'Travel policy')}] {CHEESE} [1]")
        answer = ask(answerer(app, model, on_unsupported="abstain"), "What is the hotel cap?")
        assert len(model.calls) == 2 and answer.abstained and answer.unsupported == (CHEESE,)

    def test_a_corrected_retry_is_used(self, app: App) -> None:
        """When the retry fixes the answer, its text is the answer."""
        model = PromptModel(
            lambda p, i: f"{HOTEL} [{number(p, 'Travel policy')}]" + ("" if i else f" {CHEESE} [1]")
        )
        answer = ask(answerer(app, model), "What is the hotel cap?")
        assert len(model.calls) == 2 and answer.text == f"{HOTEL} [1]" and answer.unsupported == ()

    def test_extractive_models_are_not_retried(self, app: App) -> None:
        """A model that copies its sources gets no retry; the unsupported sentence is dropped."""
        model = PromptModel(
            lambda p, _: f"{HOTEL} [{number(p, 'Travel policy')}] {CHEESE} [1]", extractive=True
        )
        answer = ask(answerer(app, model), "What is the hotel cap?")
        assert len(model.calls) == 1 and answer.unsupported == (CHEESE,)

    def test_context_budget(self, app: App) -> None:
        """Prompt (less the retry reserve) and retry prompt fit the budget, counted the same way."""
        model = PromptModel(lambda p, _: f"{CHEESE} [1]")
        small = Answerer(
            app.retriever,
            model,
            spec=AnswerSpec(k=5),
            embedder=app.embedder,
            context_tokens=400,
            counter=app.tokenizer,
        )
        answer = ask(small, "What are the policies on travel, leave and expenses?")
        first, retry = (prompt_tokens(call, app.tokenizer) for call in model.calls)
        assert first <= 400 - RETRY_RESERVE and retry <= 400
        assert len(answer.sources) < 5 and answer.abstained

    def test_price_gives_cost(self, app: App) -> None:
        """Usage priced per million tokens."""
        model = PromptModel(lambda p, _: f"{HOTEL} [{number(p, 'Travel policy')}]")
        priced = answerer(app, model)
        priced.prices = {model.name: PriceSpec(input_per_mtok=2.0, output_per_mtok=10.0)}
        answer = ask(priced, "What is the hotel cap?")
        assert answer.cost_usd == pytest.approx((1000 * 2.0 + 100 * 10.0) / 1e6)

    def test_stream_sends_only_verified_text(self, app: App) -> None:
        """Streamed deltas make up the final text; the unsupported sentence never appears."""
        model = PromptModel(
            lambda p, i: (
                f"Here is the answer: {HOTEL} [{number(p, 'Travel policy')}] {CHEESE} [1]"
                if i == 0
                else f"{LEAVE} [{number(p, 'Parental leave')}]"
            )
        )

        async def collect() -> tuple[str, Answer]:
            text, final = "", None
            async for event in answerer(app, model).stream("What is the hotel cap?"):
                text += event.text
                final = event.answer or final
            assert final is not None
            return text, final

        text, answer = asyncio.run(collect())
        assert text == answer.text == f"Here is the answer: {HOTEL} [1] {LEAVE} [2]"
        assert CHEESE not in text and answer.unsupported == (CHEESE,) and len(model.calls) == 2


class TestWiring:
    def test_answerer_for_default_spec_is_extractive(self, app: App) -> None:
        """The default route answers with the extractive model, within the default model's budget."""
        answers = asyncio.run(answer_questions(app.answerer(), ["Who approves expenses above $5,000?"]))
        assert "CFO" in answers[0].text and answers[0].model == "extractive"
        assert app.answerer().context_tokens == 8192 - 512

    def test_follow_up_questions_carry_the_previous_one(self) -> None:
        """A follow-up is searched with the previous question; a new question alone."""
        assert (
            contextual_query("What is the hotel cap?", "And in New York?")
            == "What is the hotel cap? And in New York?"
        )
        assert contextual_query("What is the hotel cap?", "Who approves expenses above $5,000?") == (
            "Who approves expenses above $5,000?"
        )
        assert contextual_query("", "Why?") == "Why?"


@pytest.fixture(scope="module")
def spec_file(app: App) -> Path:
    """A stanchion.yaml over the test corpus, whose index the ``app`` fixture already built."""
    root = app.spec.base_dir
    spec = root / "stanchion.yaml"
    spec.write_text(
        f"index: {{path: {root / 'index.db'}}}\nsources:\n  - {{name: docs, type: markdown, path: docs}}\n",
        encoding="utf-8",
    )
    return spec


class TestCommands:
    @staticmethod
    def cli() -> typer.Typer:
        cli, evals = typer.Typer(), typer.Typer()
        cli.add_typer(evals, name="eval")
        register(cli, evals)
        return cli

    def test_ask_json(self, spec_file: Path) -> None:
        """`ask --json` prints exactly the documented keys, with the cited fact."""
        result = CliRunner().invoke(
            self.cli(), ["ask", "Who approves expenses above $5,000?", "--spec", str(spec_file), "--json"]
        )
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        assert list(body) == [
            "answer", "citations", "model", "usage", "cost_usd", "models", "latency_ms", "abstained"
        ]  # fmt: skip
        assert "CFO" in body["answer"] and body["citations"][0]["title"] == "Expenses"
        assert body["abstained"] is False

    def test_ask_json_says_when_it_abstained(self, spec_file: Path) -> None:
        """An abstention is a field, not only the abstain text: `abstained` is true, nothing is cited."""
        result = CliRunner().invoke(
            self.cli(),
            ["ask", "What is the boiling point of liquid nitrogen?", "--spec", str(spec_file), "--json"],
        )
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        assert body["abstained"] is True and body["citations"] == []
        assert body["answer"] == AnswerSpec().abstain_text

    def test_chat_uses_the_previous_question_for_follow_ups(self, spec_file: Path) -> None:
        """Two turns, the second a follow-up, then exit; both answers are printed with sources."""
        result = CliRunner().invoke(
            self.cli(),
            ["chat", "--spec", str(spec_file)],
            input="How many weeks of parental leave do parents get?\nCan it be split?\nexit\n",
        )
        assert result.exit_code == 0, result.output
        assert "16 weeks" in result.output and "two blocks" in result.output
        assert result.output.count("Parental leave") >= 2

    def test_unknown_route_is_a_usage_error(self, spec_file: Path) -> None:
        """A route the spec does not define exits 2 and names it."""
        result = CliRunner().invoke(
            self.cli(), ["ask", "anything", "--spec", str(spec_file), "--route", "nope"]
        )
        assert result.exit_code == 2 and "nope" in result.output
