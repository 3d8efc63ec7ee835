"""cache/vector_index.py: binary-code candidates rescored by exact cosine, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from stanchion.cache.vector_index import VectorIndex


def units(rng: np.random.Generator, n: int, dim: int, *, shared: float = 0.0) -> np.ndarray:
    """``n`` random unit vectors; ``shared`` > 0 adds one common direction (as real embeddings
    have: unrelated sentences then sit at cosine ~0.3-0.5 instead of ~0)."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if shared:
        x += shared * np.ones(dim, dtype=np.float32) / np.sqrt(dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def near(rng: np.random.Generator, v: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at exactly ``cosine`` to the unit vector ``v``."""
    noise = rng.standard_normal(v.shape[0]).astype(np.float32)
    noise -= noise @ v * v
    noise /= np.linalg.norm(noise)
    out = cosine * v + np.sqrt(1 - cosine**2) * noise
    return (out / np.linalg.norm(out)).astype(np.float32)


def brute(ids: list[str], matrix: np.ndarray, q: np.ndarray, k: int) -> list[str]:
    scores = matrix @ q
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


class TestSearch:
    def test_a_small_index_is_searched_exactly(self) -> None:
        """Up to ``depth`` vectors every one is scored: the ranking is brute force's, cosines exact."""
        rng = np.random.default_rng(1)
        x = units(rng, 50, 16)
        ids = [f"e{i}" for i in range(50)]
        index = VectorIndex(16)
        index.add(ids, x)
        q = units(rng, 1, 16)[0]
        got = index.search(q, 5)
        assert [i for i, _ in got] == brute(ids, x, q, 5)
        for entry_id, score in got:
            assert score == pytest.approx(float(x[ids.index(entry_id)] @ q), abs=1e-6)

    def test_k_bounds_the_answer_and_empty_cases_give_nothing(self) -> None:
        index = VectorIndex(8)
        assert index.search(np.ones(8), 3) == []
        index.add(["a", "b"], np.eye(8, dtype=np.float32)[:2])
        assert [i for i, _ in index.search(np.eye(8)[0], 5)] == ["a", "b"]
        assert len(index.search(np.eye(8)[0], 1)) == 1
        assert index.search(np.zeros(8), 3) == []  # no direction: nothing is near it

    def test_vectors_are_normalised(self) -> None:
        """A vector added with any length scores by cosine."""
        index = VectorIndex(4)
        index.add(["a"], [[3.0, 0, 0, 0]])
        [(entry_id, score)] = index.search([0.5, 0.5, 0, 0], 1)
        assert entry_id == "a" and score == pytest.approx(np.sqrt(0.5), abs=1e-6)

    def test_a_wrong_dimension_is_refused_by_name(self) -> None:
        index = VectorIndex(4)
        with pytest.raises(ValueError, match="dimension 3"):
            index.add(["a"], [[1.0, 0, 0]])
        with pytest.raises(ValueError, match="dimension 5"):
            index.search(np.ones(5), 1)
        with pytest.raises(ValueError, match="zero"):
            index.add(["z"], [[0.0, 0, 0, 0]])


class TestRecall:
    @pytest.mark.parametrize("shared", [0.0, 1.0])
    def test_the_true_nearest_is_found_among_many(self, shared: float) -> None:
        """At 20k vectors (depth 256), a stored neighbour at cosine 0.80-0.95 to the query is
        returned first in at least 99% of lookups (here: all 200), for isotropic vectors and for
        vectors sharing a common direction."""
        rng = np.random.default_rng(7)
        dim, n = 384, 20_000
        x = units(rng, n, dim, shared=shared)
        ids = [f"e{i}" for i in range(n)]
        index = VectorIndex(dim)
        index.add(ids, x)
        found = 0
        for j, target in enumerate(rng.choice(n, size=200, replace=False)):
            q = near(rng, x[target], 0.80 + 0.15 * (j % 4) / 3)
            truth = brute(ids, x, q, 1)[0]
            found += index.search(q, 1)[0][0] == truth
        assert found >= 198


class TestChanges:
    def test_adding_an_id_again_replaces_its_vector(self) -> None:
        index = VectorIndex(4)
        index.add(["a", "b"], np.eye(4, dtype=np.float32)[:2])
        index.add(["a"], [[0, 0, 1.0, 0]])
        assert len(index) == 2
        assert index.search([0, 0, 1.0, 0], 1)[0] == ("a", pytest.approx(1.0))
        assert index.search([1.0, 0, 0, 0], 2)[0][1] == pytest.approx(0.0)

    def test_removed_ids_never_come_back_and_compaction_keeps_the_rest(self) -> None:
        """Removing most of 3,000 vectors (tombstones, then compaction) leaves exactly the others,
        ranked as brute force ranks them."""
        rng = np.random.default_rng(3)
        x = units(rng, 3000, 32)
        ids = [f"e{i}" for i in range(3000)]
        index = VectorIndex(32, depth=64)
        for start in range(0, 3000, 500):  # grows through several capacity doublings
            index.add(ids[start : start + 500], x[start : start + 500])
        gone = set(ids[::3]) | set(ids[1::3])
        assert index.remove(sorted(gone)) == len(gone)
        assert index.remove(["e0", "never-added"]) == 0
        keep = [i for i in range(3000) if ids[i] not in gone]
        assert len(index) == len(keep)
        kept_ids = [ids[i] for i in keep]
        for q in units(rng, 20, 32):
            got = [i for i, _ in index.search(q, 5, depth=len(keep))]
            assert got == brute(kept_ids, x[keep], q, 5)
            assert not gone & {i for i, _ in index.search(q, 50)}

    def test_clear_empties_the_index(self) -> None:
        index = VectorIndex(4)
        index.add(["a"], [[1.0, 0, 0, 0]])
        index.clear()
        assert len(index) == 0 and "a" not in index
        assert index.search([1.0, 0, 0, 0], 1) == []


def test_a_worker_keeps_at_most_max_partitions_the_least_recently_used_go_first() -> None:
    from stanchion.cache.codec import LocalIndexes

    indexes = LocalIndexes(max_partitions=3)
    for name in ("a", "b", "c"):
        indexes.get("t", name).log.append((1, name, 4e9))  # each holds an entry
    indexes.get("t", "a")  # used again: now the most recent
    indexes.get("t", "d")
    kept = {p for _, p in indexes._partitions}
    assert kept == {"a", "c", "d"}  # "b", the least recently used, was forgotten
