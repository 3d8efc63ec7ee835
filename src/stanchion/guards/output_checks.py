"""Checks on an answer before the caller sees it: pure functions over text, run on every answer.

``system_prompt_leak(answer, system_prompts, canaries=..., quotable=...)`` says whether the answer
repeats a system prompt:

- a *canary* appears (a string only the prompt holds, e.g. the answer prompt's nonce): as written,
  in any case, or (canaries of 12 letters and digits or more) with spaces or punctuation inside;
- a *verbatim run*: 8 consecutive words of a prompt (a prompt of fewer than 10 words: 80% of its
  words, at least 4), compared as words: case, punctuation, line breaks, markdown, bullets,
  numbers of one or two digits (list markers ``1.``, citation markers ``[2]``) do not count;
- a *share*: runs of 4 words or more that together cover 40% of a prompt's words (12 at least):
  a prompt copied with a word changed every few words.

Common phrases an answer shares with a prompt ("based on the sources") are shorter than these
runs; what a prompt tells the model to say (the abstain sentence) is passed as ``quotable`` and
never counts. Out of scope: translations and paraphrases of a prompt.

``unexplained_pii(answer_spans, allowed_texts)`` returns the PII spans of an answer whose value
appears in none of ``allowed_texts`` (the caller's input and the sources the caller may read),
compared per entity: phone numbers, cards and SSNs by their digits (a phone also without its
country code or trunk 0), IBANs by letters and digits, e-mail and IP addresses case-folded as whole
tokens, secrets exactly, names and everything else case-folded as whole words with any
punctuation or spacing between words. A name is explained by any whole-word mention: a surname
alone by the full name, a title (``Dr.``) or possessive (``'s``) aside, an initial (``M.``) by a
name with that initial, a full name by ``Last, First`` or with a middle initial.
``redact(answer, spans)`` replaces each span by ``[REDACTED <ENTITY>]``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from stanchion.guards.pii import PiiSpan
from stanchion.guards.vault import entity_name

__all__ = ["LeakVerdict", "redact", "system_prompt_leak", "unexplained_pii"]

VERBATIM_WORDS = 8
SHARE_RUN_WORDS = 4
SHARE = 0.4
SHARE_MIN_WORDS = 12
MIN_PROMPT_WORDS = 4
COMPACT_CANARY = 12  # canaries this long (letters and digits) are also found with text inside

_TOKEN = re.compile(r"[^\W_]+")  # letters and digits; numbers of 1-2 digits (list and citation
# markers: "1.", "[2]") are then left out
_ALNUM = re.compile(r"[^\W_]")


@dataclass(frozen=True, slots=True)
class LeakVerdict:
    """Why an answer counts as repeating a system prompt.

    ``reason``: ``canary``, ``verbatim`` or ``share``; ``start``/``end``: where in the answer (the
    canary, or the longest run the answer shares with the prompt); ``prompt``: the index in
    ``system_prompts`` (-1 for a canary); ``words``: that run's length in words; ``share``: the
    part of the prompt's words the answer repeats in runs of 4 words or more."""

    reason: Literal["canary", "verbatim", "share"]
    start: int
    end: int
    prompt: int = -1
    words: int = 0
    share: float = 0.0


def system_prompt_leak(
    answer: str,
    system_prompts: Sequence[str],
    *,
    canaries: Iterable[str] = (),
    quotable: Sequence[str] = (),
) -> LeakVerdict | None:
    """The first sign that ``answer`` repeats one of ``system_prompts`` (see the module
    docstring), or None. ``quotable``: parts of the prompts the answer may repeat."""
    folded = answer.casefold()
    tokens = _TOKEN.findall(folded)  # the answer's letters and digits, in runs: read once
    found = _canary(answer, folded, tokens, canaries)
    if found is not None:
        return found
    words: list[str] | None = None
    answer_grams: dict[int, list[tuple[str, ...]]] = {}
    for index, prompt in enumerate(system_prompts):
        grams, size, width = _prompt_index(prompt, tuple(quotable))
        if not grams:
            continue
        if words is None:
            words = _without_markers(tokens)
        if width not in answer_grams:
            answer_grams[width] = list(zip(*(words[k:] for k in range(width)), strict=False))
        mine = answer_grams[width]
        if grams.keys().isdisjoint(mine):  # the usual case: not one run of 4 words in common
            continue
        verdict = _compare(answer, mine, grams, size, width, index)
        if verdict is not None:
            return verdict
    return None


def _canary(answer: str, folded: str, tokens: list[str], canaries: Iterable[str]) -> LeakVerdict | None:
    exact = len(folded) == len(answer)  # casefold may change lengths (ß -> ss): then no offsets
    compact: str | None = None
    for canary in canaries:
        if not canary.strip():
            raise ValueError("a canary must be a non-empty string (an empty one is in every answer)")
        at = folded.find(canary.casefold())
        if at >= 0:
            return (
                LeakVerdict("canary", at, at + len(canary))
                if exact
                else LeakVerdict("canary", 0, len(answer))
            )
        needle = "".join(_TOKEN.findall(canary.casefold()))
        if len(needle) < COMPACT_CANARY:
            continue
        if compact is None:
            compact = "".join(tokens)
        at = compact.find(needle)
        if at >= 0:
            return _canary_at(answer, at, len(needle), exact=exact)
    return None


