"""Fit the semantic cache's pair scorer (``src/stanchion/cache/match_model.json``) and choose its
floor and the default cosine threshold, on tuning data only.

Data: MRPC train less a fixed 20% held out as dev (pair index % 5 == 4), and STS-B train (score
>= 4 same, <= 2 different). Reported: the same figures on the MRPC dev slice and STS-B dev, next
to plain cosine, so the gap between what was fit and what was not is visible.

The scorer is a logistic regression (L2, Newton steps, numpy) over ``cache.match.features``, fit
on the pairs it will see: cosine >= FIT_FLOOR and no near-miss rule broken. The floor and the
threshold are the pair that gives the most recall on the fitting data at hit precision >=
TARGET_PRECISION.

    python bench/train_cache_matcher.py [--mrpc FILE] [--stsb DIR] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stanchion.cache import match
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.evals.pairs import EmbeddingCache, Pair, load_pairs
from stanchion.evals.retrieval import eval_cache_dir

FIT_FLOOR = 0.6  # pairs under this cosine never reach the scorer at any sensible threshold
TARGET_PRECISION = 0.95  # hit precision asked of the default setting, met on the fitting data
L2 = 1.0
# The default cosine floor is fixed at 0.80, where plain cosine already reaches 0.94 precision on
# STS-B train and keeps 0.95 recall of the project's own question paraphrases; the scorer's floor
# is then chosen for precision. (Searching thresholds too moves MRPC train recall by 0.01.)
THRESHOLDS = [0.80]
FLOORS = [round(0.005 * i, 3) for i in range(200)]
Array = npt.NDArray[np.float64]


class Scored:
    def __init__(
        self, pairs: list[Pair], cache: EmbeddingCache, embedder: SentenceTransformerEmbedder
    ) -> None:
        vectors = cache.embed(embedder, [t for p in pairs for t in (p.a, p.b)])
        self.pairs = pairs
        self.sim = (vectors[0::2] * vectors[1::2]).sum(axis=1).astype(np.float64)
        self.label = np.array([p.label for p in pairs])
        self.rule_ok = np.array([match.rule_reason(p.a, p.b) == "" for p in pairs])
        self.x = np.array([match.features(p.a, p.b, float(s)) for p, s in zip(pairs, self.sim, strict=True)])

    def subset(self, keep: npt.NDArray[np.bool_]) -> Scored:
        other = object.__new__(Scored)
        other.pairs = [p for p, k in zip(self.pairs, keep, strict=True) if k]
        for name in ("sim", "label", "rule_ok", "x"):
            setattr(other, name, getattr(self, name)[keep])
        return other


def fit(x: Array, y: npt.NDArray[np.bool_], weight: Array) -> Array:
    """L2-regularised logistic regression by Newton's method (the bias is not penalised)."""
    mean = x[:, 1:].mean(axis=0)
    scale = x[:, 1:].std(axis=0) + 1e-9
    z = np.hstack([x[:, :1], (x[:, 1:] - mean) / scale])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], L2)
    penalty[0] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (weight * (p - y)) + penalty * w
        hess = (z * (weight * p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    raw = w.copy()  # back to unscaled features
    raw[1:] = w[1:] / scale
    raw[0] = w[0] - float((w[1:] * mean / scale).sum())
    return raw


def hits(
    data: Scored, weights: Array, threshold: float, floor: float, *, rules: bool = True
) -> npt.NDArray[np.bool_]:
    score = 1.0 / (1.0 + np.exp(-(data.x @ weights)))
    chosen = data.sim >= threshold
    if rules:
        chosen &= data.rule_ok & (score >= floor)
    return chosen  # type: ignore[no-any-return]


def pr(data: Scored, chosen: npt.NDArray[np.bool_]) -> tuple[float, float, int]:
    n = int(chosen.sum())
    right = int((chosen & data.label).sum())
    return (right / n if n else 1.0), right / max(int(data.label.sum()), 1), n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mrpc", type=Path, default=Path("../shared/data/mrpc/msr_paraphrase_train.txt"))
    parser.add_argument("--stsb", type=Path, default=Path("../shared/data/sts-benchmark"))
    parser.add_argument("--write", action="store_true", help="write match_model.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    embedder = SentenceTransformerEmbedder()
    cache = EmbeddingCache(eval_cache_dir() / "pair-embeddings.sqlite")
    mrpc = Scored(load_pairs(args.mrpc, "mrpc"), cache, embedder)
    dev_mask = np.arange(len(mrpc.pairs)) % 5 == 4
    mrpc_train, mrpc_dev = mrpc.subset(~dev_mask), mrpc.subset(dev_mask)
    sts_train = Scored(load_pairs(args.stsb / "sts-train.csv", "stsb"), cache, embedder)
    sts_dev = Scored(load_pairs(args.stsb / "sts-dev.csv", "stsb"), cache, embedder)

    x = np.vstack([mrpc_train.x, sts_train.x])
    y = np.concatenate([mrpc_train.label, sts_train.label])
    seen = np.concatenate([mrpc_train.sim >= FIT_FLOOR, sts_train.sim >= FIT_FLOOR])
    seen &= np.concatenate([mrpc_train.rule_ok, sts_train.rule_ok])
    weight = np.ones(len(y))
    weights = fit(x[seen], y[seen], weight[seen])

    best = (-1.0, 0.0, 0.0)
    for threshold in THRESHOLDS:
        for floor in FLOORS:
            precision, recall, _ = pr(mrpc_train, hits(mrpc_train, weights, threshold, floor))
            if precision >= TARGET_PRECISION and recall > best[0]:
                best = (recall, threshold, floor)
    _, threshold, floor = best
    print(f"chosen: threshold {threshold}, score floor {floor}")
    print(f"{'data':<22}{'cosine alone':>22}{'rules only':>22}{'rules + scorer':>22}")
    for name, data in (
        ("MRPC train (80%)", mrpc_train),
        ("MRPC dev (20%)", mrpc_dev),
        ("STS-B train", sts_train),
        ("STS-B dev", sts_dev),
    ):
        cells = []
        for chosen in (
            hits(data, weights, threshold, floor, rules=False),
            hits(data, weights, threshold, 0.0),
            hits(data, weights, threshold, floor),
        ):
            precision, recall, _ = pr(data, chosen)
            cells.append(f"P {precision:.3f} R {recall:.3f}")
        print(f"{name:<22}" + "".join(f"{c:>22}" for c in cells))
    for name, data in (("MRPC dev", mrpc_dev), ("STS-B dev", sts_dev)):
        row = []
        for t in (0.75, 0.8, 0.85, 0.9):
            p1, r1, _ = pr(data, hits(data, weights, t, floor, rules=False))
            p2, r2, _ = pr(data, hits(data, weights, t, floor))
            row.append(f"{t}: cos {p1:.2f}/{r1:.2f} ours {p2:.2f}/{r2:.2f}")
        print(name, " | ".join(row))
    if args.write:
        target = Path(match.__file__).with_name("match_model.json")
        model = {
            "features": list(match.FEATURES),
            "weights": [round(float(w), 6) for w in weights],
            "score_floor": floor,
            "threshold": threshold,
            "fit_on": "MRPC train less index % 5 == 4; STS-B train (>= 4 same, <= 2 different)",
        }
        target.write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
