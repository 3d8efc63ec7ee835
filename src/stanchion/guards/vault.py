"""Reversible pseudonyms for PII: mask text before it leaves the process, restore the answer.

A ``PseudonymVault`` belongs to one tenant and one conversation (or request): ``VaultScope``.
``mask(text, spans)`` replaces each span by the value's pseudonym, the same one for the same value
in every text the vault masks, and ``restore(text)`` puts the originals back:
``restore(mask(x, spans)) == x`` for every text and every set of spans (overlapping spans are
merged, so no part of a detected value is ever left unmasked).

Two styles: ``placeholder`` (``<PERSON_1>``, ``<EMAIL_ADDRESS_2>``) and ``fake`` (realistic values
from reserved ranges, ``guards/fakes.py``; types without a generator get a placeholder).

What ``restore`` puts back: a pseudonym this vault issued, and nothing else. A fake only spelled
exactly as issued; a placeholder also in another case and with one space inside either bracket
(``<person_1>``, ``< PERSON_1 >``). Not: other brackets (``[PERSON_1]``), no brackets, HTML
entities, a number the vault never issued (``<PERSON_9>`` stays as written).

Input that already holds something ``restore`` would rewrite cannot be restored into something
else: a new pseudonym is never one that occurs in the text being masked, and a pseudonym issued
earlier that occurs in a later text as written is itself masked as a value (it restores to itself).
Values the vault already knows are masked again where they occur whole in a later text, even where
the detector missed them there.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from stanchion.guards.fakes import fake_value

Style = Literal["placeholder", "fake"]
STYLES: tuple[Style, ...] = ("placeholder", "fake")

# What restore accepts as a placeholder: ``<`` KEY ``>``, at most one space or tab inside each
# bracket, KEY in any case. The same grammar finds placeholder-like text in input.
_PLACEHOLDER_LIKE = re.compile(r"<[ \t]?([A-Za-z0-9_]+)[ \t]?>")
_PLACEHOLDER_PREFIX = re.compile(r"<[ \t]?([A-Za-z0-9_]*)([ \t]?)")
_FAKE_TRIES = 64


class SpanLike(Protocol):
    """A detected value: ``text[start:end]`` is of type ``entity`` (``PiiSpan`` has these)."""

    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def entity(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Span:
    """A minimal ``SpanLike`` (tests and callers without a detector)."""

    start: int
    end: int
    entity: str


@dataclass(frozen=True, slots=True)
class VaultScope:
    """Whose pseudonyms: one tenant, and in it one conversation (or a request's id when the call
    belongs to no conversation). ``user`` keeps two callers of a tenant who reuse a conversation id
    apart. A vault is never shared across scopes, so never across tenants."""

    tenant: str
    conversation: str
    user: str = ""

    def __post_init__(self) -> None:
        if not self.tenant or not self.conversation:
            raise ValueError("a vault scope needs a tenant and a conversation (or request) id")

    @property
    def key(self) -> str:
        """The store key: ``pii-vault:<tenant>:<user>:<conversation>``, each part escaped."""
        parts = (self.tenant, self.user, self.conversation)
        return "pii-vault:" + ":".join(p.replace("%", "%25").replace(":", "%3A") for p in parts)


def entity_name(entity: str) -> str:
    """A detector's entity as it appears in a placeholder: ``email address`` -> ``EMAIL_ADDRESS``."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", entity).strip("_").upper() or "PII"
    return name if name[0].isalpha() else f"PII_{name}"


