"""What an answer is billed, admitted with and audited as, through the live API on both backends.

Models are OpenAI-compatible fakes on loopback (``stanchion.testing.fake_openai``) priced in the
spec; every figure is checked against the response, the audit log and the metrics the server keeps.
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from tests.server.conftest import Api, ingest_and_keys, make_spec, write_corpus

from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.models.pricing import estimate_message_tokens, estimate_tokens
from stanchion.server.app import create_app
from stanchion.spec import Spec
from stanchion.state.store import IN_PROGRESS
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply
from stanchion.testing.live_server import LiveServer
from stanchion.types import Message

SMALL = {"input_per_mtok": 0.15, "output_per_mtok": 0.60}
LARGE = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
SENTENCE = "The capital of France is Paris. It is known for the Eiffel Tower."


def price(tokens_in: int, tokens_out: int, rates: dict[str, float]) -> float:
    return (tokens_in * rates["input_per_mtok"] + tokens_out * rates["output_per_mtok"]) / 1e6


def model(upstream: FakeOpenAIServer, model_id: str, rates: dict[str, float] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": "openai",
        "model": model_id,
        "base_url": upstream.url,
        "max_retries": 0,
        "timeout_s": 10,
    }
    if rates is not None:
        spec["price"] = rates
    return spec


@dataclass
class Served:
    api: Api
    app: FastAPI

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the server's own metrics (read in process: the figures, not the exposition)."""
        body, _ = self.app.state.ctx.metrics.render()
        total = 0.0
        for line in body.decode().splitlines():
            sample = line.startswith((name + "{", name + " "))
            if sample and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def metrics_text(self) -> str:
        body, _ = self.app.state.ctx.metrics.render()
        return body.decode()

    def audit(self, action: str, *, count: int = 1) -> list[dict[str, Any]]:
        """The tenant's final audit records of ``action``, once ``count`` of them are there
        (streams are accounted after their last byte; a request's in-progress record, status 0,
        is not its final one)."""
        deadline = time.monotonic() + 30
        with self.api.client(self.api.keys.admin) as c:
            while True:
                listed: list[dict[str, Any]] = c.get("/v1/audit", params={"action": action}).json()["data"]
                records = [r for r in listed if r["status"] != IN_PROGRESS]
                if len(records) >= count or time.monotonic() > deadline:
                    return records
                time.sleep(0.05)


Start = Callable[..., Served]


@pytest.fixture(params=["sqlite", "postgres"])
def start(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, request: pytest.FixtureRequest
) -> Iterator[Start]:
    """``serve`` (tests/server/conftest.py) keeping hold of the app, on SQLite and on PostgreSQL +
    Redis. ``update`` replaces top-level spec sections; ``spec_embedder`` embeds with the spec's
    embedder instead of the session's local model."""
    servers: list[LiveServer] = []

    def run(*, update: dict[str, Any] | None = None, spec_embedder: bool = False, **spec_args: Any) -> Served:
        write_corpus(tmp_path)
        if request.param == "postgres":
            spec_args["index"] = {"backend": "postgres", "dsn": request.getfixturevalue("pg_dsn")}
            spec_args["server"] = {
                "redis_url": request.getfixturevalue("redis_url"),
                **spec_args.get("server", {}),
            }
        spec = make_spec(tmp_path, **spec_args).model_copy(update=update or {})
        shared = None if spec_embedder else embedder  # the spec's own (e.g. remote) embedder
        keys = ingest_and_keys(spec, shared)
        app = create_app(spec, embedder=shared)
        server = LiveServer(app)
        url = server.__enter__()
        servers.append(server)
        return Served(Api(url, keys, spec), app)

    yield run
    for server in servers:
        server.__exit__(None, None, None)


