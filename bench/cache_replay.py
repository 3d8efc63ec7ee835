"""The response cache end to end: a stream of support questions replayed through ``stanchion serve``.

``stanchion serve`` runs as a subprocess (as ``stanchion bench gateway`` runs it) with one gateway
route, ``support``, cached (exact and semantic tiers: `cache: {semantic: true}`), in front of a fake
OpenAI-compatible upstream (``stanchion.testing.fake_openai``, in this process). The cache lives in
a SQLite file, or in a real ``redis-server`` (``server.cache_redis_url``).

The questions (``bench/data/cache_replay_questions.txt``, written for this project) come in
families: a question, a paraphrase of it (the same answer would do), and for some a near-miss
variant (another product, number, negation: another answer). The stream (``--requests``, fixed by
``--seed``) asks, at each step, an exact repeat of an earlier request (30%), the paraphrase of an
earlier question (20%), the near-miss variant of an earlier question (8%), or a new question (the
rest). What is reused was asked at least ``--gap`` requests earlier, so that ``--concurrency``
clients have had it answered and stored.

The upstream's answer names its family ("[Q17] ..."): a near-miss is its own family, so an answer
served from the cache for the wrong question is seen (a *false hit*). Its usage is counted in
words: the system prompt and the question in, the answer out; a run's *tokens saved* is one minus
what the upstream was asked for over what the same stream costs with no cache (every request
reaching it). Latency is the client's, to the last byte, by what ``X-Stanchion-Cache`` said.
Streamed (SSE) and plain requests run as two tenants, each on a fresh server process, so neither
sees the other's entries or the other's remembered question vectors.

    python bench/cache_replay.py [--requests 360] [--concurrency 4] [--backends sqlite redis]
                                 [--modes plain stream] [--seed 7] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from stanchion.bench.gateway import _CLI, BenchError, _free_port, _gateway
from stanchion.bench.loadgen import Percentiles
from stanchion.cache.match import PairMatcher
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply

QUESTIONS = Path(__file__).resolve().parent / "data" / "cache_replay_questions.txt"
ROUTE = "support"
SYSTEM = (
    "You are the support assistant of Acme Cloud. Answer the customer's question in a few short "
    "sentences, in plain language, using only what you know about Acme Cloud's products, plans, "
    "billing and policies. If you do not know, say so and suggest contacting support. Never make "
    "up prices, dates or limits."
)
# The fake upstream: this long before the first token, then this long per word.
DELAY_S = 0.2
WORD_DELAY_S = 0.005
ANSWER_WORDS = 40
SHARES = {"repeat": 0.30, "paraphrase": 0.20, "near_miss": 0.08}
KINDS = ("new", "repeat", "paraphrase", "near_miss")


def tokens(text: str) -> int:
    """What the fake upstream counts as tokens: words."""
    return len(text.split())


# --- the question stream -----------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    id: int
    question: str
    paraphrase: str
    near_miss: str


@dataclass(frozen=True)
class Ask:
    """One request of the stream: its text, the answer it must get (``family``), and its kind."""

    text: str
    family: str
    kind: str


def load_families(path: Path = QUESTIONS) -> list[Family]:
    families = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("||")]
        if len(parts) != 3 or not parts[0]:
            raise ValueError(f"{path}: want 'question || paraphrase || near-miss', got {line!r}")
        families.append(Family(len(families), *parts))
    texts = [t for f in families for t in (f.question, f.paraphrase, f.near_miss) if t]
    duplicates = [t for t, n in Counter(texts).items() if n > 1]
    if duplicates:
        raise ValueError(f"{path}: questions written twice: {duplicates[:5]}")
    return families


def build_stream(families: Sequence[Family], requests: int, seed: int, gap: int) -> list[Ask]:
    """``requests`` asks; a reused question was asked at least ``gap`` asks before."""
    rng = random.Random(seed)
    fresh = list(families)
    rng.shuffle(fresh)
    stream: list[Ask] = []
    asked_at: dict[int, int] = {}  # family -> position of its question
    used_paraphrase: set[int] = set()
    used_near: set[int] = set()
    for position in range(requests):
        ready = [f for f in families if position - asked_at.get(f.id, position) >= gap]
        options: dict[str, list[Any]] = {
            "repeat": stream[: max(0, position - gap + 1)],
            "paraphrase": [f for f in ready if f.paraphrase and f.id not in used_paraphrase],
            "near_miss": [f for f in ready if f.near_miss and f.id not in used_near],
        }
        draw = rng.random()
        kind = "new"
        for name, share in SHARES.items():
            if draw < share:
                kind = name
                break
            draw -= share
        if kind != "new" and not options[kind]:
            kind = "new"
        if kind == "new" and not fresh:
            kind = "repeat" if options["repeat"] else kind
        if kind == "repeat":
            earlier = rng.choice(options["repeat"])
            stream.append(Ask(earlier.text, earlier.family, "repeat"))
        elif kind == "paraphrase":
            family = rng.choice(options["paraphrase"])
            used_paraphrase.add(family.id)
            stream.append(Ask(family.paraphrase, f"Q{family.id}", "paraphrase"))
        elif kind == "near_miss":
            family = rng.choice(options["near_miss"])
            used_near.add(family.id)
            stream.append(Ask(family.near_miss, f"N{family.id}", "near_miss"))
        elif fresh:
            family = fresh.pop()
            asked_at[family.id] = position
            stream.append(Ask(family.question, f"Q{family.id}", "new"))
        else:
            raise ValueError(f"{requests} requests need more than {len(families)} questions")
    return stream


def answer_family(text: str) -> str:
    """The family an answer names ("[Q17] ..." -> "Q17"), or "?"."""
    if text.startswith("[") and "]" in text:
        return text[1 : text.index("]")]
    return "?"


# --- the fake upstream -------------------------------------------------------------------------


class Upstream:
    """The fake model: answers each question with its family's answer and counts the usage."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.family_of: dict[str, str] = {}
        for f in families:
            self.family_of[f.question] = self.family_of[f.paraphrase] = f"Q{f.id}"
            if f.near_miss:
                self.family_of[f.near_miss] = f"N{f.id}"
        self.family_of.pop("", None)
        self.lock = threading.Lock()
        self.used = 0
        self.asked = 0
        self.server = FakeOpenAIServer(self.reply)

    def reply(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        question = str(messages[-1].get("content", "")) if messages else ""
        family = self.family_of.get(question, "?")
        words = " ".join(f"word{i}" for i in range(ANSWER_WORDS - 1))
        text = f"[{family}] {words}"
        usage = (sum(tokens(str(m.get("content", ""))) for m in messages), tokens(text))
        with self.lock:
            self.used += sum(usage)
            self.asked += 1
        return Reply(text=text, usage=usage, delay_s=DELAY_S, token_delay_s=WORD_DELAY_S)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.used, self.asked


def cost_without_cache(stream: Sequence[Ask]) -> int:
    """Tokens the stream costs when every request reaches the upstream."""
    return sum(tokens(SYSTEM) + tokens(a.text) + ANSWER_WORDS for a in stream)


# --- the server --------------------------------------------------------------------------------


def write_spec(workdir: Path, upstream_url: str, port: int, cache_redis_url: str | None) -> Path:
    server: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "workers": 1,
        "state_path": str(workdir / "state.db"),
        "rate_limits": {"requests_per_minute": 1_000_000, "tokens_per_minute": 100_000_000},
    }
    if cache_redis_url:
        server["cache_redis_url"] = cache_redis_url
    spec = {
        "version": 1,
        "index": {"backend": "sqlite", "path": str(workdir / "index.db")},
        "models": {
            "upstream": {
                "provider": "openai", "model": "fake-model", "base_url": upstream_url, "timeout_s": 30,
                "max_retries": 0, "context_window": 8192, "max_output_tokens": 256,
                "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
            }
        },
        "routes": {
            ROUTE: {"models": ["upstream"], "grounded": False, "cache": {"semantic": True}},
            "default": {"models": ["upstream"]},
        },
        "answer": {"route": "default"},
        "server": server,
    }  # fmt: skip
    path = workdir / "stanchion.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def create_key(spec: Path, tenant: str) -> str:
    command = [*_CLI, "keys", "create", "--spec", str(spec), "--tenant", tenant, "--user", "bench"]
    done = subprocess.run(
        [*command, "--scopes", "query", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"stanchion keys create failed: {done.stderr.strip()[-2000:]}")
    return str(json.loads(done.stdout)["key"])


@contextlib.contextmanager
def cache_store(backend: str, workdir: Path) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    from stanchion.testing.services import redis_server

    with redis_server(workdir / "redis") as url:
        yield url


# --- the replay --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    ask: Ask
    status: str  # X-Stanchion-Cache
    served: str  # the family the answer names
    seconds: float
    error: str = ""


def ask_once(client: httpx.Client, base: str, ask: Ask, stream: bool) -> Outcome:
    body: dict[str, Any] = {
        "model": ROUTE,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask.text}],
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    response = client.post(f"{base}/chat/completions", json=body)
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        return Outcome(ask, "error", "?", seconds, f"{response.status_code}: {response.text[:200]}")
    if stream:
        pieces = []
        for line in response.text.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk.get("choices"):
                    pieces.append(chunk["choices"][0]["delta"].get("content") or "")
        text = "".join(pieces)
    else:
        text = response.json()["choices"][0]["message"]["content"]
    return Outcome(ask, response.headers.get("x-stanchion-cache", "?"), answer_family(text), seconds)


