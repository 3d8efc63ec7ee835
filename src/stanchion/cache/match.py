"""May a cached question answer the asked one? The check after the embedding match.

Embeddings put "enable SSO" next to "disable SSO" and "refund within 30 days" next to "within
60 days": their cosine is high while the answers differ. ``PairMatcher.judge`` takes both texts
and the cosine of their (unit) MiniLM vectors, which the cache stage already has, and decides in
a few tens of microseconds, with no model call:

1. ``below_threshold``: the cosine is under the route's floor.
2. Rules that reject a near-miss, each with a stable reason name:

   - ``negation``: one side is negated and the other not ("can" / "cannot", "assigned" /
     "unassigned"), or the two take opposite sides of a polar pair ("enable" / "disable",
     "before" / "after", "increase" / "decrease", "allowed" / "forbidden", ...);
   - ``comparative``: opposite comparatives or superlatives ("cheapest" / "most expensive");
   - ``question_type``: they ask for different things ("who" / "when", "how many" / "how long");
   - ``number``: a number on one side is not on the other (30 vs 60 days, 3.11 vs 3.12, $500 vs
     $5,000, 10% vs 15%, "three" vs "four");
   - ``date``: a year, quarter, month, weekday or relative day differs (Q3 2024 vs Q3 2023);
   - ``unit``: different units or currencies (km / miles, GB / MB, USD / EUR, days / weeks);
   - ``order``: the same things the other way round ("from MySQL to PostgreSQL" / "from
     PostgreSQL to MySQL", "USD to EUR" / "EUR to USD", "A better than B" / "B better than A");
   - ``entity``: a name, product, identifier, e-mail or URL on one side is not on the other.

3. ``low_score``: a small logistic model over cheap features (the cosine, overlap of content
   words, length ratio, what the rules counted) gives the probability that the two ask the same
   thing; below its floor, no hit. Its coefficients (``match_model.json``) are fit by
   ``bench/train_cache_matcher.py`` on MRPC train (less a held-out 20%) and STS-B train.

A hit has reason ``""``. ``Verdict.score`` is the model's probability (0 when a rule rejected).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from importlib.resources import files
from itertools import pairwise
from typing import Any

from stanchion.cache.match_opposites import COMPARATIVE, POLAR, POLAR_DIRECTIONS, POLAR_MORE, QUANTIFIERS
from stanchion.cache.match_words import (
    CAP_COMMON,
    COMPATIBLE,
    CONNECTORS,
    MODIFIERS,
    MONTHS,
    NEGATIVE_PREFIXES,
    NEGATORS,
    NUMBER_WORDS,
    PHRASES,
    QUESTION_WORDS,
    RELATIVE_DAYS,
    RELATIVE_PERIODS,
    STOPWORDS,
    SUFFIXES,
    UNITS,
    WEEKDAYS,
)
from stanchion.errors import SpecError, StanchionError

DEFAULT_THRESHOLD = 0.80  # the cosine floor a route's semantic cache uses unless its spec says otherwise

REASONS = (
    "below_threshold",
    "negation",
    "comparative",
    "question_type",
    "number",
    "date",
    "unit",
    "order",
    "entity",
    "quantifier",
    "different_question",
    "low_score",
)

SUBSTITUTION_SLACK = 2  # other content words that may differ when an entity was swapped

__all__ = ["DEFAULT_THRESHOLD", "REASONS", "PairMatcher", "Verdict", "features"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a cached question may answer the asked one, how sure, and if not, why not."""

    hit: bool
    score: float  # the matcher's confidence that the two ask the same thing (0..1)
    reason: str  # "" on a hit; else one of REASONS


_LOG_RE = re.compile(
    r"\b(?:log|logs|logged|logging|sign|signs|signed|signing)(?: me| you| us| them| him| her)? (in|out)\b"
)

_PHRASE_RE = re.compile(
    r"\b(" + "|".join(re.escape(p) for p in sorted(PHRASES, key=len, reverse=True)) + r")\b"
)