def _canary_at(answer: str, at: int, length: int, *, exact: bool) -> LeakVerdict:
    """Where the ``at``-th letter or digit of ``answer`` and the ``length`` after it lie."""
    if not exact:
        return LeakVerdict("canary", 0, len(answer))
    positions = [m.start() for m in _ALNUM.finditer(answer)]
    return LeakVerdict("canary", positions[at], positions[at + length - 1] + 1)


def _words(text: str) -> list[str]:
    """``text``'s words, case-folded, list and citation markers left out."""
    return _without_markers(_TOKEN.findall(text.casefold()))


def _without_markers(tokens: list[str]) -> list[str]:
    return [w for w in tokens if len(w) > 2 or not w.isdigit()]


def _word_spans(answer: str) -> list[tuple[int, int]]:
    """Where each of ``_words(answer)`` lies in ``answer`` (made only for a verdict)."""
    return [m.span() for m in _TOKEN.finditer(answer) if len(m.group()) > 2 or not m.group().isdigit()]


@functools.lru_cache(maxsize=32)
def _prompt_index(
    prompt: str, quotable: tuple[str, ...]
) -> tuple[dict[tuple[str, ...], list[int]], int, int]:
    """The prompt's ``width``-word runs (quotable parts left out) -> where they start; its number
    of words; ``width``. Empty for a prompt too short to check."""
    words: list[str | None] = list(_words(prompt))
    size = len(words)
    for text in quotable:
        q: list[str | None] = list(_words(text))
        for start in range(size - len(q) + 1) if q else ():
            if words[start : start + len(q)] == q:
                words[start : start + len(q)] = [None] * len(q)
    if size < MIN_PROMPT_WORDS:
        return {}, size, 0
    width = min(SHARE_RUN_WORDS, size)
    grams: dict[tuple[str, ...], list[int]] = {}
    for start in range(size - width + 1):
        gram = words[start : start + width]
        if None not in gram:
            grams.setdefault(tuple(gram), []).append(start)  # type: ignore[arg-type]
    return grams, size, width