def replay(base: str, key: str, stream_of: Sequence[Ask], *, stream: bool, concurrency: int) -> list[Outcome]:
    """The asks in order, ``concurrency`` at a time (each client takes the next one)."""
    headers = {"Authorization": f"Bearer {key}"}
    clients = threading.local()

    def one(ask: Ask) -> Outcome:
        if not hasattr(clients, "client"):
            clients.client = httpx.Client(timeout=60, headers=headers)
        return ask_once(clients.client, base, ask, stream)

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, stream_of))


def summarise(outcomes: Sequence[Outcome], upstream_tokens: int, upstream_requests: int) -> dict[str, Any]:
    without = cost_without_cache([o.ask for o in outcomes])
    by_kind: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = by_kind.setdefault(o.ask.kind, Counter())
        row[o.status] += 1
    hits = [o for o in outcomes if o.status.startswith("hit-")]
    false_hits = [o for o in hits if o.served != o.ask.family]
    wrong_misses = [o for o in outcomes if o.status == "miss" and o.served != o.ask.family]
    latency = {
        status: Percentiles.of(o.seconds for o in outcomes if o.status == status).to_dict()
        for status in ("hit-exact", "hit-semantic", "miss")
    }
    tiers = Counter(o.status for o in outcomes)
    missed = [o for o in outcomes if o.ask.kind == "paraphrase" and o.status == "miss"]
    return {
        "requests": len(outcomes),
        "errors": sum(1 for o in outcomes if o.error),
        "kinds": {k: sum(by_kind.get(k, {}).values()) for k in KINDS},
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
        "hit_rate": round(len(hits) / len(outcomes), 4),
        "hits": {"exact": tiers["hit-exact"], "semantic": tiers["hit-semantic"]},
        "paraphrase_hit_rate": _share(by_kind.get("paraphrase"), ("hit-exact", "hit-semantic")),
        "repeat_hit_rate": _share(by_kind.get("repeat"), ("hit-exact", "hit-semantic")),
        "false_hits": len(false_hits),
        "false_hit_examples": [
            {"asked": o.ask.text, "kind": o.ask.kind, "served": o.served, "tier": o.status}
            for o in false_hits[:10]
        ],
        "paraphrase_misses": [o.ask.text for o in missed],
        "wrong_misses": len(wrong_misses),  # the upstream answered another family: a bench bug
        "tokens_without_cache": without,
        "tokens_upstream": upstream_tokens,
        "upstream_requests": upstream_requests,
        "tokens_saved_share": round(1 - upstream_tokens / without, 4) if without else None,
        "latency_ms": latency,
    }


