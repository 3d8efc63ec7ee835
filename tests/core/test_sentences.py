"""Sentence splitting of hard-wrapped text: wrapped prose joins, structure still breaks."""

from __future__ import annotations

from stanchion.core.sentences import is_code_block, quote_spans, split_sentences

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


class TestQuoteSpans:
    """What an answer quotes whole: sentences, and each code block from its first line to its last."""

    def test_an_indented_block_is_one_span_with_its_indentation(self) -> None:
        """A configuration block is not cut at its line breaks or at the dots of its addresses."""
        block = "auto eth0\niface eth0 inet static\n  address 192.168.0.3/24. Next\n  gateway 192.168.0.1"
        text = f"A static configuration. It is fixed.\n\n{block}\n\nIt ends here."
        assert [text[a:b] for a, b in quote_spans(text)] == [
            "A static configuration.",
            "It is fixed.",
            block,
            "It ends here.",
        ]

    def test_shell_prompt_lines_are_commands(self) -> None:
        """'$ cmd' and '# cmd' paragraphs are code; a Markdown-like '# Heading' is not."""
        text = "Run this:\n\n# echo 'done. Then' > /tmp/x\n\n# Heading\n\nProse. More."
        spans = [text[a:b] for a, b in quote_spans(text)]
        assert "# echo 'done. Then' > /tmp/x" in spans
        assert spans[-3:] == ["# Heading", "Prose.", "More."]
        assert is_code_block("$ ls -l\ntotal 0") and not is_code_block("# Heading")

    def test_a_fenced_block_is_one_span_blank_lines_and_all(self) -> None:
        """A fence holds to its closing fence, in an answer's text too (``indented_code=False``)."""
        fenced = "```\nx = 1. y = 2\n\nprint(x)\n```"
        text = f"Code:\n\n{fenced}\n[1]\n\nAfter."
        for indented in (True, False):
            assert fenced in [text[a:b] for a, b in quote_spans(text, indented_code=indented)]

    def test_indented_lines_in_an_answer_are_not_code(self) -> None:
        """A model's nested list is indented too: an answer's text is split as sentences."""
        text = "Steps:\n- one thing. [1]\n  - a detail. [2]"
        assert len(quote_spans(text, indented_code=False)) == len(split_sentences(text))