_ORDINAL_RE = re.compile(r"^(\d+)(?:st|nd|rd|th)$")


_TOKEN_RE = re.compile(
    r"""https?://\S+|www\.\S+|[\w.+-]+@[\w-]+\.[\w.-]+      # URL, e-mail
    |[$€£¥]                                                # currency sign
    |\d+(?:[.,:/]\d+)*(?:\.\d+)?[A-Za-z%]*                 # 30, 3.11, 1,200, 10GB, 2nd, 10:30
    |[^\W\d_][^\W_]*(?:[-_.][^\W_]+)*(?:'[^\W\d_]+)?       # words, Q3, dotted/hyphenated names
    |%|n't
    """,
    re.VERBOSE,
)
_NUMBER_UNIT_RE = re.compile(r"^(\d+(?:[.,:/]\d+)*(?:\.\d+)?)([A-Za-z%]*)$")


@dataclass(frozen=True, slots=True)
class _Parsed:
    words: tuple[str, ...]  # lower case, phrases folded
    content: frozenset[str]  # stems of content words
    negated: bool
    numbers: frozenset[str]  # a multiset: the second "2" of a text is "2#2"
    dates: frozenset[str]
    units: frozenset[str]
    entities: frozenset[str]  # lower case
    qtype: str  # "" when not a question of a known kind
    length: int
    plain: tuple[str, ...]  # the words and numbers, in order
    bigrams: frozenset[tuple[str, str]]
    directions: frozenset[tuple[str, str]]  # (from, to) of "A to B", "from A to B", "A than B"


