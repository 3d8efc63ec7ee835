"""Grounded answers with citations: the answer stage of the request pipeline.

``answerer`` retrieves, packs, generates, verifies and cites (see its docstring); ``prompt`` packs
the sources into the prompt and parses citations; ``verify`` checks every sentence against the
source it cites.
"""

from stanchion.answer.answerer import (
    Answer,
    Answerer,
    AnswerEvent,
    Citation,
    Source,
    TokenCounter,
    answer_questions,
    contextual_query,
)

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
