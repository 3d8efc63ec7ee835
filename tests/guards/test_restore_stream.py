"""Restoring a stream: any cut of the text restores as the whole does, and only a tail that could
still become an issued pseudonym is held back."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stanchion.guards.restore_stream import StreamRestorer
from stanchion.guards.vault import PseudonymVault, Span, Style, VaultScope

SECRET = b"stream-secret"


def filled(style: Style) -> PseudonymVault:
    """A vault holding Ann, Ann Bee (one name the prefix of another) and an e-mail."""
    v = PseudonymVault(VaultScope("acme", "c1"), style=style, secret=SECRET)
    text = "Ann, Ann Bee, ann@corp.io, Cy"
    v.mask(
        text,
        [Span(0, 3, "PERSON"), Span(5, 12, "PERSON"), Span(14, 25, "EMAIL_ADDRESS"), Span(27, 29, "PERSON")],
    )
    return v


def run(restorer: StreamRestorer, pieces: list[str]) -> tuple[str, list[str]]:
    out, held = [], []
    for piece in pieces:
        out.append(restorer.feed(piece))
        held.append(restorer.held)
    out.append(restorer.finish())
    return "".join(out), held


def cut(text: str, points: list[int]) -> list[str]:
    marks = sorted({min(p, len(text)) for p in points} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(marks)]


def model_output(v: PseudonymVault) -> st.SearchStrategy[str]:
    """Text a model may write: issued pseudonyms in every accepted spelling, their prefixes,
    near-misses and noise."""
    pseudonyms = sorted(v.fakes) + [f"<{k}>" for k in v.placeholder_keys]
    variants = pseudonyms + [f"< {k.lower()} >" for k in v.placeholder_keys] + ["<PERSON_9>", "[PERSON_1]"]
    pieces = st.sampled_from(variants + [p[: len(p) // 2] for p in variants] + ["<", " ", "é🙂", "e"])
    return st.lists(st.one_of(pieces, st.text(alphabet="<>_ aAnB1", max_size=3)), max_size=14).map("".join)


class TestStreamRestorer:
    def test_a_pseudonym_split_across_pieces(self) -> None:
        v = filled("placeholder")
        text, held = run(
            StreamRestorer(v), ["Hi <PER", "SON_1>, <EMAIL_ADD", "RESS_1> and <", "person_3 ", ">!"]
        )
        assert text == "Hi Ann, ann@corp.io and Cy!"
        assert held == ["<PER", "<EMAIL_ADD", "<", "<person_3 ", ""]

    def test_nothing_is_held_that_cannot_become_a_pseudonym(self) -> None:
        """Text with no issued pseudonym's prefix at its end passes straight through."""
        v = filled("placeholder")
        r = StreamRestorer(v)
        assert r.feed("a < b and <X") == "a < b and <X"
        assert r.feed(" <PERSON_9") == " <PERSON_9"  # no PERSON_9 issued
        assert r.feed(" <PERSON_1  ") == " <PERSON_1  "  # two spaces: not a spelling restore accepts
        assert r.feed(" <PERSON_1>") == " Ann" and r.held == ""

    def test_a_split_fake_is_held_then_restored_once_whole(self) -> None:
        """Fakes never contain one another, so a whole fake is final at once."""
        v = filled("fake")
        ann = v.pseudonym("Ann")
        assert ann is not None and not any(ann in f for f in v.fakes - {ann})
        r = StreamRestorer(v)
        assert r.feed("Hello " + ann[:-1]) == "Hello " and r.held == ann[:-1]
        assert r.feed(ann[-1]) == "Ann" and r.held == ""

    def test_a_placeholder_that_could_grow_is_held(self) -> None:
        """With <PERSON_10> issued, "<PERSON_1" waits for the next character."""
        v = PseudonymVault(VaultScope("acme", "c1"))
        names = [f"N{i}" for i in range(1, 11)]
        text = " ".join(names)
        v.mask(text, [Span(text.index(n), text.index(n) + len(n), "PERSON") for n in names])
        r = StreamRestorer(v)
        assert r.feed("<PERSON_1") == "" and r.held == "<PERSON_1"
        assert r.feed(">") == "N1"
        assert r.feed("<PERSON_1") + r.feed("0>") == "N10"

    def test_an_empty_vault_holds_nothing(self) -> None:
        r = StreamRestorer(PseudonymVault(VaultScope("t", "c")))
        assert r.feed("<PERSON_1") == "<PERSON_1" and r.finish() == ""

    def test_finished_takes_no_more(self) -> None:
        r = StreamRestorer(filled("placeholder"))
        r.finish()
        with pytest.raises(ValueError, match="finished"):
            r.feed("x")

    @pytest.mark.parametrize("style", ["placeholder", "fake"])
    def test_any_chunking_restores_as_the_whole(self, style: Style) -> None:
        """Property: every cut of model output restores to ``vault.restore`` of the whole, and
        what is held after a piece is the shortest tail that is a proper prefix of a pseudonym."""
        v = filled(style)
        pattern = v.restore_pattern()
        assert pattern is not None
        spellings = list(v.fakes) + [
            f"<{a}{k}{b}>".lower() for k in v.placeholder_keys for a in ("", " ") for b in ("", " ")
        ]

        @settings(max_examples=400, deadline=None)
        @given(model_output(v), st.lists(st.integers(0, 200), max_size=12))
        def check(text: str, points: list[int]) -> None:
            restored, held = run(StreamRestorer(v), cut(text, points))
            assert restored == v.restore(text)
            longest = max(map(len, spellings))
            for tail in held:
                assert len(tail) < longest
                assert (
                    tail == ""
                    or any(s.startswith(tail.lower()) and s != tail.lower() for s in spellings)
                    or any(f.startswith(tail) and f != tail for f in v.fakes)
                )

        check()

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet="Ann Bee<>_PERSON1 é", max_size=30), st.lists(st.integers(0, 40), max_size=8))
    def test_masked_text_streams_back_to_the_input(self, text: str, points: list[int]) -> None:
        """mask, cut anywhere, stream-restore: the input, exactly."""
        v = filled("placeholder")
        masked = v.mask(text, [Span(i, i + 3, "PERSON") for i in range(0, len(text) - 3, 7)])
        restored, _ = run(StreamRestorer(v), cut(masked, points))
        assert restored == text