def _share(row: dict[str, int] | None, statuses: tuple[str, ...]) -> float | None:
    if not row:
        return None
    return round(sum(row.get(s, 0) for s in statuses) / sum(row.values()), 4)


def run(args: argparse.Namespace) -> dict[str, Any]:
    families = load_families()
    stream_of = build_stream(families, args.requests, args.seed, args.gap)
    upstream = Upstream(families)
    report: dict[str, Any] = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seed": args.seed,
        "families": len(families),
        "upstream": {"delay_s": DELAY_S, "word_delay_s": WORD_DELAY_S, "answer_words": ANSWER_WORDS},
        "runs": [],
    }
    with upstream.server, contextlib.ExitStack() as stack:
        for backend in args.backends:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stanchion-replay-")))
            with cache_store(backend, workdir) as redis_url:
                port = _free_port()
                spec = write_spec(workdir, upstream.server.url, port, redis_url)
                for mode in args.modes:
                    # A fresh server per mode: a worker remembers the vectors of recent questions.
                    key = create_key(spec, f"replay-{mode}")
                    with _gateway(spec, port, 1, workdir, 180.0) as base:
                        _warm_up(base, key)
                        used0, asked0 = upstream.counts()
                        print(f"{backend} {mode}: {len(stream_of)} requests ...", file=sys.stderr)
                        outcomes = replay(
                            base, key, stream_of, stream=mode == "stream", concurrency=args.concurrency
                        )
                        used, asked = upstream.counts()
                    summary = summarise(outcomes, used - used0, asked - asked0)
                    report["runs"].append({"backend": backend, "mode": mode, **summary})
    missed = sorted({t for r in report["runs"] for t in r["paraphrase_misses"]})
    report["paraphrase_reasons"] = paraphrase_reasons(families, missed)
    return report


