"""Ranking metrics match a hand-computed example and trec_eval (via pytrec-eval-terrier)."""

from __future__ import annotations

import math
import random
from typing import ClassVar

import pytest

from stanchion.evals.metrics import (
    PASSAGE_METRICS,
    evaluate,
    evaluate_passages,
    hit_at,
    mrr_at,
    ndcg_at,
    recall_at,
)


class TestHandComputed:
    ranked: ClassVar[list[str]] = ["d3", "d1", "d7", "d2"]
    judged: ClassVar[dict[str, int]] = {"d1": 1, "d2": 2, "d9": 1}

    def test_ndcg(self) -> None:
        """DCG = 1/log2(3) + 2/log2(5); ideal = 2 + 1/log2(3) + 1/log2(4)."""
        dcg = 1 / math.log2(3) + 2 / math.log2(5)
        idcg = 2 + 1 / math.log2(3) + 0.5
        assert ndcg_at(self.ranked, self.judged, 10) == pytest.approx(dcg / idcg)
        assert ndcg_at(self.ranked, self.judged, 10) == pytest.approx(0.47663, abs=1e-5)

    def test_cutoff(self) -> None:
        """At k=2 only d1 counts; the ideal is cut at 2 as well."""
        assert ndcg_at(self.ranked, self.judged, 2) == pytest.approx(
            (1 / math.log2(3)) / (2 + 1 / math.log2(3))
        )

    def test_recall_and_mrr(self) -> None:
        assert recall_at(self.ranked, self.judged, 100) == pytest.approx(2 / 3)
        assert recall_at(self.ranked, self.judged, 2) == pytest.approx(1 / 3)
        assert mrr_at(self.ranked, self.judged, 10) == pytest.approx(0.5)
        assert mrr_at(["x", "y"], self.judged, 10) == 0.0

    def test_missing_query_scores_zero(self) -> None:
        """A judged query with no run counts as 0, so skipping queries cannot inflate a score."""
        scores = evaluate({"q1": ["d1"]}, {"q1": {"d1": 1}, "q2": {"d5": 1}})
        assert scores["ndcg@10"] == pytest.approx(0.5)


def test_agrees_with_trec_eval() -> None:
    """On random runs, our numbers equal trec_eval's ndcg_cut_10, recall_100 and (cut) reciprocal rank."""
    pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec-eval-terrier is a dev dependency")
    rng = random.Random(3)
    docs = [f"d{i}" for i in range(60)]
    qrels = {
        f"q{q}": {d: rng.choice([1, 1, 2]) for d in rng.sample(docs, rng.randint(1, 5))} for q in range(40)
    }
    run = {q: rng.sample(docs, 40) for q in qrels}
    ours = evaluate(run, qrels)
    trec_run = {q: {d: float(100 - i) for i, d in enumerate(r)} for q, r in run.items()}
    measures = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(trec_run)
    assert ours["ndcg@10"] == pytest.approx(
        sum(m["ndcg_cut_10"] for m in measures.values()) / len(qrels), abs=1e-9
    )
    assert ours["recall@100"] == pytest.approx(
        sum(m["recall_100"] for m in measures.values()) / len(qrels), abs=1e-9
    )
    cut = {q: {d: s for d, s in r.items() if s > 90} for q, r in trec_run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    assert ours["mrr@10"] == pytest.approx(sum(m["recip_rank"] for m in rr.values()) / len(qrels), abs=1e-9)


class TestPassageMetrics:
    """hit@k and MRR@10 over ranked passages, on an example worked by hand."""

    def test_hit_at(self) -> None:
        """The first relevant passage is at rank 3: a miss at 1, a hit at 5 and 10."""
        ranked = ["p9", "p8", "p2", "p1"]
        judged = {"p1": 1, "p2": 1, "p0": 0}
        assert hit_at(ranked, judged, 1) == 0.0
        assert hit_at(ranked, judged, 3) == 1.0
        assert hit_at(["p0", "p7"], judged, 10) == 0.0  # judged 0 is not relevant

    def test_evaluate_passages(self) -> None:
        """q1 hits at rank 1, q2 at rank 6 (only hit@10), q3 never: means over all three."""
        run = {"q1": ["a", "b"], "q2": ["x1", "x2", "x3", "x4", "x5", "b"], "q3": ["z"]}
        qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
        scores = evaluate_passages(run, qrels)
        assert scores["hit@1"] == pytest.approx(1 / 3)
        assert scores["hit@5"] == pytest.approx(1 / 3)
        assert scores["hit@10"] == pytest.approx(2 / 3)
        assert scores["mrr@10"] == pytest.approx((1 + 1 / 6) / 3)

    def test_no_judged_queries(self) -> None:
        assert evaluate_passages({}, {"q": {"a": 0}}) == dict.fromkeys(PASSAGE_METRICS, 0.0)
