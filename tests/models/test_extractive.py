"""ExtractiveModel: answers from the prompt's sources by quoting and citing the best sentences."""

from __future__ import annotations

import asyncio

import pytest

from stanchion.answer.prompt import (
    Source,
    grounded,
    parse_prompt,
    source_block,
    split_answer,
    system_prompt,
    user_prompt,
)
from stanchion.answer.verify import Assembly, Verifier
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.models.base import ChatModel
from stanchion.models.extractive import ExtractiveModel, ScoredSentence, source_pieces
from stanchion.types import Chunk, Grounding, GroundingSource, Hit, Message

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


# A long annual report, packed as several chunks of one document: one passage answers, the others
# share the question's words ("Boeing", "chief", "officer") but not its subject.
REPORT = [
    (
        "Annual report 2022",
        "The Boeing Company Subsidiaries are listed in Exhibit 21 of this report. "
        "Boeing officers are elected annually by the Board of Directors. "
        "Prior to joining Boeing, Ms. Chen served as chief operating officer of a regional airline.",
    ),
    (
        "Annual report 2022",
        "Brian J. West has served as Executive Vice President and Chief Financial Officer of Boeing since "
        "August 2022. He leads the company's financial strategy, treasury, tax and accounting. "
        "Before that he was chief financial officer of Refinitiv.",
    ),
    (
        "Annual report 2022",
        "Boeing's chief executive officer and chief financial officer certify this report under Section 302. "
        "The chief information officer of Boeing reports to the chief executive. "
        "Boeing Capital provides financing to customers of the company.",
    ),
]


def report_sources() -> list[GroundingSource]:
    return [GroundingSource(n, title, text) for n, (title, text) in enumerate(REPORT, start=1)]


class TestPassageSelection:
    def test_answers_from_the_answering_passage_only(self, model: ExtractiveModel) -> None:
        """A long document's unrelated sentences that share the question's words are not stitched in:
        every quoted sentence comes from the passage that answers."""
        chosen = model.select("Who is the chief financial officer of Boeing?", report_sources())
        assert chosen and {s.source for s in chosen} == {2}
        assert any("Brian J. West" in s.text for s in chosen)
        assert not any("Prior to joining Boeing" in s.text or "Subsidiaries" in s.text for s in chosen)

    def test_a_contiguous_span_is_kept_together(self, model: ExtractiveModel) -> None:
        """Sentences taken around the best one are adjacent in its passage and listed in order."""
        chosen = model.select("Who is the chief financial officer of Boeing?", report_sources())
        positions = [s.position for s in chosen]
        assert positions == list(range(positions[0], positions[0] + len(positions)))


NETWORK = GroundingSource(
    1,
    "Configuring the Network",
    "A static configuration must indicate network settings in a fixed manner. It includes at least the "
    "IP address and subnet mask. A router connecting to the exterior is specified as a gateway.\n\n"
    "Example 8.2. Static configuration\n\n"
    "auto enp0s31f6\n"
    "iface enp0s31f6 inet static\n"
    "  address 192.168.0.3/24\n"
    "  gateway 192.168.0.1\n\n"
    "It is possible to associate several IP addresses to a single interface.",
)
STATIC_BLOCK = "auto enp0s31f6\niface enp0s31f6 inet static\n  address 192.168.0.3/24\n  gateway 192.168.0.1"
NFS = GroundingSource(
    2,
    "NFS server",
    "Once /etc/exports has been edited, the NFS server must be restarted with either of the following "
    "commands:\n\n# exportfs -ra\n\n# systemctl start nfs-kernel-server\n\nNFS clients mount shares with mount.",
)


class TestCodeBlocks:
    def test_a_code_block_is_quoted_whole_as_a_fenced_block(self, model: ExtractiveModel) -> None:
        """A how-to question gets the configuration block with every line and its indentation, fenced
        and cited, never cut at its line breaks or at the full stops of its addresses."""
        question = "How do I configure a static IP address?"
        messages = [Message("user", question, grounding=Grounding(question, (NETWORK,), ABSTAIN))]
        text = asyncio.run(model.complete(messages)).text
        assert f"```\n{STATIC_BLOCK}\n```\n[1]" in text

    def test_the_command_comes_with_the_sentence_that_introduces_it(self, model: ExtractiveModel) -> None:
        """'... restarted with either of the following commands:' is quoted with the command after it."""
        chosen = model.select("How do I restart the NFS server after editing /etc/exports?", [NFS])
        texts = [s.text for s in chosen]
        assert any(t.endswith("following commands:") for t in texts)
        assert "# exportfs -ra" in texts

    def test_a_quoted_code_block_verifies_and_keeps_its_lines(
        self, model: ExtractiveModel, embedder: SentenceTransformerEmbedder
    ) -> None:
        """Through split_answer, verification and assembly, the block stays one cited piece with its
        line breaks; the sentence after it is still its own."""
        question = "How do I configure a static IP address?"
        messages = [Message("user", question, grounding=Grounding(question, (NETWORK,), ABSTAIN))]
        text = asyncio.run(model.complete(messages)).text
        sentences = split_answer(text)
        code = [s for s in sentences if s.text.startswith("```")]
        assert len(code) == 1 and code[0].numbers == (1,)
        checks = Verifier(embedder).check(sentences, {1: NETWORK.text})
        assert all(c.supported for c in checks)
        out = Assembly({1: Source(1, _hit(NETWORK), NETWORK.text)}, hold_uncited=True)
        for check in checks:
            out.add(check)
        assert f"```\n{STATIC_BLOCK}\n```\n[1]" in out.text


