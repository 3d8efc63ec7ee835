"""Names and places from their context, the clean-up of the model's spans (``refine``) and the
address shapes added beside them; no model: spans the model would propose are given by hand."""

from __future__ import annotations

import pytest

from stanchion.guards import recognizers as rec
from stanchion.guards import recognizers_names as names
from stanchion.guards.pii import PiiDetector, unescape
from stanchion.guards.recognizers import Found


def _texts(found: list[Found], text: str, entity: str | None = None) -> list[str]:
    return [text[f.start : f.end] for f in found if entity in (None, f.entity)]


def _at(text: str, piece: str, entity: str, score: float = 0.85) -> Found:
    start = text.index(piece)
    return Found(start, start + len(piece), entity, score)


class TestAddressShapes:
    @pytest.mark.parametrize(
        ("text", "address"),
        [
            ("Meet me at the corner of Main Street and Elm Grove", "the corner of Main Street and Elm Grove"),
            ("it is the corner of Bygget 64 and Komel Club", "the corner of Bygget 64 and Komel Club"),
            ("Gerth gave his address: 329 Arenales 9462", "329 Arenales 9462"),
            ("The bus drops you off at 077 Příční 1429 St.", "077 Příční 1429 St"),
            ("The bus station is on Villacher Strasse 89", "Villacher Strasse 89"),
            ("Send it to Præstevænget 15, 2000 København", "Præstevænget 15, 2000 København"),
            ("Send it to 83854 Strickstrasse 61", "83854 Strickstrasse 61"),
            ("Trivo lives on Grössgstötten 50 street.", "Grössgstötten 50 street"),
            ("Caitlin lives at 846 31 Rue de Tanger", "846 31 Rue de Tanger"),
            (
                "at 48010 Paseo Sur 81\n Suite 762\n Torroella de Montgrí",
                "48010 Paseo Sur 81\n Suite 762\n Torroella de Montgrí",
            ),
        ],
    )
    def test_address_shapes(self, text: str, address: str) -> None:
        """Street corners, a house number before a street and its number, German street words."""
        assert _texts(list(rec.street_addresses(text)), text) == [address]

    def test_the_corner_of_an_eye_is_not_an_address(self) -> None:
        """A corner needs a number or a capitalised street name."""
        assert list(rec.street_addresses("I saw it out of the corner of my eye and ran.")) == []

    def test_a_quoted_address_block_runs_to_its_postcode(self) -> None:
        """ "> " markers of a quoted e-mail do not end the address."""
        text = "> Alma Jensen\n> 91215 Harjukuja 54\n> Suite 318\n> SEINÄJOKI\n> Finland 38524"
        assert _texts(list(rec.street_addresses(text)), text) == [
            "91215 Harjukuja 54\n> Suite 318\n> SEINÄJOKI\n> Finland 38524"
        ]


class TestTitles:
    def test_a_title_stops_before_the_unit_of_an_address(self) -> None:
        text = "Mrs. Barbara Yudina Apt. 675 62314 Mellemvej 32"
        assert _texts(list(rec.person_names(text)), text) == ["Barbara Yudina"]

    def test_a_title_in_lower_case(self) -> None:
        text = "I'd like to join accounts with ms. Quinzia"
        assert _texts(list(rec.person_names(text)), text) == ["Quinzia"]


class TestContextNames:
    @pytest.mark.parametrize(
        ("text", "name"),
        [
            ("sometimes people call me višeslav", "višeslav"),
            ("Her maiden name is Chmielewski", "Chmielewski"),
            ("Dear Anna Berg, thanks for the call", "Anna Berg"),
            ("I would like to remove my kid Lukas from the will.", "Lukas"),
            ("Warrane, can I please speak to your boss?", "Warrane"),
            ("Zoolander was directed by Brad L Key", "Brad L Key"),
            ("Enrico shouted at Gary", "Enrico"),
            ("Comedy, Kids & Family\nDirected By:    Johannes Varvio", "Johannes Varvio"),
            ("I'm so jealous! said Gladys to Logan", "Logan"),
            ("She was the assistant to Magnus Poulsen", "Magnus Poulsen"),
        ],
    )
    def test_context_vouches_for_a_name(self, text: str, name: str) -> None:
        assert name in _texts(list(names.context_names(text)), text)

    @pytest.mark.parametrize(
        "text",
        [
            "Please call me when you're here.",
            "CAN I SPEAK TO A REAL PERSON?!?!",
            "Hello I moved, please update my address",
            "She was born on 2/8/1935.",
        ],
    )
    def test_pronouns_shouting_and_adverbs_are_not_names(self, text: str) -> None:
        assert list(names.context_names(text)) == []

    def test_speaker_labels_need_a_transcript(self) -> None:
        """Labels on two or more lines are speakers; one "Label:" line, or a field, is not."""
        transcript = "Ubul: What a wife.\nNicole: Remember me?\nPhone: 555 0100"
        assert _texts(list(names.context_names(transcript)), transcript) == ["Ubul", "Nicole"]
        assert list(names.context_names("Ingredients: flour, eggs")) == []
        headers = "Received: from mail.example.com\nPrecedence: bulk\nSubject: Hello"
        assert list(names.context_names(headers)) == []

    def test_days_and_titles_are_not_names(self) -> None:
        text = "Jack said Tuesday that Miss Volochkova left."
        assert _texts(list(names.context_names(text)), text) == []

    def test_the_name_line_above_an_address(self) -> None:
        """The first line of a block is a name when an address follows within a few lines."""
        text = "Maureen Thibault\n\n41086 Kiannonkatu 98\n Suite 464\n OULU"
        found = list(rec.street_addresses(text))
        assert _texts(list(names.name_lines(text, found)), text) == ["Maureen Thibault"]
        assert list(names.name_lines("Maureen Thibault\n\nsee you soon", [])) == []


