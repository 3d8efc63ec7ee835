"""Sentence splitting of hard-wrapped text: wrapped prose joins, structure still breaks."""

from __future__ import annotations

from stanchion.core.sentences import split_sentences

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


def test_long_csv_rows_stay_apart_however_wide() -> None:
    header = "lane_id,origin,destination,mode,rate_eur,previous_rate_eur,change_pct,transit_days"
    rows = [
        header,
        "LT-001,Rotterdam NL,Lyon FR,FTL,1480,1395,6.1,2",
        "LT-002,Rotterdam NL,Milano IT,FTL,1920,1840,4.3,3",
    ]
    assert split_sentences("\n".join(rows)) == rows
    assert split_sentences("\r\n".join(rows)) == rows
    tabbed = [row.replace(",", "\t") for row in rows]
    assert split_sentences("\n".join(tabbed)) == tabbed


def test_prose_with_commas_still_wraps() -> None:
    text = (
        "We ship to Rotterdam, Lyon, Milano and Barcelona every week from the depot in\nAntwerpen, Belgium."
    )
    assert split_sentences(text) == [text]