def _hit(source: GroundingSource) -> Hit:
    return Hit(Chunk(id="c1", document_id="d1", text=source.text, position=0), score=1.0, rank=1)


def test_a_sentence_that_refers_back_comes_with_the_one_before(model: ExtractiveModel) -> None:
    """'This command ...' answers only with the sentence that names the command."""
    upgrades = GroundingSource(
        1,
        "Regular upgrades",
        "Regular upgrades are recommended, because they include the latest security updates. "
        "To upgrade, use apt upgrade after apt update. "
        "This command looks for installed packages which can be upgraded without removing any packages.\n\n"
        "Mirrors are listed in sources.list.",
    )
    chosen = model.select("How do I upgrade installed packages without removing any packages?", [upgrades])
    texts = [s.text for s in chosen]
    assert texts[-1].startswith("This command") and "To upgrade, use apt upgrade after apt update." in texts


POSTMORTEM = GroundingSource(
    1,
    "[Postmortem] INC-7: dispatch API outage",
    "Summary of the postmortem for INC-7.\n\n"
    "What happened\n"
    "On Tuesday, March 3, the dispatch API returned errors for all hubs for 42 minutes.\n\n"
    "Root cause\n"
    "Release 2.14 included a refactor of the deploy templates. The connection pool size was rendered\n"
    "as 5 instead of 50, so every pod ran out of database connections within minutes.\n",
)
POLICY = GroundingSource(
    2,
    "Incident policy",
    "Every SEV1 gets a blameless postmortem within five days. Example: INC-7 (dispatch API outage, March 3).",
)


def _quoted_exactly(chosen: list[ScoredSentence], sources: list[GroundingSource]) -> bool:
    texts = {s.number: " ".join(s.text.split()) for s in sources}
    return all(" ".join(c.text.split()) in texts[c.source] for c in chosen)


class TestWhatAnAnswerIs:
    def test_a_cause_question_gets_the_cause_not_a_reference_line(self, model: ExtractiveModel) -> None:
        """'Example: INC-7 (...)' names the incident and says nothing of it; the sentence under
        'Root cause' that states the cause is quoted, exactly as the source has it."""
        sources = [POSTMORTEM, POLICY]
        chosen = model.select("What caused the dispatch API outage on March 3?", sources)
        texts = " ".join(s.text for s in chosen)
        assert "so every pod ran out of database connections" in texts
        assert "Example: INC-7" not in texts
        assert _quoted_exactly(chosen, sources)

    def test_a_heading_is_never_an_answer(self) -> None:
        """A short line of its own is a heading: no candidate, but read with what follows it."""
        pieces = source_pieces(POSTMORTEM.text)
        headings = [p.text for p in pieces if p.heading]
        assert headings == ["What happened", "Root cause"]
        cause = next(p for p in pieces if p.text.startswith("Release 2.14"))
        assert cause.reading.startswith("Root cause: ")
        # The end of a hard-wrapped line ("... was rendered") is no heading.
        assert not any(p.heading for p in pieces if "rendered" in p.text)

    def test_a_list_intro_comes_with_its_items_in_order(self, model: ExtractiveModel) -> None:
        """'... for three reasons:' alone answers nothing: the reasons follow it, one a line."""
        migration = GroundingSource(
            1,
            "Tracker database",
            "The tracker ran on MongoDB 4.4. We decided to migrate to PostgreSQL for three reasons:\n\n"
            "1. Duplicate and out-of-order status events.\n"
            "2. Geofence queries ran in application code.\n"
            "3. MongoDB 4.4 reached its end of life.\n\n"
            "The migration finished in June.",
        )
        question = "Why did we migrate the tracker database?"
        text = asyncio.run(
            model.complete([Message("user", question, grounding=Grounding(question, (migration,), ABSTAIN))])
        ).text
        assert "three reasons: [1]\n1. Duplicate and out-of-order status events. [1]\n2. Geofence" in text
        assert "\n3. MongoDB 4.4 reached its end of life. [1]" in text

    def test_a_sentence_with_a_pronoun_is_read_with_the_one_before(self, model: ExtractiveModel) -> None:
        """'To modify it, use ...' is about what the sentence before names, and is quoted with it."""
        clock = GroundingSource(
            1,
            "Time zone",
            "The timezone is a configuration item for the tzdata package. "
            "To modify it, use the dpkg-reconfigure tzdata command.\n\n"
            "The hardware clock keeps universal time.",
        )
        pieces = source_pieces(clock.text)
        assert pieces[1].reading == f"{pieces[0].text} {pieces[1].text}"
        chosen = model.select("How do I change the timezone?", [clock])
        assert [s.position for s in chosen] == [0, 1]
