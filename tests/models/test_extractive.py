"""ExtractiveModel: answers from the prompt's sources by quoting and citing the best sentences."""

from __future__ import annotations

import asyncio

import pytest

from stanchion.answer.prompt import (
    grounded,
    parse_prompt,
    source_block,
    split_answer,
    system_prompt,
    user_prompt,
)
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.models.base import ChatModel
from stanchion.models.extractive import ExtractiveModel
from stanchion.types import Grounding, GroundingSource, Message

ABSTAIN = "Sorry, the sources do not say."
SOURCES = [
    (
        "Cafeteria",
        "The cafeteria on the second floor serves lunch from noon until two. "
        "Vegetarian dishes are available every day.",
    ),
    (
        "Parental leave",
        "Our parental leave policy was revised in January. "
        "Every parent gets 16 weeks of fully paid parental leave. "
        "Leave can be split into two blocks.",
    ),
    (
        "Travel policy",
        "Book flights through the travel desk. Hotels are capped at $225 per night in the US. "
        "Economy class is the default for flights under six hours.",
    ),
]


def prompt(question: str) -> list[Message]:
    blocks = [source_block(n, title, text) for n, (title, text) in enumerate(SOURCES, start=1)]
    return grounded(
        [Message("system", system_prompt(ABSTAIN)), Message("user", user_prompt(blocks, question))]
    )


@pytest.fixture(scope="module")
def model(embedder: SentenceTransformerEmbedder) -> ExtractiveModel:
    return ExtractiveModel(embedder)


class TestExtractiveModel:
    def test_is_a_chat_model(self, model: ExtractiveModel) -> None:
        """It satisfies the ChatModel protocol and says it is extractive."""
        assert isinstance(model, ChatModel)
        assert model.capabilities.extractive and model.name == "extractive"

    def test_quotes_the_fact_and_cites_its_source(self, model: ExtractiveModel) -> None:
        """The answer holds the sentence with the fact, followed by its source number."""
        completion = asyncio.run(model.complete(prompt("How many weeks of parental leave do parents get?")))
        assert "Every parent gets 16 weeks of fully paid parental leave. [2]" in completion.text
        assert all(s.numbers for s in split_answer(completion.text))

    def test_prefers_a_number_for_how_many_questions(self, model: ExtractiveModel) -> None:
        """For "how much", the sentence holding the figure comes out on top."""
        chosen = model.select("How much can I spend on a hotel per night?", prompt_sources())
        assert chosen and "$225" in max(chosen, key=lambda s: s.score).text

    def test_abstains_with_the_prompts_text(self, model: ExtractiveModel) -> None:
        """A question the sources do not touch gets the abstain text from the system prompt."""
        completion = asyncio.run(model.complete(prompt("What is the boiling point of liquid nitrogen?")))
        assert completion.text == ABSTAIN

    def test_limits_length(self, embedder: SentenceTransformerEmbedder) -> None:
        """At most max_sentences sentences come back, in source order."""
        small = ExtractiveModel(embedder, max_sentences=1)
        completion = asyncio.run(small.complete(prompt("What does the travel policy say about hotels?")))
        assert len(split_answer(completion.text)) == 1

    def test_stream_yields_sentences_then_usage(self, model: ExtractiveModel) -> None:
        """Deltas are whole sentences; together they are the completion; usage counts words."""
        messages = prompt("How many weeks of parental leave do parents get?")

        async def collect() -> list[tuple[str, int | None]]:
            return [
                (e.text, e.usage.output_tokens if e.usage else None) async for e in model.stream(messages)
            ]

        events = asyncio.run(collect())
        text = "".join(t for t, _ in events)
        assert text == asyncio.run(model.complete(messages)).text
        assert events[-1][1] == len(text.split())
        assert all(t.rstrip().endswith("]") for t, _ in events[:-1])

    def test_any_other_prompt_gets_an_abstention(self, model: ExtractiveModel) -> None:
        """Without sources in the answer format it cannot answer, and says so."""
        completion = asyncio.run(model.complete([Message("user", "Write me a poem.")]))
        assert "could not find" in completion.text
        assert completion.usage.input_tokens == 4

    def test_reads_the_grounding_not_the_prompt_text(self, model: ExtractiveModel) -> None:
        """The sources come from ``Message.grounding``: the prompt's text alone is not parsed, and a
        grounding on a message of any text is answered from."""
        question = "How many weeks of parental leave do parents get?"
        text_only = [Message(m.role, m.content) for m in prompt(question)]
        assert "could not find" in asyncio.run(model.complete(text_only)).text
        sources = tuple(GroundingSource(n, t, body) for n, (t, body) in enumerate(SOURCES, start=1))
        plain = Message("user", question, grounding=Grounding(question, sources, ABSTAIN))
        completion = asyncio.run(model.complete([plain]))
        assert "Every parent gets 16 weeks of fully paid parental leave. [2]" in completion.text


def prompt_sources() -> list[GroundingSource]:
    parsed = parse_prompt(prompt("x"))
    assert parsed is not None
    return list(parsed.sources)


def test_a_list_item_is_read_with_the_line_that_introduces_it(model: ExtractiveModel) -> None:
    """'Full truckload' is said once, above the list; the item it qualifies still wins the question,
    and the quote is the item alone, as the source has it."""
    rates = GroundingSource(
        1,
        "Rate update",
        "Summary of the main lanes (full truckload, FTL):\n"
        "- Rotterdam to Lyon: EUR 1,480 (was EUR 1,395), +6.1%\n"
        "- Rotterdam to Milano: EUR 1,920 (was EUR 1,840), +4.3%\n\n"
        "Less-than-truckload (LTL) Rotterdam to Lyon is now EUR 148 per pallet.",
    )
    chosen = model.select("What is the new full-truckload rate from Rotterdam to Lyon?", [rates])
    best = max(
        model.score("What is the new full-truckload rate from Rotterdam to Lyon?", [rates]),
        key=lambda s: s.score,
    )
    assert best.text == "- Rotterdam to Lyon: EUR 1,480 (was EUR 1,395), +6.1%"
    assert best.text in [s.text for s in chosen]
    assert not any("Milano" in s.text for s in chosen)
