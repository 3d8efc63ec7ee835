"""The keyword analyzer: text -> stemmed terms, shared by indexing and querying.

Stemming and stop words happen here rather than in FTS5's built-in ``porter`` tokenizer so that
every store backend (SQLite FTS5, PostgreSQL) indexes exactly the same terms, and the analyzer
can be tested on its own. Snowball English (PyStemmer) measured better than Porter on SciFact.
``contextual_query`` says what a chat's follow-up question is to be searched (and read) as.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import Stemmer

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)

# A short list: long stop lists hurt recall on technical text ("it", "us", "may" are content words
# often enough); these are the ones that only cost time.
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "which",
        "while",
        "who",
        "will",
        "with",
        "you",
        "your",
    ]
)


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def _fold(text: str) -> str:
    # Strip accents so "café" matches "cafe"; casefold handles ß and friends.
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def terms(text: str) -> list[str]:
    """Stemmed, folded terms of ``text`` without stop words, in order (duplicates kept)."""
    words = [w for w in _TOKEN.findall(_fold(text)) if w not in STOP_WORDS and len(w) < 64]
    return list(_stemmer().stemWords(words))


def query_terms(text: str) -> list[str]:
    """Distinct terms of a query, in first-seen order."""
    return list(dict.fromkeys(terms(text)))


# Above this many terms a query is a passage (an argument, an abstract, a pasted paragraph).
LONG_QUERY_TERMS = 32


def keyword_terms(text: str) -> list[str]:
    """The terms a keyword search weighs: a passage's terms as often as they occur (a paragraph
    repeats what it is about), a question's once each (in a short question a repeat is mostly two
    words sharing a stem). Measured with ``bench/bm25_parity.py``: counting repeats gains +0.045
    nDCG@10 with paragraphs as queries and loses up to 0.006 on questions."""
    found = terms(text)
    return found if len(found) > LONG_QUERY_TERMS else list(dict.fromkeys(found))


_FOLLOW_UP = re.compile(
    r"^\s*(and|also|but|so|what about|how about|what else|why|why not|which one|how so)\b|"
    r"\b(it|its|it's|they|them|their|this|that|these|those|he|she|him|her|there|the same|one)\b",
    re.IGNORECASE,
)


def contextual_query(previous: str, question: str) -> str:
    """What to search for in a chat: a follow-up ("and for managers?", "why did it fail?") is
    searched together with the previous question; a self-contained question alone."""
    if previous and (_FOLLOW_UP.search(question) or len(question.split()) <= 3):
        return f"{previous} {question}"
    return question
