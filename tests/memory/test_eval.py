"""The memory eval: the packaged labelled set, the scoring rule, and ``stanchion eval memory``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stanchion.cli import app
from stanchion.errors import SpecError
from stanchion.evals.memory import evaluate, load_conversations, score
from stanchion.memory import Memory, MemoryRecord
from stanchion.memory.store import DatabaseMemoryStore


def _record(value: str, *, user: str = "ann", negated: bool = False) -> MemoryRecord:
    return MemoryRecord(
        "m", "acme", user, "preference", "preference:drink", f"I love {value}", value, 0, 0, negated=negated
    )


class TestDataset:
    def test_packaged_set_is_big_enough_and_covers_the_hard_cases(self) -> None:
        users = load_conversations()
        questions = [q for u in users for q in u["questions"]]
        assert len(questions) >= 100
        assert sum(bool(q["avoid"]) for q in questions) >= 20  # changed preferences
        assert sum(bool(q["avoid_other_users"]) for q in questions) >= 50  # other users' values
        assert all(len(u["sessions"]) >= 2 for u in users)
        assert len({u["tenant"] for u in users}) >= 2

    def test_a_bad_line_is_named(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"tenant": "a", "user": "u", "sessions": [], "questions": []}\n{oops\n')
        with pytest.raises(SpecError, match="line 2: not JSON"):
            load_conversations(bad)
        bad.write_text('{"tenant": "a"}\n')
        with pytest.raises(SpecError, match="line 1: a user needs the keys"):
            load_conversations(bad)


QUESTION = {"expect": "tea", "avoid": ["coffee"], "avoid_other_users": ["milk"]}


class TestScore:
    def test_right_when_the_needed_memory_is_recalled(self) -> None:
        assert score([_record("green tea")], QUESTION, "acme", "ann")["right"]

    def test_a_replaced_value_spoils_it_unless_negated(self) -> None:
        assert not score([_record("tea"), _record("coffee")], QUESTION, "acme", "ann")["right"]
        assert score([_record("tea"), _record("coffee", negated=True)], QUESTION, "acme", "ann")["right"]

    def test_another_users_value_or_memory_spoils_it(self) -> None:
        assert not score([_record("tea"), _record("milk")], QUESTION, "acme", "ann")["right"]
        verdict = score([_record("tea", user="bob")], QUESTION, "acme", "ann")
        assert verdict["leaks"] == 1 and not verdict["right"]


def test_evaluate_on_a_slice(memory: Memory) -> None:
    """Three users on each backend: every question scored, no leaks, latencies reported."""
    users = load_conversations()[:3]
    report = evaluate(memory, users, k=5)
    assert report["questions"] == sum(len(u["questions"]) for u in users)
    assert report["leaks"] == 0 and report["accuracy"] > 0.5
    assert report["recall_ms"]["p95"] >= report["recall_ms"]["p50"] > 0
    assert isinstance(memory.store, DatabaseMemoryStore)


class _DownExtractor:
    name = "down"

    async def extract(self, messages: object) -> list[object]:
        from stanchion.errors import ModelUnavailable

        raise ModelUnavailable("refused", model="m")


def test_evaluate_counts_sessions_a_model_extractor_failed(store: DatabaseMemoryStore) -> None:
    """A model that fails loses its sessions (counted), not the whole run."""
    from stanchion.memory.fakes import WordEmbedder

    users = load_conversations()[:2]
    report = evaluate(Memory(store, WordEmbedder(), extractor=_DownExtractor()), users)  # type: ignore[arg-type]
    assert report["sessions_failed"] == report["sessions"] and report["accuracy"] == 0.0


def test_cli_eval_memory_json(tmp_path: Path) -> None:
    """`stanchion eval memory --json` on a two-user file, with the packaged embedding model."""
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps(u) + "\n" for u in load_conversations()[:2]))
    spec = tmp_path / "stanchion.yaml"
    spec.write_text("index:\n  path: index.db\n")
    result = CliRunner().invoke(
        app, ["eval", "memory", "--dataset", str(data), "--json", "--spec", str(spec)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["questions"] == 6 and report["leaks"] == 0
    assert set(report["recall_ms"]) == {"p50", "p95", "max"}