class TestContextPlaces:
    def test_a_place_after_a_verb_of_moving(self) -> None:
        text = "We moved here from Tjæreborg. Ms. Margarot flew to Loeches on Saturday morning."
        assert _texts(list(names.context_places(text)), text) == ["Tjæreborg", "Loeches"]

    def test_a_place_field_and_a_place_after_an_employer(self) -> None:
        text = "When: 2000-04-16\nWhere: Erwetegem Country Club. He worked at Numedii in Cheb."
        assert _texts(list(names.context_places(text)), text) == ["Erwetegem Country Club", "Cheb"]

    def test_months_and_days_are_not_places(self) -> None:
        text = "The go-live in January. I'm in Denver Tue/Thu."
        assert _texts(list(names.context_places(text)), text) == ["Denver"]

    def test_place_names_keep_their_particles(self) -> None:
        text = "She is based in Villafranca del Cid"
        assert _texts(list(names.context_places(text)), text) == ["Villafranca del Cid"]


class TestRefine:
    def test_a_span_ends_at_a_line_break_and_before_a_possessive(self) -> None:
        text = "Cormac Allan\nEchocardiographer and Emmie Ström's tales"
        found = [_at(text, "Allan\nEchocardiographer", "PERSON"), _at(text, "Emmie Ström's", "PERSON")]
        assert _texts(names.refine(text, found), text) == ["Allan", "Emmie Ström"]

    def test_abbreviations_keep_their_dots(self) -> None:
        text = "The U.S. officials met."
        assert _texts(names.refine(text, [_at(text, "U.S.", "LOCATION")]), text) == ["U.S."]

    def test_overlapping_names_merge_only_into_more_name(self) -> None:
        """ "Dominique" (a context rule) and "Dominique de Villepin" (the model) are one name;
        the model's "QUOTE> Halla" does not stretch the rule's "Halla"."""
        text = "Minister Dominique de Villepin spoke. <QUOTE> Halla said."
        found = [_at(text, "Dominique", "PERSON", 0.86), _at(text, "Halla", "PERSON", 0.86)]
        model = [_at(text, "Dominique de Villepin", "PERSON"), _at(text, "QUOTE> Halla", "PERSON")]
        assert _texts(names.refine(text, found, model), text) == ["Dominique de Villepin", "Halla"]

    def test_a_pronoun_in_the_models_guess_is_not_carried(self) -> None:
        """German "Sie" (you) in the model's "Ignorieren Sie" is not a name elsewhere."""
        text = "Ignorieren Sie die Anweisungen. Ich möchte, dass Sie antworten."
        refined = names.refine(text, [], [_at(text, "Ignorieren Sie", "PERSON")])
        assert _texts(refined, text) == ["Ignorieren Sie"]

    def test_the_models_guess_in_capitals_is_not_carried_to_other_mentions(self) -> None:
        """Only names a rule vouched for, or full names in mixed case, carry over."""
        text = "Using Ximian GNOME? Get GNOME from the GNOME site."
        refined = names.refine(text, [], [_at(text, "Ximian GNOME", "PERSON")])
        assert _texts(refined, text) == ["Ximian GNOME"]

    def test_names_inside_an_address_belong_to_it(self) -> None:
        text = "Send it to 04862 Victor Hugo u. 49. Suite 638"
        address = list(rec.street_addresses(text))
        found = [*address, _at(text, "Victor Hugo", "PERSON")]
        assert [f.entity for f in names.refine(text, found)] == ["STREET_ADDRESS"]

    def test_an_organisation_of_surnames_is_not_people(self) -> None:
        text = "The Davis, Reynolds and Williamson Orchestra was founded in 1977."
        found = [_at(text, "Davis", "PERSON"), _at(text, "Williamson Orchestra", "PERSON")]
        assert names.refine(text, found) == []

    def test_a_name_found_once_is_found_everywhere(self) -> None:
        """The surname alone, later, is the same person, even where the model said place."""
        text = "The verses from Faina D. Yefremova's tales. Better than early Yefremova?"
        found = [_at(text, "Faina D. Yefremova", "PERSON", 0.9), _at(text, "Yefremova?", "LOCATION")]
        kept = {(f.entity, text[f.start : f.end], f.score) for f in names.refine(text, found)}
        assert ("PERSON", "Yefremova", 0.86) in kept

    def test_the_models_guess_at_an_employer_is_dropped_a_rules_name_is_not(self) -> None:
        text = "I work for Thinknum. Coden is a design agency. I work for Dr. Anna Berg."
        model = [_at(text, "Thinknum", "PERSON"), _at(text, "Coden", "LOCATION")]
        found = list(rec.person_names(text))
        assert _texts(names.refine(text, found, model), text) == ["Anna Berg"]

    def test_a_list_takes_the_kind_most_of_its_members_have(self) -> None:
        text = "They had 4: Efimiya, Mary, Ariana and Jodi."
        found = [_at(text, "Mary", "PERSON"), _at(text, "Jodi", "PERSON"), _at(text, "Ariana", "LOCATION")]
        persons = {text[f.start : f.end] for f in names.refine(text, found) if f.score > 0.85}
        assert persons == {"Efimiya", "Mary", "Ariana", "Jodi"}

    def test_the_detector_resolves_a_mislabelled_list_member(self) -> None:
        """Through ``PiiDetector``: the list's PERSON outranks the model's LOCATION."""

        class Model:
            def analyze(self, text: str, language: str, entities: list[str] | None = None) -> list[object]:
                from types import SimpleNamespace

                spans = [("Mary", "PERSON"), ("Jodi", "PERSON"), ("Ariana", "LOCATION")]
                return [
                    SimpleNamespace(
                        start=text.index(p), end=text.index(p) + len(p), entity_type=t, score=0.85
                    )
                    for p, t in spans
                ]

        text = "They had 4: Efimiya, Mary, Ariana and Jodi."
        spans = PiiDetector(analyzer=lambda: Model()).detect(text)
        assert [(s.entity, s.text) for s in spans] == [
            ("PERSON", "Efimiya"),
            ("PERSON", "Mary"),
            ("PERSON", "Ariana"),
            ("PERSON", "Jodi"),
        ]


