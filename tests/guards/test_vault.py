"""The pseudonym vault: exact round trips, stable pseudonyms, scope and expiry, adversarial input,
JSON tool arguments and messages."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stanchion.guards import fakes as fakes_module
from stanchion.guards.fakes import fake_value, iban_valid, luhn_valid
from stanchion.guards.vault import PseudonymVault, Span, Style, VaultScope, entity_name
from stanchion.guards.vault_messages import mask_messages, restore_json, restore_tool_call
from stanchion.types import Grounding, GroundingSource, Message, ToolCall

SECRET = b"test-secret"
SCOPE = VaultScope("acme", "conv-1")


def vault(style: Style = "placeholder") -> PseudonymVault:
    return PseudonymVault(SCOPE, style=style, secret=SECRET)


def spans_of(text: str, *found: tuple[str, str]) -> list[Span]:
    """Spans for each (value, entity), at every place the value occurs."""
    return [
        Span(m.start(), m.end(), entity)
        for value, entity in found
        for m in re.finditer(re.escape(value), text)
    ]


class TestPlaceholders:
    def test_numbered_per_type_and_stable_across_texts(self) -> None:
        """Different values of a type get _1, _2; the same value keeps its pseudonym in later texts."""
        v = vault()
        text = "Ann met Bob; mail ann@corp.io"
        masked = v.mask(
            text, spans_of(text, ("Ann", "PERSON"), ("Bob", "PERSON"), ("ann@corp.io", "EMAIL_ADDRESS"))
        )
        assert masked == "<PERSON_1> met <PERSON_2>; mail <EMAIL_ADDRESS_1>"
        later = "Bob wrote to Ann and Cy"
        assert v.mask(later, spans_of(later, ("Bob", "PERSON"), ("Cy", "PERSON"))) == (
            "<PERSON_2> wrote to <PERSON_1> and <PERSON_3>"
        )
        assert v.restore("<PERSON_3> thanks <PERSON_1>") == "Cy thanks Ann"

    def test_known_values_masked_where_the_detector_missed_them(self) -> None:
        """A value seen once is masked again where it stands whole, never inside a word."""
        v = vault()
        v.mask("Alice Smith called", [Span(0, 11, "PERSON")])
        assert v.mask("Ask Alice Smith, not Alice Smithers", []) == "Ask <PERSON_1>, not Alice Smithers"

    def test_entity_names_become_placeholder_names(self) -> None:
        assert entity_name("email address") == "EMAIL_ADDRESS"
        assert entity_name("") == "PII"
        assert entity_name("9x") == "PII_9X"

    @pytest.mark.parametrize("variant", ["<person_1>", "< PERSON_1 >", "<Person_1 >", "<\tPERSON_1>"])
    def test_case_and_space_variants_restore(self, variant: str) -> None:
        v = vault()
        v.mask("Ann", [Span(0, 3, "PERSON")])
        assert v.restore(f"hi {variant}!") == "hi Ann!"

    @pytest.mark.parametrize(
        "text",
        [
            "[PERSON_1]",
            "PERSON_1",
            "<PERSON_9>",
            "<PERSON_1",
            "<  PERSON_1>",
            "&lt;PERSON_1&gt;",
            "<PERSON_10>",
        ],
    )
    def test_what_was_not_issued_is_never_restored(self, text: str) -> None:
        v = vault()
        v.mask("Ann", [Span(0, 3, "PERSON")])
        assert v.restore(text) == text


class TestAdversarialInput:
    def test_a_pseudonym_already_in_the_input_is_not_issued(self) -> None:
        """Input spelling <PERSON_1> pushes the new value to <PERSON_2>; the literal stays literal."""
        v = vault()
        text = "<person_1> is not Ann"
        masked = v.mask(text, [Span(18, 21, "PERSON")])
        assert masked == "<person_1> is not <PERSON_2>"
        assert v.restore(masked) == text

    def test_an_issued_pseudonym_written_later_is_escaped(self) -> None:
        """A later text that spells an issued pseudonym gets it masked as a value of its own."""
        v = vault()
        v.mask("Ann", [Span(0, 3, "PERSON")])
        text = "Forged: < PERSON_1 > and <PERSON_1>"
        masked = v.mask(text, [])
        assert "PERSON_1" not in masked
        assert v.restore(masked) == text

    def test_a_fake_is_never_a_value_present_in_the_text(self) -> None:
        """If the text already holds the fake the vault would pick, it picks another."""
        first = fake_value(SECRET, "PERSON", "", 0)
        assert first is not None
        v = vault("fake")
        text = f"{first} and Zed"
        masked = v.mask(text, [Span(len(text) - 3, len(text), "PERSON")])
        assert masked.startswith(f"{first} and ")
        assert v.pseudonym("Zed") not in (first, "Zed")
        assert v.restore(masked) == text

    def test_a_fake_written_later_restores_to_itself(self) -> None:
        v = vault("fake")
        v.mask("Zed", [Span(0, 3, "PERSON")])
        fake = v.pseudonym("Zed")
        assert fake is not None
        text = f"The real {fake} is someone else"
        masked = v.mask(text, [])
        assert fake not in masked
        assert v.restore(masked) == text

    def test_overlapping_spans_are_merged_so_nothing_leaks(self) -> None:
        v = vault()
        text = "id: john.smith@corp.io"
        masked = v.mask(text, [Span(4, 14, "PERSON"), Span(4, 22, "EMAIL_ADDRESS"), Span(9, 22, "X")])
        assert masked == "id: <EMAIL_ADDRESS_1>"  # the type of the first, longest span
        assert v.restore(masked) == text

    def test_values_containing_each_other_adjacent_and_repeated(self) -> None:
        v = vault()
        text = "AnnAnn Smith Ann"
        masked = v.mask(text, [Span(0, 3, "PERSON"), Span(3, 12, "PERSON"), Span(13, 16, "PERSON")])
        assert masked == "<PERSON_1><PERSON_2> <PERSON_1>"
        assert v.restore(masked) == text

    def test_unicode_values(self) -> None:
        v = vault("fake")
        text = "Zoë Ñúñez 🙂 → zoë@bücher.de"
        masked = v.mask(text, [Span(0, 9, "PERSON"), Span(14, 27, "EMAIL_ADDRESS")])
        assert "Zoë" not in masked and "bücher" not in masked
        assert v.restore(masked) == text

    def test_a_straddling_fake_falls_back_to_placeholders(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Text before a fake that completes another fake ("Ann Le" + "e Bob"): that text uses
        placeholders, and still restores exactly."""
        script = {0: "Ann Lee", 1: "e Bob"}
        monkeypatch.setattr(
            "stanchion.guards.vault.fake_value", lambda secret, entity, original, attempt: script.get(attempt)
        )
        v = vault("fake")
        assert v.mask("A", [Span(0, 1, "PERSON")]) == "Ann Lee"
        text = "Ann LeB"
        masked = v.mask(text, [Span(6, 7, "PERSON")])
        assert masked == "Ann Le<PERSON_2>"
        assert v.restore(masked) == text

    def test_bad_spans_are_refused(self) -> None:
        with pytest.raises(ValueError, match=r"span 2\.\.9 \(PERSON\) lies outside the text \(length 3\)"):
            vault().mask("abc", [Span(2, 9, "PERSON")])
        with pytest.raises(ValueError, match="unknown pseudonym style"):
            PseudonymVault(SCOPE, style="emoji")  # type: ignore[arg-type]


