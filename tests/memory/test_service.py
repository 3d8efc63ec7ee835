"""Memory: deduplication, replacement with history, recall, and the model extractor."""

from __future__ import annotations

import asyncio
import json

import pytest

from stanchion.errors import SearchError, SpecError
from stanchion.memory import Candidate, LLMExtractor, Memory
from stanchion.models.base import Capabilities
from stanchion.testing.fake_chat import FakeChatModel
from stanchion.types import Message


def remember(memory: Memory, tenant: str, user: str, *said: str, source: str = "s1") -> list[str]:
    changes = asyncio.run(memory.remember(tenant, user, [Message("user", s) for s in said], source=source))
    return [c.action for c in changes]


class TestUpdates:
    def test_same_statement_updates_instead_of_adding(self, memory: Memory) -> None:
        """Saying the same thing again in a later session restates one memory."""
        assert remember(memory, "acme", "ann", "I love Python.") == ["added"]
        assert remember(memory, "acme", "ann", "I really love Python!", source="s2") == ["updated"]
        [only] = memory.store.memories("acme", "ann", include_history=True)
        assert (only.value, only.source, only.text) == ("Python", "s2", "I really love Python")

    def test_changed_preference_replaces_and_keeps_history(self, memory: Memory) -> None:
        """A new value for a slot is current; the old one stays as history."""
        remember(memory, "acme", "ann", "I love Python.")
        assert remember(memory, "acme", "ann", "Actually, I now prefer Rust.", source="s2") == ["superseded"]
        [current] = memory.store.memories("acme", "ann")
        assert current.value == "Rust"
        history = [m for m in memory.store.memories("acme", "ann", include_history=True) if not m.current]
        assert [(m.value, m.superseded_by) for m in history] == [("Python", current.id)]

    def test_negation_replaces_the_preference(self, memory: Memory) -> None:
        """'I no longer drink coffee' supersedes 'I love coffee'; recall finds the negation."""
        remember(memory, "acme", "ann", "I love coffee.")
        assert remember(memory, "acme", "ann", "I don't drink coffee anymore.") == ["superseded"]
        [top] = memory.recall("acme", "ann", "what does the user drink", k=1)
        assert top.negated and top.value == "coffee"

    def test_near_duplicate_text_in_another_slot_updates(self, memory: Memory) -> None:
        """The same statement under a different slot (another extractor's naming) is one memory."""
        memory.write("acme", "ann", [Candidate("fact", "fact:pet", "I have a dog named Rex", "Rex")])
        changes = memory.write(
            "acme", "ann", [Candidate("fact", "fact:dog", "I have a dog named Rex", "Rex")]
        )
        assert [c.action for c in changes] == ["updated"]
        assert [m.slot for m in memory.store.memories("acme", "ann", include_history=True)] == ["fact:pet"]

    def test_different_text_is_a_new_memory(self, memory: Memory) -> None:
        memory.write("acme", "ann", [Candidate("fact", "fact:pet", "I have a dog named Rex", "Rex")])
        changes = memory.write("acme", "ann", [Candidate("fact", "fact:home_city", "I live in Oslo", "Oslo")])
        assert [c.action for c in changes] == ["added"]


class TestRecall:
    def test_recall_ranks_the_needed_memory_first(self, memory: Memory) -> None:
        remember(memory, "acme", "ann", "I live in Berlin. I work at Siemens. I love Python.")
        [top] = memory.recall("acme", "ann", "Which city does the user live in?", k=1)
        assert top.slot == "fact:home_city"

    def test_recall_returns_current_memories_of_the_owner_only(self, memory: Memory) -> None:
        remember(memory, "acme", "ann", "I love Python.")
        remember(memory, "acme", "ann", "I now prefer Rust.")
        remember(memory, "acme", "bob", "I love Java.")
        remember(memory, "globex", "ann", "I love Haskell.")
        got = memory.recall("acme", "ann", "programming language", k=10)
        assert [m.value for m in got] == ["Rust"]

    def test_bad_arguments_are_refused(self, memory: Memory) -> None:
        with pytest.raises(SearchError, match="tenant and a user"):
            memory.recall("acme", "", "x")
        with pytest.raises(SearchError, match="k must be"):
            memory.recall("acme", "ann", "x", k=0)
        assert memory.recall("acme", "ann", "   ") == []


class TestLLMExtractor:
    def _model(self, answer: str) -> FakeChatModel:
        return FakeChatModel("json", [answer], capabilities=Capabilities(json_mode=True))

    def test_model_answer_becomes_slotted_candidates(self) -> None:
        """The model's JSON items become candidates in the same slot vocabulary; bad items are skipped."""
        answer = json.dumps(
            {
                "memories": [
                    {
                        "kind": "preference",
                        "slot": "programming_language",
                        "value": "Rust",
                        "text": "I use Rust",
                    },
                    {"kind": "fact", "slot": "fact:home_city", "value": "Oslo", "text": "I live in Oslo"},
                    {"kind": "opinion", "slot": "x", "value": "y"},
                    "not an object",
                ]
            }
        )
        model = self._model(answer)
        found = asyncio.run(LLMExtractor(model).extract([Message("user", "I use Rust; I live in Oslo")]))
        assert [(c.kind, c.slot, c.value) for c in found] == [
            ("preference", "preference:programming_language", "Rust"),
            ("fact", "fact:home_city", "Oslo"),
        ]
        [call] = model.calls
        assert call.options is not None and call.options.json_mode
        assert "I use Rust; I live in Oslo" in call.messages[-1].content

    def test_not_json_gives_nothing(self) -> None:
        found = asyncio.run(LLMExtractor(self._model("sorry, no")).extract([Message("user", "I love tea")]))
        assert found == []

    def test_model_without_json_mode_is_refused(self) -> None:
        with pytest.raises(SpecError, match="no JSON mode"):
            LLMExtractor(FakeChatModel("plain", []))

    def test_llm_memories_update_rule_memories(self, memory: Memory) -> None:
        """Both extractors name slots alike: the model's statement supersedes the rules' one."""
        remember(memory, "acme", "ann", "I love Python.")
        answer = json.dumps(
            {
                "memories": [
                    {"kind": "preference", "slot": "programming_language", "value": "Go", "text": "Go now"}
                ]
            }
        )
        memory.extractor = LLMExtractor(self._model(answer))
        assert remember(memory, "acme", "ann", "these days it's Go for me") == ["superseded"]
