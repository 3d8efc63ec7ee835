"""What the pseudonym vault costs a request, detection excluded: mask a 6-message chat (about
1,800 words, 30 detected values) in a fresh vault, then restore a 300-word answer whole and
streamed in 4-character pieces, for both styles, against the same work with no vault (the text
joined and split as a stream). One process, interleaved; prints p50 and p95 in microseconds.

    python bench/vault_latency.py [ROUNDS]
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable

from stanchion.guards.restore_stream import StreamRestorer
from stanchion.guards.vault import STYLES, PseudonymVault, Span, VaultScope

WORDS = [
    "the",
    "account",
    "was",
    "opened",
    "after",
    "a",
    "review",
    "of",
    "the",
    "policy",
    "and",
    "the",
    "invoice",
    "for",
    "the",
    "quarter",
]
VALUES = [("Ann Bee", "PERSON"), ("Cy Dale", "PERSON"), ("ann@corp.io", "EMAIL_ADDRESS")]
VALUES += [("+44 20 7946 0958", "PHONE_NUMBER"), ("4111 1111 1111 1111", "CREDIT_CARD")]


def message(rng: random.Random) -> tuple[str, list[Span]]:
    parts: list[str] = []
    spans: list[Span] = []
    length = 0
    for i in range(300):
        if i % 60 == 30:
            value, entity = rng.choice(VALUES)
            spans.append(Span(length, length + len(value), entity))
            word = value
        else:
            word = rng.choice(WORDS)
        parts.append(word)
        length += len(word) + 1
    return " ".join(parts), spans


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e6


def main(rounds: int) -> None:
    rng = random.Random(7)
    chat = [message(rng) for _ in range(6)]
    results: dict[str, list[float]] = {}

    def record(name: str, fn: Callable[[], object]) -> None:
        results.setdefault(name, []).append(timed(fn))

    for n in range(rounds):
        record(
            "no vault: join + cut into pieces",
            lambda: [t[i : i + 4] for t, _ in chat for i in range(0, len(t), 4)],
        )
        for style in STYLES:
            v = PseudonymVault(VaultScope("t", f"c{n}"), style=style, secret=b"bench")
            masked: list[str] = []

            def mask(v: PseudonymVault = v, masked: list[str] = masked) -> None:
                masked.extend(v.mask(t, s) for t, s in chat)

            record(f"{style}: mask 6 messages", mask)
            answer = masked[0]

            def restore(v: PseudonymVault = v, answer: str = answer) -> str:
                return v.restore(answer)

            record(f"{style}: restore answer", restore)

            def stream(v: PseudonymVault = v, answer: str = answer) -> str:
                r = StreamRestorer(v)
                return "".join(r.feed(answer[i : i + 4]) for i in range(0, len(answer), 4)) + r.finish()

            record(f"{style}: restore answer streamed (4-char pieces)", stream)
    for name, values in results.items():
        q = statistics.quantiles(values, n=20)
        print(f"{name:50s} p50 {statistics.median(values):8.0f} us   p95 {q[18]:8.0f} us")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
