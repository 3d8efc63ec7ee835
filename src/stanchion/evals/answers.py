"""``stanchion eval answers``: the whole answer pipeline on SQuAD-layout QA over a corpus.

Every article (a SQuAD paragraph's ``context``, keyed by its ``document_id``) becomes one
document of an eval index, chunked and cached like ``stanchion eval retrieval`` does. Each
question then goes through retrieval, packing, the route's model and verification, and is
scored:

- ``retrieval_hit_rate``: share of questions where a source given to the model comes from the
  gold article;
- ``answer_contains_gold``: share of questions whose answer (citation markers removed) contains
  a gold answer span, both normalised as the official SQuAD script does (lower case, punctuation
  and the articles a/an/the removed, whitespace collapsed). An abstention never contains it;
- ``citation_precision``: share of the citations in non-abstained answers that point to a chunk
  of the gold article, or to a chunk that contains a gold answer span (the same span can occur
  in another article). 0 when no answer cites anything;
- ``abstention_rate``; ``latency_ms`` p50/p95 of the whole pipeline per question.

``--limit N`` takes N questions spread evenly over the file (every len/N-th), so a small run
still covers many articles.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stanchion.answer import Answer
from stanchion.answer.prompt import strip_citations
from stanchion.app import App, build
from stanchion.core.embed import warm_for_serving
from stanchion.errors import IngestError, SpecError
from stanchion.evals.retrieval import BeirDataset, eval_cache_dir, eval_spec
from stanchion.ingest.pipeline import Progress
from stanchion.spec import Spec
from stanchion.types import Chunk

__all__ = [
    "AnswersReport",
    "QAItem",
    "SquadDataset",
    "contains_answer",
    "normalize_answer",
    "run_answers_eval",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def contains_answer(text: str, answers: tuple[str, ...]) -> bool:
    """Whether ``text`` contains one of ``answers`` after normalisation (on word boundaries)."""
    haystack = f" {normalize_answer(text)} "
    return any(gold and f" {gold} " in haystack for gold in (normalize_answer(a) for a in answers))


@dataclass(frozen=True, slots=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]
    document_id: str


@dataclass(frozen=True, slots=True)
class SquadDataset:
    file: Path
    articles: tuple[tuple[str, str, str], ...]  # (document id, title, text)
    questions: tuple[QAItem, ...]

    @classmethod
    def load(cls, file: Path) -> SquadDataset:
        if not file.is_file():
            raise SpecError(f"{file} not found: give a SQuAD-layout JSON file ({{'data': [...]}})")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))["data"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise SpecError(f"{file} is not SQuAD-layout JSON ({type(exc).__name__}: {exc})") from None
        articles: list[tuple[str, str, str]] = []
        questions: list[QAItem] = []
        for a, article in enumerate(data):
            for p, paragraph in enumerate(article.get("paragraphs", [])):
                doc_id = str(paragraph.get("document_id", f"{a}-{p}"))
                articles.append((doc_id, str(article.get("title", "")), paragraph["context"]))
                for qa in paragraph.get("qas", []):
                    answers = tuple(x["text"] for x in qa.get("answers", []) if x.get("text", "").strip())
                    if answers and not qa.get("is_impossible", False):
                        questions.append(QAItem(str(qa["id"]), qa["question"], answers, doc_id))
        return cls(file, tuple(articles), tuple(questions))

    def sample(self, limit: int | None) -> tuple[QAItem, ...]:
        """``limit`` questions spread evenly over the file (all of them without a limit)."""
        if limit is None or limit >= len(self.questions):
            return self.questions
        step = len(self.questions) / limit
        return tuple(self.questions[int(i * step)] for i in range(limit))


@dataclass(frozen=True, slots=True)
class AnswersReport:
    questions: int
    retrieval_hit_rate: float
    answer_contains_gold: float
    citation_precision: float
    abstention_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    build_seconds: float

    def as_json(self) -> dict[str, object]:
        return {
            "questions": self.questions,
            "retrieval_hit_rate": round(self.retrieval_hit_rate, 4),
            "answer_contains_gold": round(self.answer_contains_gold, 4),
            "citation_precision": round(self.citation_precision, 4),
            "abstention_rate": round(self.abstention_rate, 4),
            "latency_ms": {"p50": round(self.latency_p50_ms, 2), "p95": round(self.latency_p95_ms, 2)},
        }


def corpus_file(dataset: SquadDataset, cache_dir: Path | None = None) -> Path:
    """The articles as a BEIR ``corpus.jsonl``, written once per content into the eval cache."""
    lines = [json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, t, x in dataset.articles]
    digest = hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()[:16]
    folder = (cache_dir or eval_cache_dir()) / f"{dataset.file.name.split('.')[0]}-{digest}"
    target = folder / "corpus.jsonl"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_text("".join(lines), encoding="utf-8")
        partial.replace(target)
    return target


def eval_app(dataset: SquadDataset, base: Spec, cache_dir: Path | None = None) -> App:
    """An App over the eval index (built or reused), answering with ``base``'s models and settings."""
    corpus = BeirDataset(corpus_file(dataset, cache_dir), {}, {})
    spec = eval_spec(corpus, base, cache_dir).model_copy(
        update={"models": base.models, "routes": base.routes, "answer": base.answer}
    )
    return build(spec)


def run_answers_eval(
    dataset: SquadDataset,
    base: Spec,
    *,
    limit: int | None = None,
    route: str | None = None,
    progress: Progress | None = None,
    on_question: Callable[[], None] | None = None,
    cache_dir: Path | None = None,
) -> AnswersReport:
    app = eval_app(dataset, base, cache_dir)
    try:
        started = time.perf_counter()
        summary = app.pipeline.run(progress=progress)
        build_seconds = time.perf_counter() - started
        if summary.failed:
            raise IngestError(
                summary.failed[0].path, f"cannot index the eval corpus: {summary.failed[0].reason}"
            )
        warm_for_serving(app.embedder)  # model load is not question latency
        answerer = app.answerer(route)
        items = dataset.sample(limit)

        async def ask_all() -> list[Answer]:
            answers = []
            for item in items:
                answers.append(await answerer.answer(item.question))
                if on_question is not None:
                    on_question()
            return answers

        answers = asyncio.run(ask_all())
    finally:
        app.close()
    return score(items, answers, build_seconds)


def score(items: tuple[QAItem, ...], answers: list[Answer], build_seconds: float = 0.0) -> AnswersReport:
    hits = contains = abstained = cited = correct = 0
    for item, answer in zip(items, answers, strict=True):
        hits += any(_doc(s.hit.chunk) == item.document_id for s in answer.sources)
        abstained += answer.abstained
        if answer.abstained:
            continue
        contains += contains_answer(strip_citations(answer.text), item.answers)
        chunks = {s.hit.chunk.id: s.hit.chunk for s in answer.sources}
        for citation in answer.citations:
            cited += 1
            chunk = chunks[citation.chunk_id]
            correct += _doc(chunk) == item.document_id or contains_answer(chunk.text, item.answers)
    latencies = [a.latency_ms["total"] for a in answers]
    n = max(len(items), 1)
    return AnswersReport(
        questions=len(items),
        retrieval_hit_rate=hits / n,
        answer_contains_gold=contains / n,
        citation_precision=correct / cited if cited else 0.0,
        abstention_rate=abstained / n,
        latency_p50_ms=float(np.percentile(latencies, 50)) if latencies else 0.0,
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies else 0.0,
        build_seconds=build_seconds,
    )


def _doc(chunk: Chunk) -> str:
    return str(chunk.metadata.get("beir_id") or chunk.document_id.split(":", 1)[-1])