def _stem(word: str) -> str:
    """A crude suffix stripper: enough for "approved" and "approve" to meet."""
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith(("eed", "ss")):
            word = word[: -len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
            break
    return word[:-1] if word.endswith("e") and len(word) > 4 else word


def _number(text: str) -> str:
    """One spelling per number: thousands separators dropped, integers without leading zeros;
    decimals and versions kept as written (3.1 and 3.10 are different versions)."""
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    return str(int(text)) if text.isdigit() else text


def _date_word(word: str) -> str:
    """The day or period ``word`` names on its own (Q3, March, Monday, today), else ""."""
    if re.fullmatch(r"q[1-4]", word) or word in RELATIVE_DAYS:
        return word
    return MONTHS.get(word) or WEEKDAYS.get(word) or ""


def _count_in(numbers: set[str], value: str) -> None:
    """Add ``value`` as a multiset member: "2 backups for 2 days" and "2 backups for 7 days" hold
    different numbers, which as plain sets ({2} and {2, 7}) they would not."""
    n = 1
    while (f"{value}#{n}" if n > 1 else value) in numbers:
        n += 1
    numbers.add(f"{value}#{n}" if n > 1 else value)


def _parse(text: str) -> _Parsed:
    raw = _TOKEN_RE.findall(text)
    lowered = " ".join(t.lower() for t in raw)
    lowered = lowered.replace("ca n't", "can n't").replace("wo n't", "will n't")
    lowered = lowered.replace("can't", "can n't").replace("won't", "will n't").replace("cannot", "can n't")
    lowered = re.sub(r"(\w)n't\b", r"\1 n't", lowered)
    lowered = _LOG_RE.sub(lambda m: "login" if m.group(1) == "in" else "logout", lowered)
    lowered = _PHRASE_RE.sub(lambda m: PHRASES[m.group(1)], lowered)
    words = tuple(lowered.split())
    numbers: set[str] = set()
    dates: set[str] = set()
    units: set[str] = set()
    entities: set[str] = set()
    negated = False
    for i, word in enumerate(words):
        if word in NEGATORS:
            negated = not negated if word != "without" else negated
        match = _NUMBER_UNIT_RE.match(word)
        if match:
            digits, suffix = match.groups()
            if ordinal := _ORDINAL_RE.match(word):
                _count_in(numbers, f"{ordinal.group(1)}th")
            elif re.fullmatch(r"(19|20)\d\d", digits) and not suffix:
                dates.add(digits)
            else:
                _count_in(numbers, _number(digits))
                if suffix:
                    units.add(UNITS.get(suffix, suffix))
            continue
        if word in NUMBER_WORDS and not (
            word == "one" and i + 1 < len(words) and words[i + 1] in ("of", "more")
        ):
            _count_in(numbers, NUMBER_WORDS[word])
        elif (day := _date_word(word)) or (word in RELATIVE_PERIODS and i > 0 and words[i - 1] in MODIFIERS):
            # "next weekend" and "this weekend", "last Monday" and "Monday" are different days.
            modifier = words[i - 1] if i > 0 and words[i - 1] in MODIFIERS else ""
            dates.add(f"{modifier}-{day or word}" if modifier else day)
        if word in UNITS:
            units.add(UNITS[word])
        if "@" in word or word.startswith(("http", "www.")):
            entities.add(word.rstrip(".,;:!?"))
        elif any(c.isdigit() for c in word) and any(c.isalpha() for c in word) and not match:
            entities.add(word)
    if "may" in (t.lower() for t in raw[1:] if t == "May"):
        dates.add("may")
    for position, token in enumerate(raw):
        low = token.lower()
        if (
            position > 0
            and token != "I"
            and len(token) == 1
            and token.isupper()
            and raw[position - 1][:1].isupper()
        ):
            entities.add(f"{raw[position - 1].lower()}-{low}")  # Building A, Plan B
            continue
        if low in CAP_COMMON or (low in STOPWORDS and not token.isupper()) or len(token) < 2:  # US, IT
            continue
        if (
            (token.isupper() and token.isalpha() and len(token) <= 6 and low not in UNITS)
            or (
                position > 0
                and token[0].isupper()
                and token[0].isalpha()
                and raw[position - 1] not in (".", "?", "!", ":")
            )
            or (any(c.isupper() for c in token[1:]) and token[0].isalpha())
            or (re.search(r"\w[._]\w", token) and token[0].isalpha())
        ):  # acronyms
            entities.add(low)
    qtype = ""
    for word in words[:4]:
        if word in QUESTION_WORDS:
            qtype = QUESTION_WORDS[word]
            break
    plain = tuple(w for w in words if w.isalnum())
    content = frozenset(
        _stem(w) for w in words if w not in STOPWORDS and w not in NEGATORS and w.isalpha() and len(w) > 1
    )
    return _Parsed(
        words=words,
        content=content,
        negated=negated,
        numbers=frozenset(numbers),
        dates=frozenset(dates),
        units=frozenset(units - {"business"}),
        entities=frozenset(entities - units),
        qtype=qtype,
        length=len(words),
        plain=plain,
        bigrams=frozenset(pairwise(plain)),
        directions=_directions(words, entities),
    )


def _directions(words: tuple[str, ...], entities: set[str]) -> frozenset[tuple[str, str]]:
    """Which words go before which connector and which after: "from MySQL to PostgreSQL" and
    "to PostgreSQL from MySQL" both give (mysql, postgresql)."""
    # Names, numbers, units and dates; any content word where the text says "from" (a move from one
    # place to another), not for "connect A to B", which is "link B to A".
    general = "from" in words
    slots = [
        i
        for i, w in enumerate(words)
        if w in entities
        or w in UNITS
        or w in NUMBER_WORDS
        or _date_word(w)
        or _NUMBER_UNIT_RE.match(w)
        or (general and w not in STOPWORDS and w[0].isalnum())
    ]
    cuts = [k for k, w in enumerate(words) if w in CONNECTORS]
    if not slots or not cuts:
        return frozenset()
    found = set()
    bounds = [-1, *cuts, len(words)]
    for n, k in enumerate(cuts):
        before = [words[i] for i in slots if bounds[n] < i < k]
        after = [words[i] for i in slots if k < i < bounds[n + 2]]
        for x in before:
            for y in after:
                found.add((y, x) if words[k] == "from" else (x, y))
    return frozenset(found)


@lru_cache(maxsize=4096)
def _parsed(text: str) -> _Parsed:
    return _parse(text)


def _opposed(a: frozenset[str], b: frozenset[str], pairs: Iterable[tuple[str, str]]) -> bool:
    for x, y in pairs:
        if (x in a and y not in a and y in b and x not in b) or (
            y in a and x not in a and x in b and y not in b
        ):
            return True
    return False


def _missing(side: frozenset[str], other: _Parsed) -> set[str]:
    """Items of ``side`` the other text holds nowhere (not even as a plain word or stem)."""
    if not side:
        return set()
    words = set(other.words)
    stems = other.content
    return {x for x in side if x not in words and _stem(x) not in stems and x.replace("-", "") not in words}


def _with_parts(words: tuple[str, ...]) -> frozenset[str]:
    """The words and the parts of hyphenated ones ("best-selling": best, selling)."""
    return frozenset(words) | {part for w in words if "-" in w for part in w.split("-")}


_POLAR_ALL = [*POLAR, *POLAR_MORE, *POLAR_DIRECTIONS]
_POLAR_STEMS = [(_stem(x), _stem(y)) for x, y in _POLAR_ALL]


def _rule(a: _Parsed, b: _Parsed) -> str:
    """The first near-miss rule the pair breaks, or ""."""
    aw, bw = _with_parts(a.words), _with_parts(b.words)
    if (
        a.negated != b.negated
        or _opposed(aw, bw, _POLAR_ALL)
        or _opposed(a.content, b.content, _POLAR_STEMS)
        or _prefixed(frozenset(a.words) - frozenset(b.words), frozenset(b.words) - frozenset(a.words))
    ):
        return "negation"
    if _opposed(aw, bw, COMPARATIVE):
        return "comparative"
    if _opposed(aw, bw, QUANTIFIERS):
        return "quantifier"
    if a.qtype and b.qtype and a.qtype != b.qtype:
        compatible = b.qtype in COMPATIBLE.get(a.qtype, ()) or a.qtype in COMPATIBLE.get(b.qtype, ())
        if not compatible:
            return "question_type"
    if _swapped(a.numbers, b.numbers):
        return "number"
    if _swapped(a.dates, b.dates):
        return "date"
    if _swapped(a.units, b.units):
        return "unit"
    if any((y, x) in b.directions and (x, y) not in b.directions for x, y in a.directions - b.directions):
        return "order"  # from A to B / from B to A
    only_a, only_b = _missing(a.entities, b), _missing(b.entities, a)
    if only_a and only_b:
        # One name put in another's place, the rest alike ("reset my Outlook password" vs "... Gmail
        # ..."). Two texts that differ in much more besides are left to the scorer.
        named = {_stem(w) for e in only_a | only_b for w in re.split(r"[-_.]", e)}
        if len((a.content ^ b.content) - named) <= SUBSTITUTION_SLACK:
            return "entity"
    return ""


def _prefixed(only_a: frozenset[str], only_b: frozenset[str]) -> bool:
    """A word on one side is a negative-prefixed word on the other (assigned / unassigned)."""
    for one, other in ((only_a, only_b), (only_b, only_a)):
        for word in one:
            if len(word) >= 4 and any(prefix + word in other for prefix in NEGATIVE_PREFIXES):
                return True
    return False


def _swapped(a: frozenset[str], b: frozenset[str]) -> bool:
    """Each side holds a value the other lacks: one was put in the other's place."""
    return bool(a - b) and bool(b - a)


FEATURES = (
    "bias",
    "cosine",
    "cosine_sq",
    "content_jaccard",
    "unmatched_min",
    "unmatched_max",
    "length_ratio",
    "log_length",
    "entity_missing",
    "number_diff",
    "date_diff",
    "bigram_jaccard",
    "sequence_ratio",
)


def features(asked: str, cached: str, similarity: float) -> list[float]:
    """The learned scorer's inputs, in ``FEATURES`` order (used by the training script too)."""
    a, b = _parsed(asked), _parsed(cached)
    union = a.content | b.content
    only_a, only_b = len(a.content - b.content), len(b.content - a.content)
    short, long = sorted((max(a.length, 1), max(b.length, 1)))
    return [
        1.0,
        similarity,
        similarity * similarity,
        len(a.content & b.content) / len(union) if union else 1.0,
        min(only_a, only_b) / (1 + min(len(a.content), len(b.content))),
        max(only_a, only_b) / (1 + max(len(a.content), len(b.content))),
        short / long,
        math.log(long),
        float(len(_missing(a.entities, b)) + len(_missing(b.entities, a))),
        float(len(a.numbers ^ b.numbers)),
        float(len(a.dates ^ b.dates)),
        len(a.bigrams & b.bigrams) / max(1, len(a.bigrams | b.bigrams)),
        SequenceMatcher(None, a.plain, b.plain, autojunk=False).ratio(),
    ]


@lru_cache(maxsize=1)
def _model() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        files("stanchion.cache").joinpath("match_model.json").read_text("utf-8")
    )
    if list(data["features"]) != list(FEATURES):
        raise StanchionError("match_model.json was fit on other features; rerun bench/train_cache_matcher.py")
    return data