class PseudonymVault:
    """Pseudonyms of one scope, until ``expires_at`` (a ``time.time()`` instant; None: never).

    The vault keeps working past its expiry for whoever holds it (a request under way); the store
    stops handing it out. ``secret`` seeds the fakes (random per vault unless given). Its methods
    never await, so the requests of one event loop may share it; threads need a lock around it."""

    def __init__(
        self,
        scope: VaultScope,
        *,
        style: Style = "placeholder",
        secret: bytes | None = None,
        expires_at: float | None = None,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown pseudonym style {style!r}: use one of {', '.join(STYLES)}")
        self.scope = scope
        self.style: Style = style
        self.expires_at = expires_at
        self._secret = secret if secret is not None else secrets.token_bytes(16)
        self._by_value: dict[str, str] = {}  # original -> pseudonym used in masked text
        self._placeholder_of: dict[str, str] = {}  # original -> its placeholder key (PERSON_1)
        self._originals: dict[str, str] = {}  # placeholder key or fake -> original
        self._entity_of: dict[str, str] = {}  # pseudonym (key or fake) -> entity name
        self._counts: dict[str, int] = {}
        self._fake_attempts: dict[str, int] = {}
        self._keys: set[str] = set()  # placeholder keys issued
        self._fakes: set[str] = set()  # fakes issued
        self._prefixes: tuple[frozenset[str], frozenset[str], int] | None = None
        self._pattern: re.Pattern[str] | None = None
        self._known: re.Pattern[str] | None = None

    # --- what the vault holds -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_value)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at

    def pseudonym(self, value: str) -> str | None:
        """The pseudonym masked text uses for ``value``, or None if the vault has not seen it."""
        return self._by_value.get(value)

    @property
    def placeholder_keys(self) -> frozenset[str]:
        """Every placeholder issued, without brackets (``PERSON_1``); fake-style vaults too."""
        return frozenset(self._keys)

    @property
    def fakes(self) -> frozenset[str]:
        return frozenset(self._fakes)

    # --- state, for a store that keeps vaults outside the process -----------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything the vault holds, as JSON-ready data (the secret included: store it as the
        values themselves are stored, never log it)."""
        entries = []
        for value, key in self._placeholder_of.items():
            pseudonym = self._by_value[value]
            entries.append(
                [value, self._entity_of[key], key, None if pseudonym.startswith("<") else pseudonym]
            )
        return {
            "style": self.style,
            "secret": self._secret.hex(),
            "expires_at": self.expires_at,
            "entries": entries,
            "counts": dict(self._counts),
            "fake_attempts": dict(self._fake_attempts),
        }

    @classmethod
    def from_state(cls, scope: VaultScope, state: Mapping[str, Any]) -> PseudonymVault:
        """The vault ``to_state`` described, for ``scope``."""
        vault = cls(
            scope, style=state["style"], secret=bytes.fromhex(state["secret"]), expires_at=state["expires_at"]
        )
        for value, entity, key, fake in state["entries"]:
            vault._placeholder_of[value] = key
            vault._keys.add(key)
            vault._originals[key] = value
            vault._entity_of[key] = entity
            if fake is not None:
                vault._fakes.add(fake)
                vault._originals[fake] = value
                vault._entity_of[fake] = entity
            vault._by_value[value] = fake if fake is not None else f"<{key}>"
        vault._counts = dict(state["counts"])
        vault._fake_attempts = dict(state["fake_attempts"])
        return vault

    # --- mask -----------------------------------------------------------------------------------

    def mask(self, text: str, spans: Iterable[SpanLike]) -> str:
        """``text`` with every span, every value the vault knows, and every pseudonym it issued
        before, replaced by a pseudonym. Overlapping spans are merged into one value."""
        regions = self._regions(text, spans)
        masked = self._render(text, regions, fakes=self.style == "fake")
        if self.style == "fake" and self.restore(masked) != text:
            # A fake next to other text spelled another fake ("Jane Ro" + "e..."): this text
            # uses placeholders, which nothing can straddle (fakes hold no angle brackets).
            masked = self._render(text, regions, fakes=False)
        if self.restore(masked) != text:  # pragma: no cover - the construction rules this out
            raise AssertionError("masked text does not restore to its input")
        return masked

    def _regions(self, text: str, spans: Iterable[SpanLike]) -> list[tuple[int, int, str]]:
        merged: list[tuple[int, int, str]] = []
        for span in sorted(spans, key=lambda s: (s.start, -s.end)):
            start, end = span.start, span.end
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(text)):
                raise ValueError(
                    f"span {start}..{end} ({span.entity}) lies outside the text (length {len(text)})"
                )
            if start == end:
                continue
            if merged and start < merged[-1][1]:
                first, last, entity = merged[-1]
                merged[-1] = (first, max(last, end), entity)
            else:
                merged.append((start, end, entity_name(span.entity)))
        # No new pseudonym may be spelled anywhere in this text (as placeholder-like text either).
        burned = {m.group(1).upper() for m in _PLACEHOLDER_LIKE.finditer(text)}
        for start, end, entity in merged:
            self._issue(text[start:end], entity, text, burned)
        regions: list[tuple[int, int, str]] = []
        cursor = 0
        for start, end, entity in merged:
            regions.extend(self._in_gap(text, cursor, start))
            regions.append((start, end, entity))
            cursor = end
        regions.extend(self._in_gap(text, cursor, len(text)))
        for start, end, entity in regions:  # earlier pseudonyms written as text: escaped
            self._issue(text[start:end], entity, text, burned)
        return regions

    def _in_gap(self, text: str, start: int, end: int) -> list[tuple[int, int, str]]:
        """Known values and issued pseudonyms in ``text[start:end]``, as regions to mask."""
        found: list[tuple[int, int, str]] = []
        pattern = self._restore_pattern()
        known = self._known_pattern()
        pos = start
        while pos < end:
            hits = [m for m in (p.search(text, pos, end) for p in (pattern, known) if p) if m]
            if not hits:
                break
            m = min(hits, key=lambda h: (h.start(), -h.end()))
            value = m.group()
            if m.re is pattern:
                entity = self._entity_of[self._lookup(value)]
            else:
                entity = self._entity_of[self._lookup(self._by_value[value])]
            found.append((m.start(), m.end(), entity))
            pos = m.end()
        return found

    def _issue(self, value: str, entity: str, text: str, burned: set[str]) -> None:
        if value in self._by_value:
            return
        n = self._counts.get(entity, 0)
        while True:
            n += 1
            key = f"{entity}_{n}"
            if key not in burned and key not in self._originals:
                break
        self._counts[entity] = n
        self._placeholder_of[value] = key
        self._keys.add(key)
        self._originals[key] = value
        self._entity_of[key] = entity
        pseudonym = f"<{key}>"
        if self.style == "fake":
            fake = self._new_fake(value, entity, text)
            if fake is not None:
                self._fakes.add(fake)
                self._originals[fake] = value
                self._entity_of[fake] = entity
                pseudonym = fake
        self._by_value[value] = pseudonym
        self._pattern = self._known = None
        self._prefixes = None

    def _new_fake(self, value: str, entity: str, text: str) -> str | None:
        attempt = self._fake_attempts.get(entity, 0)
        for _ in range(_FAKE_TRIES):
            candidate = fake_value(self._secret, entity, value, attempt)
            attempt += 1
            if candidate is None:
                return None
            if (
                candidate not in text
                and candidate not in self._originals
                and candidate not in self._by_value
                and not any(candidate in f or f in candidate for f in self._fakes)
            ):
                self._fake_attempts[entity] = attempt
                return candidate
        self._fake_attempts[entity] = attempt
        return None

    def _render(self, text: str, regions: Sequence[tuple[int, int, str]], *, fakes: bool) -> str:
        out: list[str] = []
        cursor = 0
        for start, end, _ in regions:
            value = text[start:end]
            out.append(text[cursor:start])
            out.append(self._by_value[value] if fakes else f"<{self._placeholder_of[value]}>")
            cursor = end
        out.append(text[cursor:])
        return "".join(out)

    # --- restore --------------------------------------------------------------------------------

    def restore(self, text: str) -> str:
        """``text`` with every pseudonym this vault issued replaced by its original."""
        pattern = self._restore_pattern()
        if pattern is None:
            return text
        return pattern.sub(lambda m: self._originals[self._lookup(m.group())], text)

    def original(self, pseudonym: str) -> str | None:
        """The original behind one pseudonym as ``restore`` would match it, or None."""
        pattern = self._restore_pattern()
        if pattern is None or pattern.fullmatch(pseudonym) is None:
            return None
        return self._originals[self._lookup(pseudonym)]

    def _lookup(self, matched: str) -> str:
        """The vault's key (placeholder key or fake) of a pseudonym as ``restore_pattern`` matched it."""
        return _placeholder_key(matched) or matched

    def _restore_pattern(self) -> re.Pattern[str] | None:
        """Every issued pseudonym: placeholders in their accepted variants, fakes longest first."""
        if self._pattern is None and self._originals:
            keys = sorted(self._keys, key=len, reverse=True)
            parts = []
            if keys:
                parts.append(r"(?i:<[ \t]?(?:" + "|".join(map(re.escape, keys)) + r")[ \t]?>)")
            parts.extend(re.escape(f) for f in sorted(self._fakes, key=len, reverse=True))
            self._pattern = re.compile("|".join(parts), re.ASCII)  # ASCII: "ſ" is no "s" here
        return self._pattern

    def _known_pattern(self) -> re.Pattern[str] | None:
        """Known values (3 characters or more) where they stand whole: not inside a word."""
        if self._known is None:
            values = sorted((v for v in self._by_value if len(v) >= 3), key=len, reverse=True)
            if not values:
                return None
            parts = [
                (r"(?<!\w)" if v[0].isalnum() or v[0] == "_" else "")
                + re.escape(v)
                + (r"(?!\w)" if v[-1].isalnum() or v[-1] == "_" else "")
                for v in values
            ]
            self._known = re.compile("|".join(parts))
        return self._known

    # --- for the stream restorer ---------------------------------------------------------------

    def partial_start(self, text: str, pos: int = 0) -> int:
        """The first index ``i >= pos`` where ``text[i:]`` could still grow into an issued
        pseudonym (a proper prefix of one), or ``len(text)`` where none could."""
        if self._prefixes is None:
            fake_prefixes = frozenset(f[:k] for f in self._fakes for k in range(1, len(f)))
            key_prefixes = frozenset(k[:i] for k in self._keys for i in range(len(k) + 1))
            self._prefixes = (fake_prefixes, key_prefixes, max(map(len, self._fakes), default=0))
        fake_prefixes, key_prefixes, longest = self._prefixes
        n = len(text)
        best = n
        for i in range(max(pos, n - longest + 1), n):
            if text[i:] in fake_prefixes:
                best = i
                break
        lt = text.rfind("<", pos)
        if lt != -1 and lt < best:
            m = _PLACEHOLDER_PREFIX.fullmatch(text, lt)
            if m is not None:
                core = m.group(1).upper()
                if (core in self._keys) if m.group(2) else (core in key_prefixes):
                    best = lt
        return best

    def restore_pattern(self) -> re.Pattern[str] | None:
        """What ``restore`` matches (None while the vault is empty); it changes as values come."""
        return self._restore_pattern()


def _placeholder_key(matched: str) -> str | None:
    m = _PLACEHOLDER_LIKE.fullmatch(matched)
    return m.group(1).upper() if m else None