def paraphrase_reasons(families: Sequence[Family], missed: Sequence[str]) -> dict[str, str]:
    """Why each missed paraphrase was not served its question's entry, judged here as the cache
    judges it: its cosine to the question (MiniLM) under the threshold (``below_threshold``), the
    near-miss check's reason for refusing it, or ``hit`` (the pair passes: the miss came from
    elsewhere, e.g. another entry nearer)."""
    if not missed:
        return {}
    from stanchion.app import build
    from stanchion.spec import parse_spec

    question_of = {f.paraphrase: f.question for f in families}
    embedder = build(parse_spec({"version": 1})).embedder
    pairs = [(t, question_of[t]) for t in missed]
    vectors = np.asarray(embedder.embed([x for pair in pairs for x in pair]), dtype=np.float32)
    matcher = PairMatcher()
    reasons = {}
    for i, (asked, cached) in enumerate(pairs):
        similarity = float(np.dot(vectors[2 * i], vectors[2 * i + 1]))
        verdict = matcher.judge(asked, cached, similarity)
        reasons[asked] = "hit" if verdict.hit else verdict.reason
    return reasons


def _warm_up(base: str, key: str) -> None:
    """One request first, so the first measured one does not load the embedding model."""
    body = {"model": ROUTE, "messages": [{"role": "user", "content": "Warm-up request, please ignore."}]}
    headers = {"Authorization": f"Bearer {key}", "X-Stanchion-Cache": "bypass"}
    response = httpx.post(f"{base}/chat/completions", json=body, headers=headers, timeout=120)
    if response.status_code != 200:
        raise BenchError(f"the gateway answered {response.status_code}: {response.text[:300]}")


def render(report: dict[str, Any]) -> None:
    print(
        f"{report['requests']} requests ({report['families']} question families, seed {report['seed']}), "
        f"{report['concurrency']} clients; upstream {report['upstream']['delay_s'] * 1000:.0f} ms + "
        f"{report['upstream']['word_delay_s'] * 1000:.0f} ms/word x {report['upstream']['answer_words']} words"
    )
    kinds = report["runs"][0]["kinds"] if report["runs"] else {}
    print("stream: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    head = (
        f"{'backend':8} {'mode':6} {'saved':>6} {'hits':>6} {'exact':>5} {'sem':>4} {'para':>5} "
        f"{'false':>5} {'exact p50/p95':>14} {'sem p50/p95':>14} {'miss p50/p95':>14} {'err':>3}"
    )
    print(head)
    for r in report["runs"]:
        lat = r["latency_ms"]

        def pair(status: str, lat: dict[str, Any] = lat) -> str:
            p = lat[status]
            return "-" if p["p50"] is None else f"{p['p50']:.0f}/{p['p95']:.0f}"

        print(
            f"{r['backend']:8} {r['mode']:6} {r['tokens_saved_share']:>6.1%} {r['hit_rate']:>6.1%} "
            f"{r['hits']['exact']:>5} {r['hits']['semantic']:>4} {r['paraphrase_hit_rate'] or 0:>5.0%} "
            f"{r['false_hits']:>5} {pair('hit-exact'):>14} {pair('hit-semantic'):>14} {pair('miss'):>14} "
            f"{r['errors']:>3}"
        )
        for example in r["false_hit_examples"]:
            print(
                f"  false hit ({example['kind']}, {example['tier']}): {example['asked']!r} got {example['served']}"
            )
        reasons = Counter(report["paraphrase_reasons"].get(t, "?") for t in r["paraphrase_misses"])
        print("  paraphrases missed, why: " + ", ".join(f"{k} {n}" for k, n in reasons.most_common()))
        for kind, row in r["by_kind"].items():
            print(f"  {kind:10} " + ", ".join(f"{s} {n}" for s, n in sorted(row.items())))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=360)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--gap", type=int, default=12, help="a reused question was asked this many requests before"
    )
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "redis"), default=["sqlite", "redis"])
    parser.add_argument("--modes", nargs="+", choices=("plain", "stream"), default=["plain", "stream"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        render(report)


if __name__ == "__main__":
    main()
