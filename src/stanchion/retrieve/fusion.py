"""Fusing a keyword ranking and a vector ranking into one.

Every method here is parameter-free or uses a constant fixed in advance (never tuned per data
set). ``bench/fusion_study.py`` compares them; the default is chosen from that measurement
(see README, "Retrieval quality").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from stanchion.types import Fusion

FUSIONS: tuple[Fusion, ...] = ("rrf", "minmax", "zscore", "dbsf")
RRF_K = 60  # the constant from Cormack et al. 2009; not tuned here

Ranking = Sequence[tuple[str, float]]  # (id, raw score), best first


def rrf(rankings: Mapping[str, Ranking]) -> dict[str, float]:
    fused: dict[str, float] = {}
    for ranking in rankings.values():
        for rank, (item, _) in enumerate(ranking):
            fused[item] = fused.get(item, 0.0) + 1.0 / (RRF_K + rank + 1)
    return fused


def _normalised_sum(
    rankings: Mapping[str, Ranking], norm: Callable[[np.ndarray], np.ndarray]
) -> dict[str, float]:
    normalised: list[tuple[dict[str, float], float]] = []
    for ranking in rankings.values():
        if ranking:
            scores = norm(np.array([s for _, s in ranking], dtype=np.float64))
            normalised.append(
                ({i: float(s) for (i, _), s in zip(ranking, scores, strict=True)}, float(scores.min()))
            )
    items = {i for scores, _ in normalised for i in scores}
    # An item a retriever did not return scores that retriever's floor, not zero: it ranked below
    # everything the retriever returned, and absence from one list must not outweigh the other.
    return {i: sum(scores.get(i, floor) for scores, floor in normalised) for i in items}


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


def fuse(method: Fusion, rankings: Mapping[str, Ranking]) -> list[tuple[str, float]]:
    """Fused (id, score), best first; ties broken by id for determinism."""
    if method == "rrf":
        fused = rrf(rankings)
    elif method == "minmax":
        fused = _normalised_sum(rankings, _minmax)
    elif method == "zscore":
        fused = _normalised_sum(rankings, _zscore)
    elif method == "dbsf":
        fused = _normalised_sum(rankings, _dbsf)
    else:
        raise ValueError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
