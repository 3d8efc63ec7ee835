"""Fusion methods: ordering rules that must hold for any scores."""

from __future__ import annotations

import numpy as np
import pytest

from stanchion.retrieve.fusion import (
    FUSIONS,
    RRF_K,
    _normalised,
    _zscore,
    confidence,
    fuse,
    list_weights,
    support,
    weighted,
)
from stanchion.types import Fusion


def order(method: Fusion, lists: dict[str, list[tuple[str, float]]]) -> list[str]:
    return [item for item, _ in fuse(method, lists)]


@pytest.mark.parametrize("method", FUSIONS)
def test_agreement_wins(method: Fusion) -> None:
    """An item ranked high by both lists beats items only one list returned."""
    lists = {"bm25": [("a", 9.0), ("b", 8.0), ("c", 1.0)], "dense": [("a", 0.9), ("d", 0.8), ("c", 0.1)]}
    fused = fuse(method, lists)
    assert fused[0][0] == "a"
    assert {i for i, _ in fused} == {"a", "b", "c", "d"}


def test_rrf_scores() -> None:
    fused = dict(fuse("rrf", {"x": [("a", 3.0), ("b", 2.0)], "y": [("b", 0.5)]}))
    assert fused["a"] == pytest.approx(1 / (RRF_K + 1))
    assert fused["b"] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))


def test_single_list_keeps_order() -> None:
    for method in FUSIONS:
        assert order(method, {"x": [("a", 3.0), ("b", 2.0), ("c", 1.0)]}) == ["a", "b", "c"]


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse("magic", {})  # type: ignore[arg-type]


DENSE = [("d1", 0.9), ("d2", 0.7), ("d3", 0.6), ("d4", 0.5), ("d5", 0.3)]


class TestWeighted:
    """Per-query weights: a list counts as much as it stands out and the other list backs it."""

    def test_empty_list_follows_the_other(self) -> None:
        """With nothing from one retriever, the other's order is the answer."""
        assert order("weighted", {"bm25": [], "dense": DENSE}) == ["d1", "d2", "d3", "d4", "d5"]

    def test_flat_list_follows_the_other(self) -> None:
        """A list that scores every candidate alike has no say: the other list's order stands,
        even for items only the flat list returned (they go last)."""
        flat = [("d5", 2.0), ("x", 2.0), ("d4", 2.0)]
        assert order("weighted", {"bm25": flat, "dense": DENSE}) == ["d1", "d2", "d3", "d4", "d5", "x"]

    def test_identical_lists_keep_their_order(self) -> None:
        """Two lists in the same order fuse to that order (equal weights)."""
        bm25 = [(i, 10 * s) for i, s in DENSE]
        assert order("weighted", {"bm25": bm25, "dense": DENSE}) == ["d1", "d2", "d3", "d4", "d5"]

    def test_confident_list_outweighs_a_flat_one(self) -> None:
        """One hit far above the rest beats a list whose best is barely above its others."""
        sure = [("s", 10.0)] + [(f"n{i}", 1.0 + 0.01 * i) for i in range(12)]
        unsure = [(f"u{i}", 0.50 - 0.001 * i) for i in range(12)] + [("s", 0.499)]
        fused = order("weighted", {"bm25": sure, "dense": unsure})
        assert fused[0] == "s"

    def test_supported_list_wins_a_disagreement(self) -> None:
        """Equally peaked lists that disagree at the top: the one whose head the other list also
        ranks high leads. Here dense's best (d1) is bm25's 2nd; bm25's best (t) is dense's last."""
        bm25 = [("t", 9.0), ("d1", 8.5), ("d2", 8.0), *[(f"b{i}", 1.0) for i in range(10)]]
        dense = [("d1", 0.9), ("d2", 0.85), ("t", 0.8), *[(f"e{i}", 0.2) for i in range(10)]]
        assert order("weighted", {"bm25": bm25, "dense": dense})[0] == "d1"

    def test_short_list_gets_no_confidence_bonus(self) -> None:
        """A list of a few hits cannot show a gap to its 10th: its weight comes from the other's
        confidence, so its huge gap to its last hit does not let it take over."""
        lists = _normalised({"bm25": [("a", 9.0), ("b", 1.0)], "dense": DENSE * 3}, _zscore)
        assert confidence(lists[0].values) is None
        bm25_weight, dense_weight = list_weights(lists)
        assert bm25_weight == pytest.approx(dense_weight, rel=0.5)

    def test_weights_sum_to_one(self) -> None:
        lists = _normalised({"bm25": [("a", 3.0), ("b", 1.0)], "dense": [("b", 0.8), ("c", 0.1)]}, _zscore)
        assert sum(list_weights(lists)) == pytest.approx(1.0)
        assert set(weighted({"bm25": [("a", 3.0)], "dense": [("c", 0.1)]})) == {"a", "c"}

    def test_confidence(self) -> None:
        """The gap from the best hit's z-score to the 10th's; 0 for a flat list."""
        assert confidence(np.zeros(12)) == 0.0
        z = np.array([3.0, 1.0, 0.5, 0.0, -0.5, -1.0, -1.0, -1.0, -1.0, -1.0, -1.5, -2.0])
        assert confidence(z) == pytest.approx(3.0 - (-1.5))

    def test_support(self) -> None:
        """Mean reciprocal rank of a list's head in the other list; 0 where it is absent."""
        other = _normalised({"x": [("a", 3.0), ("b", 2.0), ("c", 1.0)]}, _zscore)[0]
        assert support(["b", "z"], other) == pytest.approx((1 / 2 + 0) / 2)
