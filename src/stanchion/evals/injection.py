"""``stanchion eval injection``: precision, recall, F1, false-positive rate and latency of the
prompt-injection detector on labelled JSONL (``text``, ``label``: 1 = attack, 0 = benign).

Latency is per text, one ``check`` at a time after a warm-up, as a request would pay it (embedding
included); ``latency_shared_vector_ms`` is the same given the text's embedding, as the pipeline
can pass retrieval's question vector: the rules and the classifier alone. The
optional baseline, ``securevector-guardian-model`` (PyPI, Apache-2.0; the ``bench`` extra), runs
on the same rows with the same scorer.
"""

from __future__ import annotations

import importlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from stanchion.errors import SpecError

BASELINES = ("securevector",)


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    label: int
    kind: str = ""


def shipped_dev_rows() -> list[Row]:
    """The held-out (dev) part of the shipped attack and benign/alarming set: never fit on."""
    text = files("stanchion.guards").joinpath("injection_extra.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [Row(r["text"], int(r["label"]), r.get("kind", "")) for r in rows if r.get("split") == "dev"]


def load_rows(path: Path) -> list[Row]:
    """Rows of a JSONL file; a line that is not an object with a string ``text`` and a ``label`` of
    0 or 1 is an error naming the line."""
    if not path.is_file():
        raise SpecError(f"{path}: no such file; give a JSONL file with one {{'text', 'label'}} object a line")
    rows = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"{path}:{number}: not JSON ({exc.msg}); each line must be one JSON object"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise SpecError(
                f"{path}:{number}: each line needs a string 'text' and a 'label' (1 = attack, 0 = benign)"
            )
        label = data.get("label")
        if isinstance(label, bool) or label not in (0, 1):
            raise SpecError(f"{path}:{number}: 'label' must be 0 (benign) or 1 (attack), not {label!r}")
        rows.append(Row(data["text"], int(label), str(data.get("kind", ""))))
    if not rows:
        raise SpecError(f"{path}: no rows; give a JSONL file with one {{'text', 'label'}} object a line")
    return rows


def metrics(labels: Sequence[int], flagged: Sequence[bool]) -> dict[str, float]:
    tp = sum(1 for y, f in zip(labels, flagged, strict=True) if y and f)
    fp = sum(1 for y, f in zip(labels, flagged, strict=True) if not y and f)
    fn = sum(1 for y, f in zip(labels, flagged, strict=True) if y and not f)
    negatives = sum(1 for y in labels if not y)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fp / negatives if negatives else 0.0,
        "n": float(len(labels)),
    }


def securevector() -> Callable[[str], bool] | None:
    """The baseline's verdict function, or None when the package is not installed."""
    try:  # imported by name: an optional package without type information
        bundle = importlib.import_module("svguardian")
        infer = importlib.import_module("svguardian.model.pure_infer")
        serve = importlib.import_module("svguardian.serve")
    except ImportError:
        return None
    guardian = infer.PureGuardian.load(bundle.resolve_runtime())
    return lambda text: bool(serve.analyze(text, guardian)["is_threat"])


@dataclass(frozen=True, slots=True)
class InjectionReport:
    rows: int
    attacks: int
    scores: dict[str, float]
    latency_ms: float
    latency_p95_ms: float
    latency_shared_vector_ms: float  # p50 of check() given the text's vector: rules + classifier only
    by_reason: dict[str, int]
    baseline: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **{k: round(v, 4) for k, v in self.scores.items() if k != "n"},
            "latency_ms": round(self.latency_ms, 3),
            "latency_p95_ms": round(self.latency_p95_ms, 3),
            "latency_shared_vector_ms": round(self.latency_shared_vector_ms, 3),
            "rows": self.rows,
            "attacks": self.attacks,
            "by_reason": self.by_reason,
        }
        if self.baseline is not None:
            out["baseline"] = self.baseline
        return out


def _timed(check: Callable[[str], bool], rows: Sequence[Row]) -> tuple[list[bool], list[float]]:
    flagged, times = [], []
    for row in rows:
        start = time.perf_counter()
        flagged.append(check(row.text))
        times.append((time.perf_counter() - start) * 1000)
    return flagged, times


def _p(times: list[float], q: float) -> float:
    return statistics.quantiles(times, n=100)[int(q) - 1] if len(times) > 1 else (times[0] if times else 0.0)


def evaluate(rows: Sequence[Row], detector: Any, *, baseline: str | None = None) -> InjectionReport:
    """Score ``detector`` (an ``InjectionDetector``) on ``rows``; and the baseline, if named."""
    if baseline is not None and baseline not in BASELINES:
        raise SpecError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    detector.check("warm up the embedder")
    reasons: dict[str, int] = {}
    verdicts = []
    times = []
    for row in rows:
        start = time.perf_counter()
        verdict = detector.check(row.text)
        times.append((time.perf_counter() - start) * 1000)
        verdicts.append(verdict)
        for reason in verdict.reasons:
            reasons[reason] = reasons.get(reason, 0) + 1
    # The detector's own cost when the caller shares the text's embedding (retrieval's question vector).
    vectors = detector.embedder.embed([r.text for r in rows])
    own = []
    for row, vector in zip(rows, vectors, strict=True):
        start = time.perf_counter()
        detector.check(row.text, vector=vector)
        own.append((time.perf_counter() - start) * 1000)
    labels = [r.label for r in rows]
    base = None
    if baseline is not None:
        check = securevector()
        if check is None:
            raise SpecError(
                "--baseline securevector needs the package securevector-guardian-model "
                "(pip install 'stanchion[bench]')"
            )
        flagged, base_times = _timed(check, rows)
        base = {
            "name": "securevector-guardian-model",
            **{k: round(v, 4) for k, v in metrics(labels, flagged).items() if k != "n"},
            "latency_ms": round(statistics.median(base_times), 3),
        }
    return InjectionReport(
        rows=len(rows),
        attacks=sum(labels),
        scores=metrics(labels, [v.flagged for v in verdicts]),
        latency_ms=statistics.median(times),
        latency_p95_ms=_p(times, 95),
        latency_shared_vector_ms=statistics.median(own),
        by_reason=dict(sorted(reasons.items())),
        baseline=base,
    )
