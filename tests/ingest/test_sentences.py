"""Sentence splitting of hard-wrapped text: wrapped prose joins, structure still breaks."""

from __future__ import annotations

from stanchion.ingest.sentences import split_sentences

MAIL = (
    "Your manager (Tomas) can approve up to $500 and your\n"
    "department director (for Engineering that's Marta Lindqvist) up to\n"
    "$5,000; above that it goes to Priya as well.\n"
    "1. Submit it in Ledgerline and attach the\n"
    "vendor quote.\n"
    "Nadia: ok\n"
    "Farah: thanks\n"
    "a | b | c\n"
    "d | e | f"
)


def test_wrapped_mail_lines_join_into_one_sentence() -> None:
    sentences = split_sentences(MAIL)
    assert sentences[0].endswith("up to\n$5,000; above that it goes to Priya as well.")
    assert sentences[1] == "1. Submit it in Ledgerline and attach the\nvendor quote."


def test_chat_lines_and_table_rows_stay_apart() -> None:
    assert split_sentences(MAIL)[2:] == ["Nadia: ok", "Farah: thanks", "a | b | c", "d | e | f"]


def test_short_unfinished_line_followed_by_a_capital_is_a_break() -> None:
    assert split_sentences("Agenda\nBudget review") == ["Agenda", "Budget review"]