def _compare(
    answer: str,
    answer_grams: list[tuple[str, ...]],
    grams: dict[tuple[str, ...], list[int]],
    size: int,
    width: int,
    index: int,
) -> LeakVerdict | None:
    verbatim = min(VERBATIM_WORDS, max(width, -(-size * 4 // 5)))
    covered = bytearray(size)
    previous: dict[int, int] = {}  # prompt start -> runs of grams ending at the previous answer word
    best, best_end = 0, 0
    for i, gram in enumerate(answer_grams):
        starts = grams.get(gram)
        if not starts:
            previous = {}
            continue
        current = {}
        for j in starts:
            run = previous.get(j - 1, 0) + 1
            current[j] = run
            covered[j : j + width] = b"\x01" * width
            if run > best:
                best, best_end = run, i
        previous = current
    run_words = best + width - 1
    share = sum(covered) / size
    if run_words >= verbatim:
        reason: Literal["verbatim", "share"] = "verbatim"
    elif share >= SHARE and share * size >= SHARE_MIN_WORDS:
        reason = "share"
    else:
        return None
    spans = _word_spans(answer)
    first, last = best_end - best + 1, best_end + width - 1
    if len(spans) != len(answer_grams) + width - 1:  # casefold split a word differently
        return LeakVerdict(reason, 0, len(answer), index, run_words, share)
    return LeakVerdict(reason, spans[first][0], spans[last][1], index, run_words, share)


# --- PII an answer holds that nothing the caller gave or may read explains ---------------------

_DIGITS = frozenset({"PHONE_NUMBER", "CREDIT_CARD", "US_SSN"})
_TITLES = frozenset(
    ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sir", "dame", "madam", "lord", "lady", "rev")
)  # fmt: skip
_WORD = re.compile(r"\w+")
_NUMBER_SEPARATORS = r"\s*[().\-/+]?\s*[().\-/+]?\s*"  # +1 (415) 555-0100
_CODE_SEPARATORS = r"\s*-?\s*"
_APART = "\n_\x00_\n"  # between two allowed texts: no value, name or number runs across it
_BETWEEN_NAMES = r"\W+(?:\w\.?\W*)?"  # any punctuation or spacing, perhaps a middle initial


class _Allowed:
    """``allowed_texts`` and their projections, each made on first need."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.raw = _APART.join(texts)
        self._folded: str | None = None

    @property
    def folded(self) -> str:
        if self._folded is None:
            self._folded = self.raw.casefold()
        return self._folded

    def explains(self, span: PiiSpan) -> bool:
        entity, value = span.entity, span.text
        if entity in _DIGITS:
            digits = "".join(ch for ch in value if ch.isdigit())
            if not digits:
                return self._whole(value.casefold())
            forms = _phone_forms(digits) if entity == "PHONE_NUMBER" else (digits,)
            return any(_spread(self.raw, form, _NUMBER_SEPARATORS) for form in forms)
        if entity == "IBAN_CODE":
            code = "".join(ch for ch in value.upper() if ch.isalnum())
            return bool(code) and _spread(self.raw, code, _CODE_SEPARATORS, flags=re.IGNORECASE)
        if entity == "SECRET":
            return value in self.raw
        if entity in ("EMAIL_ADDRESS", "IP_ADDRESS"):
            return any(self._token(form) for form in _address_forms(value))
        return self._words(value, person=entity == "PERSON")

    def _token(self, value: str) -> bool:
        """``value`` (folded) stands in the texts as a whole token: no word character, dot, plus,
        at sign or hyphen glued to it (a final full stop is fine)."""
        return _occurs(self.folded, value, re.escape(value) + r"(?![\w+@-]|\.\w)", glue=".+@-")

    def _whole(self, value: str) -> bool:
        return _occurs(self.folded, value, re.escape(value) + r"(?!\w)")

    def _words(self, value: str, *, person: bool) -> bool:
        words = [w.casefold() for w in _WORD.findall(value)]
        if person:
            if len(words) > 1 and re.search(r"['\u2019]s\W*$", value):
                words.pop()  # Lindqvist's
            while words and words[0] in _TITLES:
                words.pop(0)
        if not words:
            return True  # nothing identifying left ("Dr.")
        parts = [(re.escape(w) + r"\w*") if person and len(w) == 1 else re.escape(w) for w in words]
        pattern = (_BETWEEN_NAMES if person else r"\W+").join(parts) + r"(?!\w)"
        if _occurs(self.folded, words[0], pattern):
            return True
        if person and len(parts) > 1:  # Lindqvist, Marta
            reverse = parts[-1] + r"\W+" + r"\W+".join(parts[:-1]) + r"(?!\w)"
            return _occurs(self.folded, words[-1], reverse)
        return False


def _occurs(text: str, lead: str, pattern: str, *, glue: str = "") -> bool:
    """Whether ``pattern``, which starts with the literal ``lead``, matches somewhere in ``text``
    that no word character (nor one of ``glue``) precedes. Candidates come from ``str.find``, so
    a long text costs a scan in C, not a regex step per character."""
    if len(lead) < 2:  # an initial: too common to scan for
        return re.search(rf"(?<![\w{re.escape(glue)}])(?:{pattern})", text) is not None
    compiled = re.compile(pattern)
    at = text.find(lead)
    while at >= 0:
        before = text[at - 1] if at else " "
        if not (before.isalnum() or before == "_" or before in glue) and compiled.match(text, at):
            return True
        at = text.find(lead, at + 1)
    return False


def _spread(text: str, chars: str, separators: str, *, flags: int = 0) -> bool:
    """Whether ``chars`` occur in ``text`` in order, with only ``separators`` between them (a
    regex that starts with a literal: the search skips ahead in C)."""
    return re.search(separators.join(map(re.escape, chars)), text, flags) is not None


def _phone_forms(digits: str) -> set[str]:
    """The number, without its trunk 0s, and without a 1-3 digit country code (7 digits kept)."""
    forms = {digits}
    trimmed = digits.lstrip("0")
    if len(trimmed) >= 7:
        forms.add(trimmed)
    forms.update(digits[i:] for i in (1, 2, 3) if len(digits) - i >= 7)
    return forms


def _address_forms(value: str) -> list[str]:
    folded = value.strip().casefold()
    forms = [folded]
    try:
        address = ipaddress.ip_address(folded)
    except ValueError:
        return forms
    if address.version == 6:
        forms += [address.compressed, address.exploded]
    return forms


def unexplained_pii(answer_spans: Iterable[PiiSpan], allowed_texts: Iterable[str]) -> list[PiiSpan]:
    """The spans (detected in an answer) whose value none of ``allowed_texts`` holds, in order
    given; see the module docstring for how values are compared."""
    spans = list(answer_spans)
    if not spans:
        return []
    allowed = _Allowed(allowed_texts)
    return [span for span in spans if not allowed.explains(span)]


def redact(answer: str, spans: Iterable[PiiSpan]) -> str:
    """``answer`` with each span replaced by ``[REDACTED <ENTITY>]`` (overlapping spans become one,
    named by the first). A span that is not ``answer[start:end]`` is a ``ValueError``."""
    regions: list[tuple[int, int, str]] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if not 0 <= span.start <= span.end <= len(answer) or answer[span.start : span.end] != span.text:
            raise ValueError(
                f"span {span.start}..{span.end} ({span.entity}) is not in the answer as detected: "
                "detect on the text you redact"
            )
        if span.start == span.end:
            continue
        if regions and span.start < regions[-1][1]:
            first, last, entity = regions[-1]
            regions[-1] = (first, max(last, span.end), entity)
        else:
            regions.append((span.start, span.end, span.entity))
    if not regions:
        return answer
    out: list[str] = []
    cursor = 0
    for start, end, entity in regions:
        out.append(answer[cursor:start])
        out.append(f"[REDACTED {entity_name(entity)}]")
        cursor = end
    out.append(answer[cursor:])
    return "".join(out)