class TestEveryTokenAtItsModelsPrice:
    def test_a_router_that_picks_the_large_tier_bills_the_large_price(self, start: Start) -> None:
        """/v1/answer on a tiered route: the large tier answers, and every token is billed at its
        price, not at the small tier's."""
        with FakeOpenAIServer(default=Reply(text="Refunds take five days.", usage=(200, 20))) as up:
            served = start(
                models={"small": model(up, "small-id", SMALL), "large": model(up, "large-id", LARGE)},
                routes={
                    "default": {
                        "tiers": {"small": ["small"], "large": ["large"]},
                        "rules": [{"pattern": "compare", "tier": "large"}],
                    }
                },
            )
            with served.api.client(served.api.keys.ops) as c:
                r = c.post("/v1/answer", json={"question": "Compare the refund policy with the budget"})
        assert r.status_code == 200, r.text
        calls = len(up.requests)  # the answer, and a corrective retry when verification asked for one
        assert calls >= 1 and {q.json["model"] for q in up.requests} == {"large-id"}
        body = r.json()
        cost = price(200 * calls, 20 * calls, LARGE)
        assert body["model"] == "large"
        assert body["models"] == [
            {"model": "large", "input_tokens": 200 * calls, "output_tokens": 20 * calls, "cost_usd": cost}
        ]
        assert body["cost_usd"] == pytest.approx(cost)
        assert served.metric("stanchion_cost_usd_total", model="large") == pytest.approx(cost)
        assert served.metric("stanchion_cost_usd_total", model="small") == 0.0
        [record] = served.audit("answer")
        assert record["models"] == ["large"] and record["cost_usd"] == pytest.approx(cost)

    def test_a_paid_backup_behind_a_free_primary_is_billed(self, start: Start) -> None:
        """A grounded chat completion whose free primary fails is billed at the paid backup's price."""
        with (
            FakeOpenAIServer(default=Reply(status=503)) as free,
            FakeOpenAIServer(default=Reply(text="Refunds take five days.", usage=(300, 30))) as paid,
        ):
            served = start(
                models={"free": model(free, "free-id"), "paid": model(paid, "paid-id", LARGE)},
                routes={"default": {"models": ["free", "paid"]}},
            )
            with served.api.client(served.api.keys.ops) as c:
                r = c.post(
                    "/v1/chat/completions",
                    json={"model": "default", "messages": [{"role": "user", "content": "Refund window?"}]},
                )
        assert r.status_code == 200, r.text
        calls = len(paid.requests)
        cost = price(300 * calls, 30 * calls, LARGE)
        extra = r.json()["stanchion"]
        assert extra["model"] == "paid" and extra["cost_usd"] == pytest.approx(cost) and cost > 0
        assert extra["models"] == [
            {"model": "paid", "input_tokens": 300 * calls, "output_tokens": 30 * calls, "cost_usd": cost}
        ]
        [record] = served.audit("chat.completions")
        assert record["models"] == ["paid"] and record["cost_usd"] == pytest.approx(cost)

    def test_a_stream_that_fails_over_mid_answer_bills_both_models(self, start: Start) -> None:
        """The primary dies after three words and the backup finishes: the response, the audit
        record and the metrics name both real models, each with its own tokens and cost."""
        with (
            FakeOpenAIServer(default=Reply(text=SENTENCE, die_after_tokens=3)) as primary,
            FakeOpenAIServer(
                default=Reply(text="Paris. It is known for the Eiffel Tower.", usage=(40, 9))
            ) as backup,
        ):
            served = start(
                models={
                    "primary": model(primary, "primary-id", SMALL),
                    "backup": model(backup, "backup-id", LARGE),
                    "extractive": {"provider": "extractive"},
                },
                routes={
                    "gw": {"models": ["primary", "backup"], "grounded": False},
                    "default": {"models": ["extractive"]},
                },
            )
            question = [{"role": "user", "content": "What is Paris known for?"}]
            with (
                served.api.client(served.api.keys.ops) as c,
                c.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={
                        "model": "gw",
                        "stream": True,
                        "stream_options": {"include_usage": True},
                        "messages": question,
                    },
                ) as r,
            ):
                chunks = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: {")]
        finishing = next(ch for ch in chunks if ch["choices"] and ch["choices"][0]["finish_reason"])
        extra = finishing["stanchion"]
        # The primary was cut off before it reported usage: its tokens are estimated (chars/4).
        sent = "The capital of "
        primary_in = estimate_message_tokens([Message("user", "What is Paris known for?")])
        primary_out = estimate_tokens(sent)
        expected = [
            {
                "model": "primary",
                "input_tokens": primary_in,
                "output_tokens": primary_out,
                "cost_usd": price(primary_in, primary_out, SMALL),
            },
            {"model": "backup", "input_tokens": 40, "output_tokens": 9, "cost_usd": price(40, 9, LARGE)},
        ]
        assert extra["model"] == "backup" and extra["models"] == expected
        total = price(primary_in, primary_out, SMALL) + price(40, 9, LARGE)
        assert extra["cost_usd"] == pytest.approx(total)
        assert chunks[-1]["usage"]["prompt_tokens"] == primary_in + 40
        [record] = served.audit("chat.completions")
        assert record["models"] == ["primary", "backup"]
        assert record["cost_usd"] == pytest.approx(total) and record["detail"]["models"] == expected
        for share in expected:
            name = str(share["model"])
            out = served.metric("stanchion_tokens_total", model=name, direction="out")
            assert out == share["output_tokens"]
            assert served.metric("stanchion_cost_usd_total", model=name) == pytest.approx(share["cost_usd"])
        assert "->" not in served.metrics_text()


class TestAdmissionAndAudit:
    QUESTION = "How long do refunds take?"

    def test_answer_and_chat_admit_a_question_with_one_token_reserve(self, start: Start) -> None:
        """A question is admitted on /v1/answer exactly when it is on a grounded chat completion:
        its prompt plus the route's max_output_tokens, on top of the tokens already charged."""
        reserve = estimate_message_tokens([Message("user", self.QUESTION)]) + 512  # extractive's default
        charged = 1000  # what /v1/embeddings charges for 4,000 characters (chars/4)
        served = start(server={"rate_limits": {"tokens_per_minute": charged + reserve}})
        keys = served.api.keys

        def after_charging(key: str, extra: int, endpoint: str) -> int:
            with served.api.client(key) as c:
                text = "word " * ((charged + extra) * 4 // 5)
                embedded = c.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": [text]})
                assert embedded.status_code == 200, embedded.text
                if endpoint == "answer":
                    return c.post("/v1/answer", json={"question": self.QUESTION}).status_code
                chat = {"model": "default", "messages": [{"role": "user", "content": self.QUESTION}]}
                return c.post("/v1/chat/completions", json=chat).status_code

        # Room for exactly one reserve: both endpoints admit; 50 tokens less room: both refuse.
        assert after_charging(keys.ops, 0, "answer") == 200
        assert after_charging(keys.finance, 0, "chat") == 200
        assert after_charging(keys.ingest, 50, "answer") == 429
        assert after_charging(keys.globex, 50, "chat") == 429

    def test_a_failed_answer_is_audited(self, start: Start) -> None:
        """/v1/answer that fails upstream answers 502 and leaves an audit record with that status."""
        with FakeOpenAIServer(default=Reply(status=503)) as up:
            served = start(models={"up": model(up, "up-id", SMALL)}, routes={"default": {"models": ["up"]}})
            with served.api.client(served.api.keys.ops) as c:
                r = c.post("/v1/answer", json={"question": self.QUESTION})
        assert r.status_code == 502, r.text
        [record] = served.audit("answer")
        assert record["status"] == 502 and record["route"] == "default" and record["query"] == self.QUESTION

    def test_an_answer_no_model_wrote_names_no_model(self, start: Start) -> None:
        """Nothing retrieved, no model asked: the answer and its audit record name no model (not
        the chain's internal name)."""
        served = start()
        with served.api.client(served.api.keys.ops) as c:
            r = c.post("/v1/answer", json={"question": self.QUESTION, "filters": ["source=nowhere"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["abstained"] is True and body["model"] == "" and body["models"] == []
        [record] = served.audit("answer")
        assert record["models"] == [] and record["cost_usd"] == 0.0


class TestTokenChargeFailure:
    def test_a_charge_the_rate_limiter_cannot_take_is_logged_counted_and_audited(
        self, start: Start, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The rate-limit store stops taking writes while the model answers: the answer is still
        delivered, and the tokens that went uncharged are in the log, the metrics and the audit log."""
        backend: str = request.node.callspec.params["start"]
        holder: dict[str, Callable[[], None]] = {}
        served: Served | None = None

        def block_the_limiter(_: dict[str, Any]) -> Reply:
            # Runs in the fake's thread when the request arrives: after admission, before the charge.
            assert served is not None
            holder["release"] = block_writes(served.api.spec, backend)
            return Reply(text="Refunds take five days.", usage=(70, 7))

        with FakeOpenAIServer(replies=block_the_limiter) as up:
            served = start(
                models={"up": model(up, "up-id", SMALL), "extractive": {"provider": "extractive"}},
                routes={"gw": {"models": ["up"], "grounded": False}, "default": {"models": ["extractive"]}},
            )
            # The handler goes on the module's logger: the CLI's logging set-up stops propagation.
            logger = logging.getLogger("stanchion.server.accounting")
            logger.addHandler(caplog.handler)
            try:
                with served.api.client(served.api.keys.ops) as c:
                    r = c.post(
                        "/v1/chat/completions",
                        json={"model": "gw", "messages": [{"role": "user", "content": "Refund window?"}]},
                    )
            finally:
                logger.removeHandler(caplog.handler)
                if "release" in holder:
                    holder["release"]()
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "Refunds take five days."
        # Unique records: with propagation on, the root logger's handler is caplog's too.
        logged = list(
            {id(rec): rec for rec in caplog.records if rec.getMessage() == "ratelimit.charge_failed"}.values()
        )
        assert len(logged) == 1 and logged[0].__dict__["tokens"] == 77
        assert served.metric("stanchion_token_charge_failures_total") == 1
        assert served.metric("stanchion_uncharged_tokens_total") == 77
        [failed] = served.audit("tokens.charge_failed")
        assert failed["status"] == 503 and failed["detail"] == {"tokens": 77, "error": "RateLimitBackendDown"}
        [answered] = served.audit("chat.completions")
        assert answered["status"] == 200 and answered["input_tokens"] + answered["output_tokens"] == 77


def block_writes(spec: Spec, backend: str) -> Callable[[], None]:
    """Stop the rate-limit store from taking writes; returns what lets it take them again."""
    if backend == "sqlite":
        path = spec.resolve(spec.server.state_path).with_suffix(".limits.db")
        lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        lock.execute("BEGIN EXCLUSIVE")

        def unlock() -> None:
            lock.execute("ROLLBACK")
            lock.close()

        return unlock
    url = spec.server.redis_url
    assert url is not None
    host, port = url.removeprefix("redis://").split("/")[0].rsplit(":", 1)

    def redis(*args: str) -> None:
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(
                f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)
            )
            assert conn.recv(64).startswith(b"+OK")

    redis("CLIENT", "PAUSE", "30000", "WRITE")  # a paused Redis is slow, not gone: the charge times out
    return lambda: redis("CLIENT", "UNPAUSE")
