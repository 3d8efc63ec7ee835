"""Memory storage on SQLite and PostgreSQL + pgvector: one suite, every test on both backends."""

from __future__ import annotations

import numpy as np

from stanchion.memory import Candidate, DatabaseMemoryStore

PYTHON = Candidate("preference", "preference:programming_language", "I love Python", "Python")
RUST = Candidate("preference", "preference:programming_language", "I now prefer Rust", "Rust")
BERLIN = Candidate("fact", "fact:home_city", "I live in Berlin", "Berlin")


def vec(*values: float) -> np.ndarray:
    row = np.zeros(8, dtype=np.float32)
    row[: len(values)] = values
    return row / np.linalg.norm(row)


class TestStore:
    def test_add_get_list(self, store: DatabaseMemoryStore) -> None:
        """A stored memory comes back with its fields, in its owner's list."""
        added = store.add("acme", "ann", PYTHON, vec(1), source="session-1")
        got = store.get("acme", "ann", added.id)
        assert got is not None
        assert (got.kind, got.slot, got.text, got.value, got.source) == (
            "preference",
            "preference:programming_language",
            "I love Python",
            "Python",
            "session-1",
        )
        assert got.current
        assert [m.id for m in store.memories("acme", "ann")] == [added.id]

    def test_supersede_keeps_history(self, store: DatabaseMemoryStore) -> None:
        """The new memory is current; the old one is history pointing at it."""
        old = store.add("acme", "ann", PYTHON, vec(1))
        new = store.supersede("acme", "ann", old.id, RUST, vec(0, 1))
        assert [m.id for m in store.memories("acme", "ann")] == [new.id]
        history = {m.id: m for m in store.memories("acme", "ann", include_history=True)}
        assert set(history) == {old.id, new.id}
        assert history[old.id].superseded_by == new.id and not history[old.id].current
        current = store.current("acme", "ann", "preference:programming_language")
        assert current is not None and current.value == "Rust"

    def test_delete_current_takes_its_history(self, store: DatabaseMemoryStore) -> None:
        """Forgetting a current memory forgets what it replaced; other slots stay."""
        old = store.add("acme", "ann", PYTHON, vec(1))
        new = store.supersede("acme", "ann", old.id, RUST, vec(0, 1))
        city = store.add("acme", "ann", BERLIN, vec(0, 0, 1))
        assert store.delete("acme", "ann", new.id) == 2
        assert [m.id for m in store.memories("acme", "ann", include_history=True)] == [city.id]

    def test_delete_history_entry_relinks(self, store: DatabaseMemoryStore) -> None:
        """Deleting the middle of a chain leaves the oldest pointing at the current one."""
        first = store.add("acme", "ann", PYTHON, vec(1))
        second = store.supersede("acme", "ann", first.id, RUST, vec(0, 1))
        third = store.supersede(
            "acme", "ann", second.id, Candidate("preference", PYTHON.slot, "Go now", "Go"), vec(0, 0, 1)
        )
        assert store.delete("acme", "ann", second.id) == 1
        oldest = store.get("acme", "ann", first.id)
        assert oldest is not None and oldest.superseded_by == third.id

    def test_candidates_rank_by_cosine(self, store: DatabaseMemoryStore) -> None:
        """Each current memory comes with its cosine similarity to the query vector."""
        python = store.add("acme", "ann", PYTHON, vec(1))
        city = store.add("acme", "ann", BERLIN, vec(0, 1))
        scores = {r.id: s for r, s in store.candidates("acme", "ann", vec(1, 0.2), ["berlin"])}
        assert set(scores) == {python.id, city.id}
        assert scores[python.id] > 0.9 > scores[city.id] > 0.1


class TestIsolation:
    """No call made for one (tenant, user) can reach another's memory, whatever id it names."""

    def test_other_users_and_tenants_see_nothing(self, store: DatabaseMemoryStore) -> None:
        mine = store.add("acme", "ann", PYTHON, vec(1))
        store.add("acme", "bob", RUST, vec(1))
        store.add("globex", "ann", BERLIN, vec(1))
        for tenant, user in (("acme", "bob"), ("globex", "ann"), ("globex", "bob")):
            assert store.get(tenant, user, mine.id) is None
            assert mine.id not in {m.id for m in store.memories(tenant, user, include_history=True)}
            assert mine.id not in {r.id for r, _ in store.candidates(tenant, user, vec(1), ["python"])}
            assert store.delete(tenant, user, mine.id) == 0
        assert store.get("acme", "ann", mine.id) is not None

    def test_supersede_and_refresh_refuse_another_users_id(self, store: DatabaseMemoryStore) -> None:
        from stanchion.errors import Conflict

        mine = store.add("acme", "ann", PYTHON, vec(1))
        try:
            store.supersede("acme", "bob", mine.id, RUST, vec(1))
        except Conflict:
            pass
        else:
            raise AssertionError("bob superseded ann's memory")
        assert store.refresh("globex", "ann", mine.id, RUST, vec(1)) is None
        got = store.get("acme", "ann", mine.id)
        assert got is not None and got.value == "Python" and got.current
        assert store.memories("acme", "bob") == []

    def test_delete_all_is_per_user(self, store: DatabaseMemoryStore) -> None:
        store.add("acme", "ann", PYTHON, vec(1))
        store.add("acme", "ann", BERLIN, vec(0, 1))
        keep = store.add("acme", "bob", PYTHON, vec(1))
        other = store.add("globex", "ann", PYTHON, vec(1))
        assert store.delete_all("acme", "ann") == 2
        assert [m.id for m in store.memories("acme", "bob")] == [keep.id]
        assert [m.id for m in store.memories("globex", "ann")] == [other.id]


def test_migrations_apply_once(store: DatabaseMemoryStore) -> None:
    """Opening the store again applies nothing: the ledger records mem001."""
    assert "mem001_memories" in store.applied
    assert DatabaseMemoryStore(store.db).applied == []
