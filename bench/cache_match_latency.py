"""What the semantic cache's near-miss check adds to a lookup: ``PairMatcher.judge`` per pair, on
the shipped adversarial questions and (if given) MRPC's news sentences, with each text parsed
fresh (a new question) and parsed before (a cached question seen again), beside the baseline, a
bare threshold comparison. Similarities are fixed above the threshold so every pair runs the rules
and the scorer.

    python bench/cache_match_latency.py [--mrpc ../shared/data/mrpc/msr_paraphrase_train.txt]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from stanchion.cache import match
from stanchion.evals.pairs import Pair, adversarial_path, load_pairs


def percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def timed(pairs: list[Pair], call: Callable[[Pair], object]) -> list[float]:
    times = []
    for pair in pairs:
        start = time.perf_counter()
        call(pair)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mrpc", type=Path, default=None, help="an MRPC file: its first 1,000 pairs")
    args = parser.parse_args()
    sets = [("adversarial questions", load_pairs(adversarial_path()))]
    if args.mrpc is not None:
        sets.append(("MRPC sentences", load_pairs(args.mrpc)[:1000]))
    matcher = match.PairMatcher()
    similarity = max(0.95, matcher.threshold)
    print(f"{'pairs':<24}{'n':>6}{'baseline p50/p95 ms':>22}{'fresh p50/p95 ms':>20}{'seen p50/p95 ms':>20}")
    for name, pairs in sets:
        base = timed(pairs, lambda p: similarity >= matcher.threshold)
        match._parsed.cache_clear()  # every text new: parsed inside judge
        fresh = timed(pairs, lambda p: matcher.judge(p.a, p.b, similarity))
        seen = timed(pairs, lambda p: matcher.judge(p.a, p.b, similarity))  # parses cached
        cells = [f"{a:.4f} / {b:.4f}" for a, b in (percentiles(base), percentiles(fresh), percentiles(seen))]
        print(f"{name:<24}{len(pairs):>6}{cells[0]:>22}{cells[1]:>20}{cells[2]:>20}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