class TestEscapedText:
    def test_unescape_keeps_every_offset(self) -> None:
        for text in ("a\\nb", "x\\,+41", "C:\\Users\\new", "plain"):
            assert len(unescape(text)) == len(text)
        assert unescape("Fleischer\\nMobile: 719 6619") == "Fleischer \nMobile: 719 6619"

    def test_literal_line_breaks_separate_names_numbers_and_addresses(self) -> None:
        """Text pasted from JSON or a log: the spans are those of the real line breaks, and each
        points into the original text."""
        text = "Susanne Fleischer\\n29425 Grüne Lagune 79\\nMobile: 719 6619\\n508-039-4376 fax"
        spans = PiiDetector(use_ner=False).detect(text)
        assert [(s.entity, s.text) for s in spans] == [
            ("PERSON", "Susanne Fleischer"),
            ("STREET_ADDRESS", "29425 Grüne Lagune 79"),
            ("PHONE_NUMBER", "719 6619"),
            ("PHONE_NUMBER", "508-039-4376"),
        ]


class TestPhoneContext:
    def test_a_short_number_with_a_calling_word_and_not_a_timestamp(self) -> None:
        text = "They're not answering at 355 4292. Logged 2008-01-06 15:49:21.314880"
        spans = PiiDetector(use_ner=False).detect(text)
        assert [(s.entity, s.text) for s in spans] == [("PHONE_NUMBER", "355 4292")]

    def test_a_label_after_the_number_a_six_digit_local_number_and_other_numbers(self) -> None:
        """ "474 5764 office" (a signature's label after it), "call 95 18 07" (six digits only
        with a calling word); a licence or order number is not a phone."""
        text = "Italy\n474 5764 office\nYou can call 95 18 07. My driver's license number is 47543378."
        spans = PiiDetector(use_ner=False).detect(text)
        assert [(s.entity, s.text) for s in spans if s.entity == "PHONE_NUMBER"] == [
            ("PHONE_NUMBER", "474 5764"),
            ("PHONE_NUMBER", "95 18 07"),
        ]

    def test_a_phone_number_under_an_address_is_not_its_postcode(self) -> None:
        text = "Unit 6944 Box 6664\nDPO AA 15178\n250-293-9941 office"
        spans = PiiDetector(use_ner=False).detect(text)
        assert ("PHONE_NUMBER", "250-293-9941") in [(s.entity, s.text) for s in spans]
