"""``stanchion eval cache``: how often a semantic-cache hit would be right, on labelled pairs.

Each pair is embedded (both sides, the app's embedder, cached by text hash), and its cosine goes
to ``cache.match.PairMatcher`` as the stage would pass it: (asked, cached, similarity). A *hit* is
a pair the matcher accepts. Hit precision is the share of hits whose pair means the same (1 -
false-hit rate); hit recall the share of same-meaning pairs that hit. The curve gives both over
thresholds, for plain cosine and for cosine + the matcher.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from stanchion.cache.match import DEFAULT_THRESHOLD, PairMatcher, Verdict
from stanchion.core.embed import Embedder
from stanchion.evals.pairs import EmbeddingCache, Pair
from stanchion.evals.retrieval import eval_cache_dir

CURVE_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 .. 0.95


@dataclass(frozen=True, slots=True)
class Point:
    precision: float
    recall: float
    hits: int


@dataclass(frozen=True, slots=True)
class CacheEvalReport:
    threshold: float
    pairs: int
    same: int  # pairs labelled same meaning
    hits: int
    false_hits: int
    precision: float
    recall: float
    cosine: Point  # plain cosine at the same threshold
    by_reason: dict[str, int]  # rejections of pairs above the threshold, by reason
    by_kind: dict[str, dict[str, int]]  # kind -> pairs, hits, false_hits (tsv layout)
    latency_ms: dict[str, float]  # judge time per pair at or above the threshold (its rules and scorer run)
    curve: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "threshold": self.threshold,
            "pairs": self.pairs,
            "same": self.same,
            "hits": self.hits,
            "false_hits": self.false_hits,
            "false_hit_rate": round(1 - self.precision, 4) if self.hits else 0.0,
            "cosine": {"precision": round(self.cosine.precision, 4), "recall": round(self.cosine.recall, 4)},
            "by_reason": self.by_reason,
            "by_kind": self.by_kind,
            "latency_ms": self.latency_ms,
            "curve": self.curve,
        }


def embed_pairs(
    pairs: Sequence[Pair], embedder: Embedder, *, progress: Callable[[int], None] | None = None
) -> npt.NDArray[np.float32]:
    """The cosine of each pair's two sides (vectors cached under the eval cache folder)."""
    cache = EmbeddingCache(eval_cache_dir() / "pair-embeddings.sqlite")
    try:
        vectors = cache.embed(embedder, [t for p in pairs for t in (p.a, p.b)], progress=progress)
    finally:
        cache.close()
    return (vectors[0::2] * vectors[1::2]).sum(axis=1)  # type: ignore[no-any-return]


def _point(labels: npt.NDArray[np.bool_], chosen: npt.NDArray[np.bool_]) -> Point:
    hits = int(chosen.sum())
    right = int((chosen & labels).sum())
    return Point(right / hits if hits else 1.0, right / max(int(labels.sum()), 1), hits)


def evaluate_pairs(
    pairs: Sequence[Pair], similarity: npt.NDArray[np.float32], threshold: float = DEFAULT_THRESHOLD
) -> CacheEvalReport:
    """Judge every pair at ``threshold`` and over the curve's thresholds."""
    matcher = PairMatcher(threshold)
    labels = np.array([p.label for p in pairs], dtype=bool)
    verdicts: list[Verdict] = []
    timings: list[float] = []
    for pair, sim in zip(pairs, similarity, strict=True):
        start = time.perf_counter()
        verdicts.append(matcher.judge(pair.a, pair.b, float(sim)))
        if sim >= threshold:  # a pair under the threshold costs one comparison; time the real work
            timings.append((time.perf_counter() - start) * 1000)
    hit = np.array([v.hit for v in verdicts], dtype=bool)
    ours = _point(labels, hit)
    # The curve: at each threshold, a pair hits if its cosine clears it and the matcher, asked
    # at the lowest threshold, passes it (its rules and scorer do not depend on the threshold).
    loose = PairMatcher(-1.0)
    passes = np.array([loose.judge(p.a, p.b, float(s)).hit for p, s in zip(pairs, similarity, strict=True)])
    curve = []
    for t in sorted({*CURVE_THRESHOLDS, threshold}):
        above = similarity >= t
        cos, both = _point(labels, above), _point(labels, above & passes)
        curve.append(
            {
                "threshold": t,
                "cosine": {"precision": round(cos.precision, 4), "recall": round(cos.recall, 4)},
                "matcher": {"precision": round(both.precision, 4), "recall": round(both.recall, 4)},
            }
        )
    reasons = Counter(v.reason for v in verdicts if not v.hit and v.reason != "below_threshold")
    kinds: dict[str, dict[str, int]] = {}
    for pair, h in zip(pairs, hit, strict=True):
        row = kinds.setdefault(pair.kind or "-", {"pairs": 0, "hits": 0, "false_hits": 0})
        row["pairs"] += 1
        row["hits"] += int(h)
        row["false_hits"] += int(h and not pair.label)
    ordered = sorted(timings) or [0.0]
    return CacheEvalReport(
        threshold=threshold,
        pairs=len(pairs),
        same=int(labels.sum()),
        hits=ours.hits,
        false_hits=int((hit & ~labels).sum()),
        precision=ours.precision,
        recall=ours.recall,
        cosine=_point(labels, similarity >= threshold),
        by_reason=dict(reasons.most_common()),
        by_kind=kinds if len(kinds) > 1 else {},
        latency_ms={
            "p50": round(statistics.median(ordered), 4),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4),
        },
        curve=curve,
    )
