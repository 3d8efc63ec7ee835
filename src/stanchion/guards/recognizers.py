"""Pattern recognizers with validation, in plain Python (no model): each is a function
``text -> Iterator[Found]`` that proposes spans and keeps only those its check accepts.

Credit cards pass Luhn; IBANs have their country's length and pass ISO 7064 mod 97; US SSNs
follow the SSA's area/group/serial rules; phone numbers are digit groups of a phone's shape (an
international ``+CC`` number is checked by ``phonenumbers``); IP addresses parse with
``ipaddress``; secrets carry a known prefix (``sk-``, ``ghp_``, ``AKIA``, ``xoxb-``, a JWT, a PEM
block) or are long high-entropy tokens mixing cases and digits; street addresses are a house
number with words up to a postcode, a street word (Street, Rue, Via, ...-strasse), or a
Suite/Apt./PSC unit.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import phonenumbers


@dataclass(frozen=True, slots=True)
class Found:
    start: int
    end: int
    entity: str
    score: float


Recognizer = Callable[[str], Iterator[Found]]

# ---- e-mail ---------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


def emails(text: str) -> Iterator[Found]:
    for m in _EMAIL.finditer(text):
        yield Found(m.start(), m.end(), "EMAIL_ADDRESS", 1.0)


# ---- credit cards (Luhn) --------------------------------------------------------------------

_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def credit_cards(text: str) -> Iterator[Found]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        maestro = len(digits) == 12 and digits[0] in "56"  # Maestro runs from 12 digits
        if (13 <= len(digits) <= 19 or maestro) and luhn_ok(digits) and len(set(digits)) > 1:
            yield Found(m.start(), m.end(), "CREDIT_CARD", 1.0)


# ---- IBAN (length per country, mod 97) ------------------------------------------------------

IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")


def iban_ok(iban: str) -> bool:
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def ibans(text: str) -> Iterator[Found]:
    for m in _IBAN.finditer(text):
        length = IBAN_LENGTHS.get(m.group()[:2].upper())
        if length is None:
            continue
        # Take exactly the country's length of characters, separators skipped.
        count, end = 0, m.start()
        for i in range(m.start(), m.end()):
            if text[i].isalnum():
                count += 1
                end = i + 1
                if count == length:
                    break
        compact = re.sub(r"[ -]", "", text[m.start() : end])
        nxt = text[end : end + 1]
        if count == length and iban_ok(compact) and not nxt.isalnum():
            yield Found(m.start(), end, "IBAN_CODE", 1.0)


# ---- US SSN (SSA rules) ---------------------------------------------------------------------

_SSN = re.compile(r"(?<![\w-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w-])")
_SSN_CONTEXT = re.compile(r"\b(?:ssn|ssns|social security|social sec)\b", re.IGNORECASE)


def ssn_ok(area: str, group: str, serial: str) -> bool:
    a = int(area)
    if a == 0 or a == 666 or a >= 900 or group == "00" or serial == "0000":
        return False
    return f"{area}{group}{serial}" not in {"078051120", "219099999", "123456789"}


def ssns(text: str) -> Iterator[Found]:
    for m in _SSN.finditer(text):
        area, sep, group, serial = m.groups()
        if not ssn_ok(area, group, serial):
            continue
        context = bool(_SSN_CONTEXT.search(text[max(0, m.start() - 40) : m.start()]))
        # Nine bare digits are many things: only a nearby "SSN" makes them one.
        score = (0.95 if context else 0.85) if sep == "-" else (0.8 if context else 0.3)
        yield Found(m.start(), m.end(), "US_SSN", score)


# ---- phone numbers --------------------------------------------------------------------------

# Digit groups separated by spaces, dots, dashes or parentheses, optionally led by +CC or (0).
_PHONE = re.compile(
    r"(?<![\w+.:-])(?:\+\d{1,3}[ .-]?)?(?:\(0?\d{1,4}\)[ .-]?)?\d{1,12}(?:[ .-]\(?\d{1,8}\)?){0,5}"
    r"(?:\s*(?:x|ext\.?)\s*\d{1,5})?(?!\w|-\d)"
)
_PHONE_AFTER = re.compile(r"[ \t]*[-(]?(?i:office|fax|mobile|cell|home|work|phone|tel|desk)\b")
_OTHER_NUMBER = re.compile(
    r"\b(?:licen[cs]e|account|order|invoice|card|policy|passport|routing|tracking|serial|reference"
    r"|ticket|case|member|customer|employee|student|patient|zip|postcode|postal)\b[^.\n]{0,20}$",
    re.I,
)
_PHONE_CONTEXT = re.compile(
    r"\b(?:phone|tel|telephone|mobile|cell|call|fax|number|whatsapp|answering|reach|dial|text|sms"
    r"|office|desk|landline|hotline|contact)\b",
    re.I,
)


def phones(text: str) -> Iterator[Found]:
    for m in _PHONE.finditer(text):
        raw = m.group().rstrip(" .-")
        digits = re.sub(r"\D", "", raw.split("x")[0].split("ext")[0])
        grouped = bool(re.search(r"[ .()-]", raw))
        before = text[max(0, m.start() - 40) : m.start()]
        context = bool(_PHONE_CONTEXT.search(before) or _PHONE_AFTER.match(text, m.start() + len(raw)))
        if _OTHER_NUMBER.search(before[-30:]):
            context = False  # "license number", "order no.": a number, not a phone
        short = len(digits) == 6 and grouped and context  # "call 95 18 07": local numbers
        if not (7 <= len(digits) <= 15 or short) or len(set(digits)) == 1:
            continue
        if raw.startswith("+"):
            try:
                number = phonenumbers.parse(raw.replace("(0)", ""), None)
                valid = phonenumbers.is_possible_number(number)
            except phonenumbers.NumberParseException:
                valid = False
            score = 0.95 if valid else 0.5
        elif re.match(r"(?:\d{4}-\d{2}-\d{2}|\d{1,2}([./])\d{1,2}\1\d{2,4}|\d{2}-\d{2}-\d{4})(?:\s|$)", raw):
            continue  # a date, maybe with its hour ("2007-01-17 23:08")
        elif raw.startswith(("0", "(")) or (grouped and len(digits) >= 9):
            score = 0.7
        elif len(digits) == 10 or (grouped and len(digits) >= 8):
            score = 0.55
        elif grouped:  # "5533 119": as likely a house number and a street number
            score = 0.4
        else:
            score = 0.35
        if context:
            score = min(1.0, score + 0.25)
        yield Found(m.start(), m.start() + len(raw), "PHONE_NUMBER", score)


# ---- IP addresses ---------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


def ip_addresses(text: str) -> Iterator[Found]:
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            try:
                ipaddress.ip_address(m.group())
            except ValueError:
                continue
            if m.group().count(":") >= 2 and not re.search(r"[0-9A-Fa-f]{2}", m.group()):
                continue  # "::" or "1::2" in prose is more likely a ratio or a typo than an address
            yield Found(m.start(), m.end(), "IP_ADDRESS", 0.95)


# ---- secrets --------------------------------------------------------------------------------

_SECRET_PREFIXED = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}"  # GitHub
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}"  # AWS access key id
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|glpat-[A-Za-z0-9_-]{20}"  # GitLab
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r")"
)
_PEM = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.S
)
_TOKEN = re.compile(r"(?<![\w/+.-])[A-Za-z0-9_+/-]{24,}={0,2}(?![\w/+=-])")


def shannon_bits(s: str) -> float:
    counts = Counter(s)
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


def looks_random(token: str) -> bool:
    """A long token mixing upper case, lower case and digits with high entropy per character:
    keys and tokens look like this; words, identifiers, paths and hex hashes do not."""
    if not (any(c.isupper() for c in token) and any(c.islower() for c in token)):
        return False
    digits = sum(c.isdigit() for c in token)
    if digits < 2 or re.search(r"[a-z]{6,}|[A-Z]{8,}", token.replace("_", "")):
        return False  # a word inside: an identifier (camelCase, snake_case), not a key
    return shannon_bits(token) >= 4.0


def secrets(text: str) -> Iterator[Found]:
    for m in _SECRET_PREFIXED.finditer(text):
        yield Found(m.start(), m.end(), "SECRET", 1.0)
    for m in _PEM.finditer(text):
        yield Found(m.start(), m.end(), "SECRET", 1.0)
    for m in _TOKEN.finditer(text):
        if looks_random(m.group()):
            yield Found(m.start(), m.end(), "SECRET", 0.7)


# ---- street addresses -----------------------------------------------------------------------

_STREET_WORDS = (
    r"Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|Square|Sq"
    r"|Terrace|Parkway|Pkwy|Circle|Close|Crescent|Grove|Gardens|Greens|Mall|Highway|Hwy|Row|Walk"
    r"|Hill|Park|Mews|Alley|Trail|Plaza|Route|Gateway|Flats|Courts|Baan|utca|út|tér|körút|ulica|gata|vej"
    r"|Strasse|Straße|Gasse|Weg|Platz|Allee|Straat|Laan|Str"
)
_STREET_AFTER = r"gate|veien|vei|vegen|gade|u\."  # only between a street's name and its number
_STREET_PREFIX = (
    r"Via|Viale|Rua|Rue|rue|Avenida|Av\.|Calle|Carrer|Plaza|Piazza|ul\.|ulica|Corso|Chemin|Boulevard"
)
_STREET_SUFFIX = (
    r"strasse|straße|str\.|weg|gasse|platz|allee|straat|laan|plein|gracht|gatan|vägen|veien|vegen|gata"
    r"|gade|vej|katu|tie|polku|utca|út|út\."
)
# A line of a quoted or bulleted block ("> ", "* "): the address goes on after the marker.
_QUOTE = r"(?:[>*•·|?]+[ \t]*)?"
_UNIT = r"(?i:Suite|Ste\.?|Apt\.?|Apartment|Unit|Flat|Box|PSC|Floor)\s+\d+[A-Za-z]?"
_WORD = r"[^\W\d_][\w'’.-]*"
_CAP = r"[^\W\d_a-z][\w'’.-]*"
_PARTICLE = r"(?:de|del|della|da|do|dos|das|di|du|des|la|le|les|nad|na|am|an|im|sur|upon|on)"
_TAIL = (  # units, a city, a region, a country, a postcode: on further lines or after commas
    rf"(?:(?:\.?\s*,\s*|\.?\s*\n\s*{_QUOTE}|\.?\s+)(?:{_UNIT}|\d{{3,6}}(?:-\d{{4}})?(?![ ]?\d|[-.]\d)|[A-Z]{{2}}\s+\d{{3,6}}(?![ ]?\d)"
    rf"|{_CAP}(?:[ -](?:{_PARTICLE}[ -])?(?:{_CAP}|\(\w+\)))*(?![\w'’.-]*:)(?:\s+\d{{4,6}})?))*"
)
# "the corner of Main Street and 5th Avenue": two streets, the second up to a stop word or a mark.
_NOT_STREET = (
    r"(?!(?:and|or|but|where|which|that|in|on|at|for|to|with|near|by|the|is|was|then|if|when|I|we)\b)"
)
_CORNER = (
    rf"(?i:the\s+)?(?i:corner\s+of)\s+(?:{_NOT_STREET}[^\s,;:?!]+\s+){{0,5}}?"
    rf"(?:\d+\w*|{_CAP})\.?\s+(?:{_NOT_STREET}[^\s,;:?!]+\s+){{0,5}}?and\s+"
    rf"{_NOT_STREET}[\w'’.-]+(?:\s+{_NOT_STREET}[\w'’-]+\.?){{0,3}}"
)
_ADDRESS = re.compile(
    rf"(?<![\w-])(?:"
    rf"\d{{1,6}}[A-Za-z]?(?:\s+\d{{1,5}})?\s+(?:(?:{_WORD}|\d{{1,4}}(?:st|nd|rd|th))\s+){{0,4}}?(?:{_STREET_WORDS})(?!\w)\.?(?:\s+\d{{1,5}}[A-Za-z]?)?"
    rf"|\d{{1,6}}\s+(?:{_CAP}\s+){{0,3}}{_CAP}(?:{_STREET_SUFFIX})\s+\d{{1,5}}[A-Za-z]?"
    rf"|(?:\d{{1,6}}\s+)?{_WORD}(?:{_STREET_SUFFIX})\s+\d{{1,5}}[A-Za-z]?"
    rf"|(?:\d{{1,6}}\s+)?(?:{_STREET_PREFIX})\s+(?:{_WORD}\s+){{0,4}}?\d{{1,5}}[A-Za-z]?"
    rf"|\d{{1,6}}(?:\s+\d{{1,5}})?\s+(?:{_STREET_PREFIX})\s+(?:{_WORD}\s+){{0,4}}?{_CAP}"  # "29 Rue de Tanger"
    rf"|(?:{_CAP}\s+){{0,3}}{_CAP}\s+\d{{1,5}}[A-Za-z]?\.?\s+street\b"  # "Grössgstötten 50 street"
    rf"|\d{{1,6}}\s+(?:{_CAP}\s+){{0,4}}{_CAP}\s+\d{{1,5}}[A-Za-z]?"
    rf"(?=\s*(?:,|\n|{_UNIT}|(?:{_STREET_WORDS})\b|[.?!]?\s*$))"
    rf"|(?:{_CAP}\s+){{0,3}}{_CAP}\s+\d{{1,5}}[A-Za-z]?(?=\s*,\s*\d{{4,5}}\s+{_CAP})"  # "Præstevænget 15, 2000 København"
    rf"|{_CORNER}"
    rf"|(?i:(?:PSC|Unit)\s+\d{{3,5}},?\s+Box\s+\d{{3,5}}(?:\s+[AD]PO\s+A[AEP]\s+\d{{5}})?)"
    rf"|(?i:(?:USNS|USNV|USS|USCGC)\s+{_WORD}\s+FPO\s+A[AEP]\s+\d{{5}})"  # US military mail
    rf"|(?:{_CAP}\s+){{1,3}}(?:{_STREET_WORDS}|{_STREET_AFTER})\.?\s+\d{{1,5}}[A-Za-z]?\b"  # "Nieuwe Baan 473", "Erzsébet tér 19"
    rf"|{_UNIT}"
    rf"){_TAIL}"
)
_STREET_HINT = re.compile(
    rf"\b(?:{_STREET_WORDS}|{_STREET_PREFIX}|(?i:corner of))\b|\w(?:{_STREET_SUFFIX})\b"
)
_TAIL_STOP = re.compile(r"(?:\s*,\s*|\s+)(?:I|We|The|It|He|She|They|And|But|Please|Thanks?)\b.*", re.S)


def street_addresses(text: str) -> Iterator[Found]:
    for m in _ADDRESS.finditer(text):
        end = m.end()
        stop = _TAIL_STOP.search(m.group())
        if stop:
            end = m.start() + stop.start()
        span = text[m.start() : end].rstrip(" ,.\n")
        if not span:
            continue
        # Above spaCy's 0.85 where a street word vouches for it, so a place name inside an
        # address does not cut the address short.
        if _STREET_HINT.search(span):
            score = 0.9
        elif re.search(_UNIT, span) and re.search(r"\d{2,}\D+\d", span):
            score = 0.9  # a unit and a house number: an address, whatever place names it holds
        else:
            score = 0.6
        yield Found(m.start(), m.start() + len(span), "STREET_ADDRESS", score)


# ---- country names (spaCy's small model misses many) ----------------------------------------

_countries: re.Pattern[str] | None = None


def countries(text: str) -> Iterator[Found]:
    """English country names, from the region names phonenumbers ships."""
    global _countries
    if _countries is None:
        from phonenumbers.geodata.locale import LOCALE_DATA

        names = {v["aa"] for v in LOCALE_DATA.values() if not v.get("aa", "*").startswith("*")}
        names |= {"USA", "UK", "United States", "Czech Republic", "Great Britain"}
        alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        _countries = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    for m in _countries.finditer(text):
        if m.group()[0].isupper():  # "china" the porcelain, "turkey" the bird
            yield Found(m.start(), m.end(), "LOCATION", 0.7)


# A place in capitals after a preposition ("flew to LEPPEN", "from ΕΓΚΩΜΗ"), which the model
# trained on mixed case misses.
_CAPS_PLACE = re.compile(
    r"\b(?:in|from|to|at|near|visit|visited|visiting)\s+([^\W\d_a-z]{4,}(?:[ -][^\W\d_a-z]{2,})*)(?!\w)"
)


def capitals_places(text: str) -> Iterator[Found]:
    for m in _CAPS_PLACE.finditer(text):
        yield Found(m.start(1), m.end(1), "LOCATION", 0.55)


# ---- person names (beside spaCy's) --------------------------------------------------------

_NAME = r"[^\W\d_a-z][^\W\d_]+(?:-[^\W\d_a-z][^\W\d_]+)?"
_NOT_UNIT = r"(?!(?:Apt|Apartment|Suite|Ste|Unit|Box|Flat|Floor|PSC)\b)"
_TITLED = re.compile(
    rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Madam|mr\.|mrs\.|ms\.|dr\.)\.?\s+((?:{_NAME}\s+){{0,2}}{_NOT_UNIT}{_NAME})"
)
_INITIAL = re.compile(rf"(?<![\w.])({_NAME}\s+[A-Z]\.?\s+{_NAME})(?![\w])")
_NAMED = re.compile(
    rf"\b(?:[Nn]ame is|[Nn]ame:|[Cc]alled|[Ss]igned,?|[Rr]egards,)\s+({_NAME}(?:\s+{_NAME}){{0,2}})"
)


_NOT_NAMES = (
    r"(?:We|You|He|She|They|It|This|That|These|Those|There|The|My|Our|Your|His|Her|Their|Everyone"
    r"|Everybody|Someone|Somebody|Nobody|No one|People|Who|One|Each|All|Mom|Dad)"
)
# The subject of a verb only people do: above spaCy's 0.85, which takes many such names for places.
_DOER = re.compile(
    rf"(?:^|(?<=[.!?:>\n])\s*|\b(?:and|but|that|when|while|because)\s+)(?!{_NOT_NAMES}\b)({_NAME}(?:\s+{_NAME})?)"
    r"\s+(?:lives|lived|spent|said|says|was born|works|worked|moved|wrote|told|asked|flew|is from|was from"
    r"|had given|has given|calls|called me|smiled|replied|thinks|thought|wants|loves|hates|married)\b"
)


def person_names(text: str) -> Iterator[Found]:
    """Names a title, a middle initial, "name is" or a person's verb vouches for (spaCy finds the
    others)."""
    for pattern, score in ((_TITLED, 0.9), (_INITIAL, 0.8), (_NAMED, 0.8), (_DOER, 0.86)):
        for m in pattern.finditer(text):
            if not m.group(1).isupper():  # "CAN I SPEAK" is shouting, not a name with an initial
                yield Found(m.start(1), m.end(1), "PERSON", score)


RECOGNIZERS: tuple[Recognizer, ...] = (
    capitals_places,
    countries,
    person_names,
    emails,
    credit_cards,
    ibans,
    ssns,
    phones,
    ip_addresses,
    secrets,
    street_addresses,
)
