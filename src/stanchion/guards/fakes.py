"""Realistic fake values for the pseudonym vault's ``fake`` style, deterministic per vault.

Each fake is drawn from ranges reserved for examples, so it is no one's real value: names from a
short list of placeholder names, e-mail at ``example.com`` (RFC 2606), US phone numbers in
555-0100..0199 (reserved for fiction), IPv4 in the documentation ranges (RFC 5737), IPv6 in
``2001:db8::/32`` (RFC 3849), cards on the Visa test prefix 4000 with a valid Luhn digit, IBANs
with a valid checksum on the made-up bank code ``XTST``, and SSNs with group 00 (never issued).
The vault still checks that a fake equals no real value it holds and occurs nowhere in the text it
masks. A fake never contains ``<``, ``>``, ``"`` or ``\\``, so it cannot straddle a placeholder nor
break a JSON string. Types without a generator get a placeholder (``<LOCATION_1>``) instead.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

_FIRST = (
    "Jane", "John", "Alex", "Maria", "Sam", "Priya", "Lena", "Omar", "Chen", "Nora",
    "Ivan", "Ada", "Tomas", "Yuki", "Rosa", "Felix", "Hana", "Mateo", "Iris", "Kofi",
)  # fmt: skip
_LAST = (
    "Roe", "Doe", "Moreno", "Quill", "Hartley", "Okafor", "Lindqvist", "Tanaka", "Varga",
    "Whitlock", "Ferreira", "Novak", "Brennan", "Sato", "Castell", "Mbeki", "Arden", "Kowal",
)  # fmt: skip
_AREA = ("202", "312", "415", "503", "617", "702", "808", "907")
_IPV4 = ("192.0.2.", "198.51.100.", "203.0.113.")

# Entity names a detector may use, mapped to the generator's own name.
_ALIASES = {
    "PERSON": "PERSON",
    "NAME": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "EMAIL": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "PHONE": "PHONE",
    "CREDIT_CARD": "CARD",
    "CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IBAN": "IBAN",
    "US_SSN": "SSN",
    "SSN": "SSN",
    "IP_ADDRESS": "IP",
    "IP": "IP",
}


def _rand(secret: bytes, entity: str, attempt: int) -> int:
    digest = hmac.new(secret, f"{entity}\x1f{attempt}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:16], "big")


def luhn_digit(digits: str) -> str:
    """The check digit that makes ``digits`` + it pass the Luhn test."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    digits = [c for c in number if c.isdigit()]
    return len(digits) > 1 and luhn_digit("".join(digits[:-1])) == digits[-1]


def iban_check(country: str, bban: str) -> str:
    """The two check digits of an IBAN (ISO 13616, mod 97)."""
    moved = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in moved))
    return f"{98 - number % 97:02d}"


def iban_valid(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    moved = compact[4:] + compact[:4]
    return len(compact) > 4 and int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _person(r: int, original: str) -> str:
    return f"{_FIRST[r % len(_FIRST)]} {_LAST[(r // len(_FIRST)) % len(_LAST)]}"


def _email(r: int, original: str) -> str:
    first, last = _person(r, original).lower().split()
    return f"{first}.{last}{r // 997 % 100}@example.com"


def _phone(r: int, original: str) -> str:
    return f"+1 {_AREA[r % len(_AREA)]}-555-01{r // 8 % 100:02d}"


def _card(r: int, original: str) -> str:
    count = sum(c.isdigit() for c in original)
    count = count if 13 <= count <= 19 else 16
    body = "4000" + str(r).zfill(40)[-(count - 5) :]
    digits = iter(body + luhn_digit(body))
    if sum(c.isdigit() for c in original) == count:  # keep the original's grouping
        return "".join(next(digits) if c.isdigit() else c for c in original)
    number = "".join(digits)
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


def _iban(r: int, original: str) -> str:
    bban = "XTST" + str(r).zfill(30)[-14:]
    compact = "GB" + iban_check("GB", bban) + bban
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def _ssn(r: int, original: str) -> str:
    return f"9{r % 100:02d}-00-{r // 100 % 10000:04d}"


def _ip(r: int, original: str) -> str:
    if ":" in original:
        return f"2001:db8::{r % 0xFFFF:x}"
    return f"{_IPV4[r % 3]}{100 + r // 3 % 100}"


_GENERATORS: dict[str, Callable[[int, str], str]] = {
    "PERSON": _person,
    "EMAIL": _email,
    "PHONE": _phone,
    "CARD": _card,
    "IBAN": _iban,
    "SSN": _ssn,
    "IP": _ip,
}


def fake_value(secret: bytes, entity: str, original: str, attempt: int) -> str | None:
    """The ``attempt``-th candidate fake for a value of ``entity`` (normalised name), or None when
    the type has no generator. Same secret, entity, original and attempt: the same candidate."""
    kind = _ALIASES.get(entity)
    if kind is None:
        return None
    return _GENERATORS[kind](_rand(secret, kind, attempt), original)
