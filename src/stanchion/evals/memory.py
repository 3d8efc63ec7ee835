"""``stanchion eval memory``: does a later run recall what the user said in earlier sessions?

The labelled set (``memory_conversations.jsonl``, written by ``bench/make_memory_eval.py``) holds
users of several tenants, each with sessions of turns in order (facts, preferences, changes of
mind, and distractor turns: questions, hypotheticals, other people's likes) and questions a
later run asks. Every session is written through ``Memory.remember`` (the extractor given, the
rules by default); then each question is recalled for its user.

Scoring. A question is *right* when the top-k recalled memories hold its ``expect`` value (in a
memory's value or text) and none of them has, as its value, one of the values a later session
replaced (``avoid``), unless that memory says the user no longer likes it, or a value another
user of the tenant gave for the same thing (``avoid_other_users``). ``leaks`` counts recalled
memories owned by anyone but the asker (there must be none). Latency: ``recall_ms`` is the wall time of one
``recall`` given the question's embedding (reading and ranking the user's memories), which is
what memory adds to a run whose retrieval embeds the question anyway (the app's query embedder
keeps recent vectors); ``recall_with_embedding_ms`` includes embedding the question. Writing
happens in the background (``MemoryWriter``) and adds nothing; ``write_ms_per_session`` is its
cost (extraction, embedding, storing).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from stanchion.errors import ModelError, SpecError
from stanchion.memory import Memory, MemoryRecord
from stanchion.types import Message

__all__ = ["DEFAULT_SET", "evaluate", "load_conversations", "percentile", "score"]

DEFAULT_SET = "memory_conversations.jsonl"
_USER_KEYS = {"tenant", "user", "sessions", "questions"}
_QUESTION_KEYS = {"question", "attribute", "expect", "avoid", "kind", "avoid_other_users"}


def load_conversations(path: Path | None = None) -> list[dict[str, Any]]:
    """The labelled users of ``path`` (default: the packaged set); SpecError names a bad line."""
    text = (
        path.read_text(encoding="utf-8")
        if path is not None
        else files("stanchion.evals").joinpath(DEFAULT_SET).read_text(encoding="utf-8")
    )
    where = str(path) if path is not None else DEFAULT_SET
    users = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            user = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{where} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(user, dict) or not set(user) >= _USER_KEYS:
            raise SpecError(f"{where} line {number}: a user needs the keys {sorted(_USER_KEYS)}")
        for question in user["questions"]:
            if not isinstance(question, dict) or not {"question", "expect"} <= set(question):
                raise SpecError(f"{where} line {number}: each question needs 'question' and 'expect'")
        users.append(user)
    if not users:
        raise SpecError(f"{where}: no users")
    return users


def score(
    recalled: Sequence[MemoryRecord], question: dict[str, Any], tenant: str, user: str
) -> dict[str, Any]:
    """Whether ``recalled`` answers ``question`` (see the module docstring), and why not."""
    expect = str(question["expect"]).casefold()
    found = any(expect in m.value.casefold() or expect in m.text.casefold() for m in recalled)
    replaced = {str(v).casefold() for v in question.get("avoid", [])}
    others = {str(v).casefold() for v in question.get("avoid_other_users", [])}
    stale = [m.value for m in recalled if m.value.casefold() in replaced and not m.negated]
    foreign = [m.value for m in recalled if m.value.casefold() in others]
    leaks = sum(1 for m in recalled if (m.tenant, m.user) != (tenant, user))
    return {
        "right": found and not stale and not foreign and not leaks,
        "found": found,
        "top1": bool(recalled)
        and (expect in recalled[0].value.casefold() or expect in recalled[0].text.casefold()),
        "stale": stale,
        "foreign": foreign,
        "leaks": leaks,
    }


def evaluate(
    memory: Memory, users: Sequence[dict[str, Any]], *, k: int = 5, misses: int = 20
) -> dict[str, Any]:
    """Write every session, then ask every question; the report of the module docstring."""
    started = time.perf_counter()
    written = failed = 0
    for user in users:
        for session in user["sessions"]:
            turns = [Message("user", str(t)) for t in session["turns"]]
            try:
                changes = asyncio.run(
                    memory.remember(user["tenant"], user["user"], turns, source=str(session["id"]))
                )
            except ModelError:  # a model extractor that failed loses this session, as the writer would
                failed += 1
                continue
            written += len(changes)
    write_s = time.perf_counter() - started
    sessions = sum(len(u["sessions"]) for u in users)
    latencies: list[float] = []
    with_embedding: list[float] = []
    by_kind: dict[str, list[bool]] = {}
    results: list[dict[str, Any]] = []
    for user in users:
        for question in user["questions"]:
            text = str(question["question"])
            t0 = time.perf_counter()
            vector = memory.embedder.embed([text])[0]
            t1 = time.perf_counter()
            recalled = memory.recall(user["tenant"], user["user"], text, k=k, vector=vector)
            t2 = time.perf_counter()
            latencies.append((t2 - t1) * 1000)
            with_embedding.append((t2 - t0) * 1000)
            verdict = score(recalled, question, user["tenant"], user["user"])
            by_kind.setdefault(str(question.get("kind", "")), []).append(verdict["right"])
            results.append(
                {
                    "user": user["user"],
                    "question": question["question"],
                    "expect": question["expect"],
                    "recalled": [m.value for m in recalled],
                    **verdict,
                }
            )
    n = len(results)
    return {
        "users": len(users),
        "sessions": sessions,
        "questions": n,
        "k": k,
        "extractor": memory.extractor.name,
        "accuracy": sum(r["right"] for r in results) / n,
        "top1_accuracy": sum(r["top1"] for r in results) / n,
        "by_kind": {
            kind: {"questions": len(v), "accuracy": sum(v) / len(v)} for kind, v in sorted(by_kind.items())
        },
        "stale_recalled": sum(bool(r["stale"]) for r in results),
        "foreign_values_recalled": sum(bool(r["foreign"]) for r in results),
        "leaks": sum(r["leaks"] for r in results),
        "memories_written": written,
        "sessions_failed": failed,
        "write_ms_per_session": write_s * 1000 / max(sessions, 1),
        "recall_ms": _summary(latencies),
        "recall_with_embedding_ms": _summary(with_embedding),
        "misses": [r for r in results if not r["right"]][:misses],
    }


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values, default=0.0)}


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (inclusive method); 0.0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1])
