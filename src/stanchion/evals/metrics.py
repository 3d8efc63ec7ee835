"""Ranking metrics with trec_eval's definitions (as BEIR reports them).

nDCG uses linear gain (gain = relevance grade) and log2 discount; the ideal ranking is the judged
documents sorted by grade. Documents judged 0 count as non-relevant everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Qrels = Mapping[str, Mapping[str, int]]  # query id -> doc id -> grade
Run = Mapping[str, Sequence[str]]  # query id -> ranked doc ids


def ndcg_at(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if judged.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate(run: Run, qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over the queries that have relevant judgments.

    A query missing from ``run`` scores 0 (it was asked and nothing came back).
    """
    queries = [q for q, judged in qrels.items() if any(g > 0 for g in judged.values())]
    if not queries:
        return {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    totals = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for q in queries:
        ranked = run.get(q, [])
        totals["ndcg@10"] += ndcg_at(ranked, qrels[q], 10)
        totals["recall@100"] += recall_at(ranked, qrels[q], 100)
        totals["mrr@10"] += mrr_at(ranked, qrels[q], 10)
    return {name: total / len(queries) for name, total in totals.items()}


def hit_at(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """1.0 when any of the first ``k`` is relevant (success@k), else 0.0."""
    return 1.0 if any(judged.get(d, 0) > 0 for d in ranked[:k]) else 0.0


PASSAGE_METRICS = ("hit@1", "hit@5", "hit@10", "mrr@10")


def evaluate_passages(run: Run, qrels: Qrels) -> dict[str, float]:
    """Mean hit@1, hit@5, hit@10 and MRR@10 over ranked passages (pages, sections).

    An answer usually needs one evidence passage, not all of them, so recall is not reported:
    a query scores when any of its judged passages ranks high. Queries as in ``evaluate``.
    """
    queries = [q for q, judged in qrels.items() if any(g > 0 for g in judged.values())]
    totals = dict.fromkeys(PASSAGE_METRICS, 0.0)
    for q in queries:
        ranked = run.get(q, [])
        for k in (1, 5, 10):
            totals[f"hit@{k}"] += hit_at(ranked, qrels[q], k)
        totals["mrr@10"] += mrr_at(ranked, qrels[q], 10)
    return {name: total / len(queries) if queries else 0.0 for name, total in totals.items()}
