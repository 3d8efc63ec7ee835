"""``stanchion eval pii``: precision, recall and F2 of PII detection by span overlap, on the
presidio-research layout (a JSON list of ``{full_text, spans: [{entity_type, start_position,
end_position}]}``), ours and, on request, Presidio's default analyzer scored the same way.

Scoring. Dataset types are mapped to ours (``DATASET_TYPES``): STREET_ADDRESS, GPE, LOCATION
and ADDRESS are all LOCATION (our STREET_ADDRESS and LOCATION spans score as LOCATION too); the
others keep their names. Types outside the map (ORGANIZATION, TITLE, AGE, NRP, ZIP_CODE,
DOMAIN_NAME, DATE_TIME, ...) are not scored, and predictions of types outside ``SCORED`` are
dropped (for both systems). A gold span is *found* when predictions of its type cover at least
half of its non-space characters; a predicted span is *right* when gold spans of its type cover
at least half of its non-space characters. Recall = found / gold spans, precision = right /
predicted spans, per type and over all types; F2 weighs recall four times precision.

``split`` parts: the first 70% of the file (``tune``, what the recognizers were tuned on) and
the remaining 30% (``held-out``).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stanchion.errors import SpecError
from stanchion.guards.recognizers import Found

DATASET_TYPES: dict[str, str] = {
    "PERSON": "PERSON",
    "STREET_ADDRESS": "LOCATION",
    "ADDRESS": "LOCATION",
    "GPE": "LOCATION",
    "LOCATION": "LOCATION",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "US_SSN": "US_SSN",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "IP_ADDRESS": "IP_ADDRESS",
}
PREDICTED_TYPES: dict[str, str] = {"STREET_ADDRESS": "LOCATION"}
SCORED = frozenset(DATASET_TYPES.values())
PARTS = ("all", "tune", "held-out")
TUNE_SHARE = 0.7


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    spans: tuple[tuple[int, int, str], ...]  # (start, end, scored type)


@dataclass(frozen=True, slots=True)
class Counts:
    gold: int = 0
    found: int = 0
    predicted: int = 0
    right: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.gold + other.gold,
            self.found + other.found,
            self.predicted + other.predicted,
            self.right + other.right,
        )

    def scores(self) -> dict[str, float]:
        p = self.right / self.predicted if self.predicted else (1.0 if not self.gold else 0.0)
        r = self.found / self.gold if self.gold else 1.0
        f2 = 5 * p * r / (4 * p + r) if p + r else 0.0
        return {"precision": round(p, 4), "recall": round(r, 4), "f2": round(f2, 4)}


def load_dataset(path: Path) -> list[Labelled]:
    """The sentences of a presidio-research JSON file, spans mapped to our scored types."""
    if not path.is_file():
        raise SpecError(f"{path} not found: --dataset takes a presidio-research JSON file")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(
            f"{path} is not JSON ({exc}): --dataset takes a presidio-research JSON file"
        ) from None
    if not isinstance(rows, list):
        raise SpecError(f"{path}: expected a JSON list of {{full_text, spans}} objects")
    out = []
    for n, row in enumerate(rows):
        try:
            text = row["full_text"]
            spans = tuple(
                (int(s["start_position"]), int(s["end_position"]), DATASET_TYPES[s["entity_type"]])
                for s in row["spans"]
                if s["entity_type"] in DATASET_TYPES
            )
        except (KeyError, TypeError, ValueError):
            raise SpecError(
                f"{path}: item {n} needs full_text and spans of entity_type, start_position, end_position"
            ) from None
        if not isinstance(text, str) or any(not 0 <= s < e <= len(text) for s, e, _ in spans):
            raise SpecError(f"{path}: item {n} has a span outside its full_text")
        out.append(Labelled(text, spans))
    if not out:
        raise SpecError(f"{path} holds no sentences")
    return out


def split(rows: Sequence[Labelled], part: str) -> list[Labelled]:
    if part not in PARTS:
        raise SpecError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    cut = round(len(rows) * TUNE_SHARE)
    return list(rows) if part == "all" else list(rows[:cut] if part == "tune" else rows[cut:])


def _chars(text: str, start: int, end: int) -> set[int]:
    return {i for i in range(start, end) if not text[i].isspace()}


def _covered(text: str, span: tuple[int, int], others: Iterable[tuple[int, int]]) -> bool:
    own = _chars(text, *span)
    if not own:
        return False
    cover: set[int] = set()
    for s, e in others:
        cover |= own & set(range(s, e))
    return 2 * len(cover) >= len(own)


def score_sentence(item: Labelled, predicted: Iterable[Found]) -> dict[str, Counts]:
    """Counts per scored type for one sentence (the overlap rule of the module docstring)."""
    preds = [(f.start, f.end, PREDICTED_TYPES.get(f.entity, f.entity)) for f in predicted]
    preds = [p for p in preds if p[2] in SCORED]
    counts: dict[str, Counts] = {}
    for kind in {t for *_, t in preds} | {t for *_, t in item.spans}:
        gold = [(s, e) for s, e, t in item.spans if t == kind]
        mine = [(s, e) for s, e, t in preds if t == kind]
        counts[kind] = Counts(
            gold=len(gold),
            found=sum(_covered(item.text, g, mine) for g in gold),
            predicted=len(mine),
            right=sum(_covered(item.text, p, gold) for p in mine),
        )
    return counts


def evaluate(rows: Sequence[Labelled], detect: Callable[[str], Sequence[Found]]) -> dict[str, Any]:
    """The report of one system over ``rows``: the keys of ``stanchion eval pii --json``."""
    totals: dict[str, Counts] = {}
    latencies = []
    for item in rows:
        t0 = time.perf_counter()
        predicted = detect(item.text)
        latencies.append((time.perf_counter() - t0) * 1000)
        for kind, c in score_sentence(item, predicted).items():
            totals[kind] = totals.get(kind, Counts()) + c
    overall = sum(totals.values(), Counts())
    return {
        **overall.scores(),
        "latency_ms": round(statistics.median(latencies), 2) if latencies else 0.0,
        "sentences": len(rows),
        "per_entity": {k: {**c.scores(), "support": c.gold} for k, c in sorted(totals.items())},
    }


def ours(detector: Any) -> Callable[[str], Sequence[Found]]:
    """A ``PiiDetector`` as the scorer calls it."""
    return lambda text: [Found(s.start, s.end, s.entity, s.score) for s in detector.detect(text)]


def presidio_default() -> Callable[[str], Sequence[Found]]:
    """Presidio's AnalyzerEngine as shipped (every default recognizer, score threshold 0), on the
    same small spaCy model: the baseline."""
    from stanchion.guards.pii import build_presidio

    engine = build_presidio(default_recognizers=True)
    return lambda text: [Found(r.start, r.end, r.entity_type, r.score) for r in engine.analyze(text, "en")]
