"""Fusing a keyword ranking and a vector ranking into one.

Every method here is parameter-free or uses a constant fixed in advance (never tuned per data
set). ``bench/fusion_study.py`` compares them; the default is chosen from that measurement
(see README, "How the fusion was chosen").

``weighted`` weighs each list per query by how much to trust it *for this query*: z-scores as in
``zscore``, each list scaled by a weight from two things the lists themselves show,

* **confidence**: how far the list's top hits stand above the rest of it (the z-score gap from
  its best hit to its ``GAP_RANK``-th). A flat list (every candidate about as good) says little
  and weighs little; a list whose top hits stand out weighs more.
* **support**: how highly the *other* list scores this list's top ``SUPPORT_TOP`` hits (their
  mean z-score there). When the lists disagree, the one whose top hits the other also rates well
  is the one more likely right: a keyword list led by a table of contents that repeats every
  query word, or a vector list led by text on a merely related topic, finds no support.

``weight = confidence * exp(support)``. Two identical lists get equal weights (and ``zscore``'s
order); a list with nothing in it, or one score for everything, leaves the other list's order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from stanchion.types import Fusion

FUSIONS: tuple[Fusion, ...] = ("rrf", "minmax", "zscore", "dbsf", "weighted")
RRF_K = 60  # the constant from Cormack et al. 2009; not tuned here
GAP_RANK = 10  # confidence: z of the best hit minus z of the 10th
SUPPORT_TOP = 10  # support: how the other list ranks this list's top 10
SUPPORT_SCALE = 4.0  # weight factor exp(4 * support): up to e^4 for a head the other list shares

Ranking = Sequence[tuple[str, float]]  # (id, raw score), best first


def rrf(rankings: Mapping[str, Ranking]) -> dict[str, float]:
    fused: dict[str, float] = {}
    for ranking in rankings.values():
        for rank, (item, _) in enumerate(ranking):
            fused[item] = fused.get(item, 0.0) + 1.0 / (RRF_K + rank + 1)
    return fused


class _Normalised:
    """One list's normalised scores; an item the list did not return scores its ``floor``: it
    ranked below everything the list returned, and absence from one list must not outweigh the
    other."""

    def __init__(self, ranking: Ranking, norm: Callable[[np.ndarray], np.ndarray]) -> None:
        self.order = [item for item, _ in ranking]
        self.values = norm(np.array([s for _, s in ranking], dtype=np.float64))
        self.scores: dict[str, float] = dict(zip(self.order, self.values.tolist(), strict=True))
        self.floor = float(self.values.min())

    def get(self, item: str) -> float:
        return self.scores.get(item, self.floor)


def _normalised(
    rankings: Mapping[str, Ranking], norm: Callable[[np.ndarray], np.ndarray]
) -> list[_Normalised]:
    return [_Normalised(ranking, norm) for ranking in rankings.values() if ranking]


def _weighted_sum(lists: Sequence[_Normalised], weights: Sequence[float]) -> dict[str, float]:
    items = {i for n in lists for i in n.scores}
    return {i: sum(w * n.get(i) for n, w in zip(lists, weights, strict=True)) for i in items}


def _minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.ones_like(x)


def _zscore(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def _dbsf(x: np.ndarray) -> np.ndarray:
    # Distribution-based score fusion: scale mean +- 3 std to [0, 1] and clip.
    std = x.std()
    if std == 0:
        return np.ones_like(x)
    low, high = x.mean() - 3 * std, x.mean() + 3 * std
    clipped: np.ndarray = np.clip((x - low) / (high - low), 0.0, 1.0)
    return clipped


def confidence(z: np.ndarray) -> float | None:
    """How far a list's best hit stands above its ``GAP_RANK``-th, in the list's standard
    deviations (``z`` is the list's z-scores, best first); 0 for a flat list. ``None`` for a list
    too short to tell: with a handful of hits the gap to the last one says nothing."""
    if len(z) <= GAP_RANK:
        return None
    return max(float(z[0] - z[GAP_RANK]), 0.0)


def support(head: Sequence[str], other: _Normalised) -> float:
    """How highly ``other`` ranks the items of ``head``: their mean reciprocal rank there (its
    best item counts 1, its 2nd 1/2, ...; an item it did not return counts 0)."""
    ranks = {item: rank for rank, item in enumerate(other.order, start=1)}
    return float(np.mean([1.0 / ranks[i] if i in ranks else 0.0 for i in head])) if head else 0.0


def list_weights(lists: Sequence[_Normalised]) -> list[float]:
    """Each list's weight for this query: its confidence times exp(the other lists' support);
    a list too short to show its confidence gets the mean of the others' (1 if none shows one)."""
    shown = [confidence(n.values) for n in lists]
    known = [c for c in shown if c is not None]
    neutral = float(np.mean(known)) if known else 1.0
    weights = []
    for n, conf in zip(lists, shown, strict=True):
        backing = [support(n.order[:SUPPORT_TOP], o) for o in lists if o is not n]
        weights.append((neutral if conf is None else conf) * math.exp(SUPPORT_SCALE * sum(backing)))
    total = sum(weights)
    if total <= 0:  # every list flat: nothing to prefer
        return [1.0 / len(lists)] * len(lists)
    return [w / total for w in weights]


def weighted(rankings: Mapping[str, Ranking]) -> dict[str, float]:
    lists = _normalised(rankings, _zscore)
    return _weighted_sum(lists, list_weights(lists)) if lists else {}


def fuse(method: Fusion, rankings: Mapping[str, Ranking]) -> list[tuple[str, float]]:
    """Fused (id, score), best first; ties broken by id for determinism."""
    if method == "rrf":
        fused = rrf(rankings)
    elif method in ("minmax", "zscore", "dbsf"):
        norm = {"minmax": _minmax, "zscore": _zscore, "dbsf": _dbsf}[method]
        lists = _normalised(rankings, norm)
        fused = _weighted_sum(lists, [1.0] * len(lists))
    elif method == "weighted":
        fused = weighted(rankings)
    else:
        raise ValueError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
