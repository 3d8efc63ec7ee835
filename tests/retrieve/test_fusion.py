"""Fusion methods: ordering rules that must hold for any scores."""

from __future__ import annotations

import pytest

from stanchion.retrieve.fusion import FUSIONS, RRF_K, fuse


@pytest.mark.parametrize("method", FUSIONS)
def test_agreement_wins(method: str) -> None:
    """An item ranked high by both lists beats items only one list returned."""
    lists = {"bm25": [("a", 9.0), ("b", 8.0), ("c", 1.0)], "dense": [("a", 0.9), ("d", 0.8), ("c", 0.1)]}
    fused = fuse(method, lists)  # type: ignore[arg-type]
    assert fused[0][0] == "a"
    assert {i for i, _ in fused} == {"a", "b", "c", "d"}


def test_rrf_scores() -> None:
    fused = dict(fuse("rrf", {"x": [("a", 3.0), ("b", 2.0)], "y": [("b", 0.5)]}))
    assert fused["a"] == pytest.approx(1 / (RRF_K + 1))
    assert fused["b"] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))


def test_single_list_keeps_order() -> None:
    for method in FUSIONS:
        assert [i for i, _ in fuse(method, {"x": [("a", 3.0), ("b", 2.0), ("c", 1.0)]})] == ["a", "b", "c"]


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse("magic", {})  # type: ignore[arg-type]