# Pieces an adversary may put in a text: pseudonyms in every spelling, fakes this secret yields,
# unicode, brackets and partial pseudonyms.
FAKES = [
    f
    for e in ("PERSON", "EMAIL_ADDRESS", "IP_ADDRESS")
    for a in range(3)
    if (f := fake_value(SECRET, e, "", a))
]
PIECES = st.sampled_from(
    [
        "<PERSON_1>",
        "<person_2>",
        "< PERSON_1 >",
        "<EMAIL_ADDRESS_1>",
        "<",
        ">",
        "_1",
        "PERSON",
        " ",
        "é",
        "🙂",
        *FAKES,
    ]
    + [f[:3] for f in FAKES]
)
TEXTS = st.lists(st.one_of(PIECES, st.text(alphabet="ab <>_1é", max_size=4)), max_size=12).map("".join)


@st.composite
def text_and_spans(draw: st.DrawFn) -> tuple[str, list[Span]]:
    text = draw(TEXTS)
    spans = []
    for _ in range(draw(st.integers(0, 4))):
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, len(text)))
        spans.append(Span(a, b, draw(st.sampled_from(["PERSON", "EMAIL_ADDRESS", "IP_ADDRESS", "LOCATION"]))))
    return text, spans


class TestRoundTripProperty:
    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(["placeholder", "fake"]), st.lists(text_and_spans(), min_size=1, max_size=4))
    def test_restore_of_mask_is_the_input(self, style: Style, texts: list[tuple[str, list[Span]]]) -> None:
        """Any texts, any spans (overlapping, empty, adjacent), one vault: each restores exactly,
        and no span's value is left in the masked text outside the pseudonyms, unless another part
        of the text holds it too."""
        v = vault(style)
        for text, spans in texts:
            masked = v.mask(text, spans)
            assert v.restore(masked) == text
            pattern = v.restore_pattern()
            literal = pattern.sub("\0", masked) if pattern else masked
            for s in spans:
                value = text[s.start : s.end]
                if value and text.count(value) == 1:
                    assert value not in literal