class PairMatcher:
    """Judges (asked, cached, cosine) triples; deterministic, no model call, no state."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *, score_floor: float | None = None) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise SpecError(f"cache threshold {threshold} is not a cosine: give a value between -1 and 1")
        self.threshold = threshold
        model = _model()
        self._weights: list[float] = [float(w) for w in model["weights"]]
        self.score_floor = float(model["score_floor"]) if score_floor is None else score_floor

    def judge(self, asked: str, cached: str, similarity: float) -> Verdict:
        if similarity < self.threshold:
            return Verdict(False, 0.0, "below_threshold")
        if asked.strip().lower() == cached.strip().lower():
            return Verdict(True, 1.0, "")
        reason = _rule(_parsed(asked), _parsed(cached)) or _last_sentences_differ(asked, cached)
        if reason:
            return Verdict(False, 0.0, reason)
        score = self.score(asked, cached, similarity)
        if score < self.score_floor:
            return Verdict(False, score, "low_score")
        return Verdict(True, score, "")

    def score(self, asked: str, cached: str, similarity: float) -> float:
        """The learned scorer's probability that the two ask the same thing, rules aside."""
        z = sum(w * x for w, x in zip(self._weights, features(asked, cached, similarity), strict=True))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def rule_reason(asked: str, cached: str) -> str:
    """The near-miss rule the pair breaks ("" if none), threshold and scorer aside (for evals)."""
    return _rule(_parsed(asked), _parsed(cached)) or _last_sentences_differ(asked, cached)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def _last_sentences_differ(asked: str, cached: str) -> str:
    """Two texts of several sentences sharing a preamble ask what their last sentences ask: a
    long shared context makes any two such texts similar, so the questions are judged alone
    (a rule they break, or little in common: ``different_question``)."""
    a_parts, b_parts = _SENTENCE_END.split(asked.strip()), _SENTENCE_END.split(cached.strip())
    if len(a_parts) < 2 or len(b_parts) < 2:
        return ""
    a_last, b_last = a_parts[-1], b_parts[-1]
    if a_last.strip().lower() == b_last.strip().lower():
        return ""
    a, b = _parsed(a_last), _parsed(b_last)
    if reason := _rule(a, b):
        return reason
    union = a.content | b.content
    shared = len(a.content & b.content) / len(union) if union else 1.0
    return "different_question" if shared < 0.5 else ""
