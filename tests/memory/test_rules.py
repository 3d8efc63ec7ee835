"""The rule extractor: which first-person statements become which slotted memories."""

from __future__ import annotations

import asyncio

import pytest

from stanchion.memory import RuleExtractor
from stanchion.memory.rules import clauses, read_clause
from stanchion.types import Message

STATED = [
    ("My name is Alice Smith.", "fact:name", "Alice Smith", False),
    ("Call me Bob", "fact:name", "Bob", False),
    ("I live in Berlin", "fact:home_city", "Berlin", False),
    ("I moved to Lisbon last month", "fact:home_city", "Lisbon", False),
    ("I'm originally from Porto", "fact:hometown", "Porto", False),
    ("I work at Siemens", "fact:employer", "Siemens", False),
    ("I work as a nurse at St Mary's", "fact:job_title", "nurse", False),
    ("I'm a software engineer", "fact:job_title", "software engineer", False),
    ("I love Python", "preference:programming_language", "Python", False),
    ("Actually, I now prefer Rust over Python", "preference:programming_language", "Rust", False),
    ("I use Vim for everything", "preference:editor", "Vim", False),
    ("I hate hiking", "preference:item:hiking", "hiking", True),
    ("I no longer drink coffee", "preference:drink", "coffee", True),
    ("I don't drink coffee anymore", "preference:drink", "coffee", True),
    ("I stopped using Emacs", "preference:editor", "Emacs", True),
    ("I'm allergic to peanuts", "fact:allergy:peanuts", "peanuts", False),
    ("I'm no longer allergic to cats", "fact:allergy:cats", "cats", True),
    ("My favourite colour is teal", "preference:color", "teal", False),
    ("My dog's name is Rex", "fact:dog_name", "Rex", False),
    ("From now on, answer in French", "preference:response_language", "French", False),
    ("Please keep answers concise from now on", "preference:response_length", "concise", False),
    ("I'm vegetarian", "preference:diet", "vegetarian", False),
    ("Hi, I'm Jonas.", "fact:name", "Jonas", False),
    ("Please always book me an aisle seat.", "preference:seat", "aisle seat", False),
    ("I work for Hooli as part of the platform team", "fact:employer", "Hooli", False),
    ("I'm severely allergic to sesame, keep that in mind", "fact:allergy:sesame", "sesame", False),
    ("I always want an aisle seat", "preference:seat", "aisle seat", False),
    ("Actually, switch to English for answers", "preference:response_language", "English", False),
    ("I like tea too", "preference:drink", "tea", False),
]


@pytest.mark.parametrize(("said", "slot", "value", "negated"), STATED)
def test_statement_becomes_slotted_memory(said: str, slot: str, value: str, negated: bool) -> None:
    """Each first-person statement gives its slot, the thing it is about, and its polarity."""
    found = read_clause(said)
    assert found is not None, said
    assert (found.slot, found.value, found.negated) == (slot, value, negated)


@pytest.mark.parametrize(
    "said",
    [
        "Do you like Python?",
        "If I lived in Paris I would walk everywhere",
        "My colleague prefers Java",
        "I read the report yesterday",
        "My question is about refunds",
        "What is the refund policy",
        "The team uses Slack",
        "My colleague's favourite language is Scala.",
        "Hi, I'm tired",
        "I want a refund",
    ],
)
def test_questions_hypotheticals_and_others_give_nothing(said: str) -> None:
    """Only what the user states about themself is kept."""
    assert read_clause(said) is None


def test_clauses_split_on_a_new_first_person_statement() -> None:
    """'... and I ...' starts a second statement; 'and' inside a value does not."""
    assert clauses("I live in Berlin and I work at Siemens. I like rock and roll, I'm into jazz") == [
        "I live in Berlin",
        "I work at Siemens.",
        "I like rock and roll",
        "I'm into jazz",
    ]


def test_extractor_reads_user_turns_only_and_keeps_the_latest_per_slot() -> None:
    """Assistant turns are ignored; two statements of one slot in one conversation give the later."""
    messages = [
        Message("user", "I love Python."),
        Message("assistant", "I live in Paris and I love Java."),
        Message("user", "Hmm, actually I now prefer Rust. I'm allergic to shellfish."),
    ]
    found = asyncio.run(RuleExtractor().extract(messages))
    assert {(c.slot, c.value) for c in found} == {
        ("preference:programming_language", "Rust"),
        ("fact:allergy:shellfish", "shellfish"),
    }


def test_adverb_runs_and_long_clauses_are_read_in_linear_time() -> None:
    """'I really really ... zzz' once backtracked exponentially (2^n); 60 adverbs now return at once."""
    assert read_clause("I " + "really " * 60 + "zzz") is None
    assert read_clause("I really really love Python") is not None
    assert read_clause("I love Python " + "and more " * 40) is None  # over MAX_CLAUSE_CHARS: not read