class TestFakes:
    def test_fakes_are_valid_and_from_reserved_ranges(self) -> None:
        v = vault("fake")
        text = "Ann Bee, ann@corp.io, +44 20 7946 0958, 4111-1111-1111-1111, DE89370400440532013000, 123-45-6789, 10.1.2.3"
        found = [
            ("Ann Bee", "PERSON"),
            ("ann@corp.io", "EMAIL_ADDRESS"),
            ("+44 20 7946 0958", "PHONE_NUMBER"),
            ("4111-1111-1111-1111", "CREDIT_CARD"),
            ("DE89370400440532013000", "IBAN_CODE"),
            ("123-45-6789", "US_SSN"),
            ("10.1.2.3", "IP_ADDRESS"),
        ]
        masked = v.mask(text, spans_of(text, *found))
        assert v.restore(masked) == text
        fake = {entity: v.pseudonym(value) or "" for value, entity in found}
        assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", fake["PERSON"])
        assert fake["EMAIL_ADDRESS"].endswith("@example.com")
        assert re.fullmatch(r"\+1 \d{3}-555-01\d\d", fake["PHONE_NUMBER"])
        assert re.fullmatch(r"4000-\d{4}-\d{4}-\d{4}", fake["CREDIT_CARD"])  # the original's grouping
        assert luhn_valid(fake["CREDIT_CARD"])
        assert iban_valid(fake["IBAN_CODE"]) and "XTST" in fake["IBAN_CODE"]
        assert re.fullmatch(r"9\d\d-00-\d{4}", fake["US_SSN"])
        assert re.fullmatch(r"(192\.0\.2|198\.51\.100|203\.0\.113)\.1\d\d", fake["IP_ADDRESS"])

    def test_checksums_themselves(self) -> None:
        assert luhn_valid("4111 1111 1111 1111") and not luhn_valid("4111 1111 1111 1112")
        assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE88 3704 0044 0532 0130 00")

    def test_types_without_a_generator_get_placeholders(self) -> None:
        v = vault("fake")
        assert v.mask("Paris", [Span(0, 5, "LOCATION")]) == "<LOCATION_1>"

    def test_fakes_are_deterministic_per_secret(self) -> None:
        a, b = vault("fake"), vault("fake")
        other = PseudonymVault(SCOPE, style="fake", secret=b"another")
        for v in (a, b, other):
            v.mask("Ann Bee", [Span(0, 7, "PERSON")])
        assert a.pseudonym("Ann Bee") == b.pseudonym("Ann Bee")
        assert fakes_module.fake_value(b"x", "LOCATION", "", 0) is None


class TestStore:
    """Scope keys and the state a store keeps (the stores themselves: test_vault_store.py)."""

    def test_key_parts_cannot_run_into_each_other(self) -> None:
        assert VaultScope("a:b", "c").key != VaultScope("a", "b:c").key
        assert VaultScope("acme", "c1", "u").key == "pii-vault:acme:u:c1"
        with pytest.raises(ValueError, match="tenant and a conversation"):
            VaultScope("", "c1")

    @pytest.mark.parametrize("style", ["placeholder", "fake"])
    def test_state_round_trips_through_json(self, style: Style) -> None:
        """What a store outside the process would keep: the rebuilt vault restores, masks and
        numbers exactly as the original does."""
        v = vault(style)
        text = "Ann, ann@corp.io, Paris, <PERSON_1>"
        masked = v.mask(
            text, spans_of(text, ("Ann", "PERSON"), ("ann@corp.io", "EMAIL_ADDRESS"), ("Paris", "LOC"))
        )
        again = PseudonymVault.from_state(SCOPE, json.loads(json.dumps(v.to_state())))
        assert again.restore(masked) == text
        later = "Bob and Ann"
        found = spans_of(later, ("Bob", "PERSON"))
        assert again.mask(later, found) == v.mask(later, found)
        assert again.placeholder_keys == v.placeholder_keys and again.fakes == v.fakes


def detect_names(text: str) -> list[Span]:
    """A stand-in detector: capitalised words Ann/Bob and any e-mail."""
    found = spans_of(text, ("Ann", "PERSON"), ("Bob", "PERSON"))
    found += [Span(m.start(), m.end(), "EMAIL_ADDRESS") for m in re.finditer(r"\S+@\S+\.\w+", text)]
    return found


class TestJsonAndMessages:
    def test_tool_arguments_restored_at_any_depth_keys_included(self) -> None:
        v = vault()
        v.mask('Ann "the" \\boss', [Span(0, 15, "PERSON")])
        args: dict[str, Any] = {
            "to": ["<PERSON_1>", {"cc": "< person_1 >", "n": 3}],
            "<PERSON_1>": None,
            "ok": True,
        }
        assert restore_json(v, args) == {
            "to": ['Ann "the" \\boss', {"cc": 'Ann "the" \\boss', "n": 3}],
            'Ann "the" \\boss': None,
            "ok": True,
        }

    def test_raw_arguments_restore_as_json_even_with_escapes(self) -> None:
        """An original holding quotes stays valid JSON; a model's \\u003c escapes still restore."""
        v = vault()
        v.mask('Ann "A"', [Span(0, 7, "PERSON")])
        call = ToolCall("c1", "send", {"to": "<PERSON_1>"}, raw_arguments='{"to": "\\u003cPERSON_1\\u003e"}')
        restored = restore_tool_call(v, call)
        assert restored.arguments == {"to": 'Ann "A"'}
        assert json.loads(restored.raw_arguments) == {"to": 'Ann "A"'}
        broken = restore_tool_call(v, ToolCall("c2", "send", raw_arguments='{"to": <PERSON_1>'))
        assert broken.raw_arguments == '{"to": Ann "A"'

    def test_mask_messages_masks_everything_a_model_reads(self) -> None:
        v = vault()
        grounding = Grounding(
            "Who is Ann?", (GroundingSource(1, "Bob's notes", "Ann: ann@corp.io"),), "I don't know."
        )
        messages = [
            Message("user", "Who is Ann?", name="caller", grounding=grounding),
            Message("assistant", tool_calls=(ToolCall("c1", "mail", {"to": ["Bob"]}, '{"to": ["Bob"]}'),)),
            Message("tool", "sent to bob@corp.io", tool_call_id="c1"),
        ]
        masked = mask_messages(v, messages, detect_names)
        assert masked[0].content == "Who is <PERSON_1>?" and masked[0].name == "caller"
        assert masked[0].grounding is not None
        assert masked[0].grounding.sources[0].text == "<PERSON_1>: <EMAIL_ADDRESS_1>"
        assert masked[0].grounding.sources[0].title == "<PERSON_2>'s notes"
        assert masked[1].tool_calls[0].arguments == {"to": ["<PERSON_2>"]}
        assert json.loads(masked[1].tool_calls[0].raw_arguments) == {"to": ["<PERSON_2>"]}
        assert masked[2].content == "sent to <EMAIL_ADDRESS_2>" and masked[2].tool_call_id == "c1"
        assert messages[0].content == "Who is Ann?"  # new messages; the originals are untouched
        wire = json.dumps([m.content for m in masked]) + str(masked[1].tool_calls)
        assert not any(raw in wire for raw in ("Ann", "Bob", "corp.io"))
        assert [v.restore(m.content) for m in masked] == [m.content for m in messages]
