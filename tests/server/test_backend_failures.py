"""The production backends failing and coming back, on a PostgreSQL of this module's own.

PostgreSQL stopped: every request that needs it answers 503 ``backend_unavailable`` (after
``index.pool_timeout_s``, not 30 s), naming no server, DSN or SQL; started again: the next request
succeeds. Audit records wait in memory while it is down. Long requests leave an in-progress audit
record. Tenant-level metrics need the metrics token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.server.conftest import Api, ServerFactory, ingest_and_keys, make_spec, write_corpus

from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.errors import BackendUnavailable, StoreError
from stanchion.index.postgres import PostgresStore
from stanchion.server import auth
from stanchion.server.app import create_app
from stanchion.server.audit import AuditWriter
from stanchion.state import AuditRecord, open_state
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply
from stanchion.testing.live_server import LiveServer
from stanchion.testing.services import ServiceUnavailable, fresh_database

LEAKS = ("host=", "dbname=", "user=", "LINE 1", "SELECT", "relation", ".s.PGSQL", "/tmp/")


class PrivatePostgres:
    """A pgserver cluster this module may stop and start without disturbing the others' tests."""

    def __init__(self, datadir: Path) -> None:
        import pgserver

        self.server = pgserver.get_server(str(datadir), cleanup_mode="stop")  # type: ignore[attr-defined]
        self.server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        self.admin_dsn: str = self.server.get_uri()

    def stop(self) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def close(self) -> None:
        self.server.cleanup()


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    try:
        pg = PrivatePostgres(tmp_path_factory.mktemp("private-pg"))
    except (ImportError, ServiceUnavailable) as exc:
        pytest.fail(f"required service unavailable: PostgreSQL (pgserver): {exc}")
    yield pg
    pg.close()


@pytest.fixture
def pg(private_pg: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The private cluster, running again after each test whatever the test did to it."""
    yield private_pg
    private_pg.start()


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture
def on_private_pg(
    pg: PrivatePostgres,
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    redis_url: str,
) -> Iterator[Api]:
    """A server with index and state on the private PostgreSQL (a 2 s pool timeout)."""
    dsn = fresh_database(pg.admin_dsn)
    write_corpus(tmp_path)
    spec = make_spec(
        tmp_path,
        index={"backend": "postgres", "dsn": dsn, "pool_timeout_s": 2},
        server={"redis_url": redis_url},
        models={"up": _UP_MODEL, "extractive": {"provider": "extractive"}},
        routes={"gw": {"models": ["up"], "grounded": False}, "default": {"models": ["extractive"]}},
    )
    keys = ingest_and_keys(spec, embedder)
    with LiveServer(create_app(spec, embedder=embedder, run_jobs=False)) as url:
        yield Api(url, keys, spec)


_UP_MODEL: dict[str, Any] = {"provider": "openai", "model": "fake-model", "max_retries": 0}


@pytest.fixture(autouse=True)
def _upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=Reply(text="hello there", usage=(3, 2))) as server:
        _UP_MODEL["base_url"] = server.url
        yield server


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "backend_unavailable"
    for leak in LEAKS:
        assert leak not in r.text, leak
    assert r.headers["x-request-id"] in error["message"]


class TestPostgresDown:
    def test_503_while_down_and_the_first_request_after_a_restart_succeeds(
        self, on_private_pg: Api, pg: PrivatePostgres
    ) -> None:
        """Key lookups (state) and listings (index) answer 503 while PostgreSQL is stopped;
        /readyz says so; once it is back, the very next request is answered."""
        api = on_private_pg
        with api.client(api.keys.ops) as ops, api.client(api.keys.finance) as finance:
            assert ops.get("/v1/documents").status_code == 200
            pg.stop()
            _assert_unavailable(ops.get("/v1/documents"))  # the key is cached: the index fails
            _assert_unavailable(finance.get("/v1/documents"))  # a key not yet seen: the state fails
            ready = httpx.get(api.url + "/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["state"] != "ok"
            pg.start()
            assert finance.get("/v1/documents").status_code == 200
            assert ops.post("/v1/search", json={"query": "refund"}).status_code == 200

    def test_a_restart_between_requests_costs_no_failed_request(
        self, on_private_pg: Api, pg: PrivatePostgres
    ) -> None:
        """Pooled connections broken by a restart are replaced before use, in both pools."""
        api = on_private_pg
        with api.client(api.keys.ops) as ops:
            assert ops.get("/v1/documents").status_code == 200
            pg.stop()
            pg.start()
            assert ops.get("/v1/documents").status_code == 200
        with api.client(api.keys.admin) as admin:  # a key not cached: the state pool's turn
            assert admin.get("/v1/usage").status_code == 200

    def test_database_errors_name_no_sql_and_no_server(self, on_private_pg: Api) -> None:
        """A statement PostgreSQL refuses is a 503 without its text; the log has the detail."""
        api = on_private_pg
        dsn = api.spec.index.dsn
        assert dsn is not None
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE stanchion_index.documents RENAME TO documents_gone")
            conn.execute("ALTER TABLE audit_log RENAME TO audit_log_gone")
        try:
            with api.client(api.keys.ops) as ops, api.client(api.keys.admin) as admin:
                _assert_unavailable(ops.get("/v1/documents"))  # the index
                _assert_unavailable(admin.get("/v1/audit"))  # the state
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ALTER TABLE stanchion_index.documents_gone RENAME TO documents")
                conn.execute("ALTER TABLE audit_log_gone RENAME TO audit_log")

    def test_audit_records_wait_for_the_database_and_readyz_counts_them(
        self, on_private_pg: Api, pg: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A gateway answer given while PostgreSQL is down (the key cached) is audited once it is
        back, with the time it happened."""
        monkeypatch.setattr(auth, "KEY_CACHE_S", 3600.0)  # the key stays known while the state is down
        api = on_private_pg
        rid = uuid.uuid4().hex
        chat = {"model": "gw", "messages": [{"role": "user", "content": "hi"}]}
        with api.client(api.keys.ops) as ops:
            assert ops.post("/v1/chat/completions", json=chat).status_code == 200  # caches the key
            pg.stop()
            r = ops.post("/v1/chat/completions", json=chat, headers={"X-Request-ID": rid})
            assert r.status_code == 200, r.text
            ready = _wait_for(
                lambda: (body := httpx.get(api.url + "/readyz").json())["audit_pending"] and body,
                "the record to wait",
            )
            assert ready["status"] == "unavailable" and ready["audit_pending"] >= 1
            restarted = time.time()
            pg.start()
        state = api.state()
        try:
            (record,) = _wait_for(
                lambda: [a for a in state.audit_log("acme") if a.request_id == rid], "the record"
            )
        finally:
            state.close()
        assert record.status == 200 and record.action == "chat.completions"
        assert record.at < restarted  # when it happened, not when it could be written
        assert _wait_for(
            lambda: httpx.get(api.url + "/readyz").json()["audit_pending"] == 0, "an empty queue"
        )


class TestStoreErrors:
    def test_index_errors_keep_sql_and_server_in_detail(self, pg: PrivatePostgres) -> None:
        """A failed job shows the StoreError's message: short; the driver's words are in detail."""
        dsn = fresh_database(pg.admin_dsn)
        store = PostgresStore(dsn, dim=4, pool_timeout_s=2)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ALTER TABLE stanchion_index.units RENAME TO units_gone")
            with pytest.raises(StoreError) as caught:
                store.units("s")
            assert not isinstance(caught.value, BackendUnavailable)
            for leak in LEAKS:
                assert leak not in str(caught.value)
            assert "units" in caught.value.detail and "host=" in caught.value.detail
            pg.stop()
            with pytest.raises(BackendUnavailable):
                store.ping()
        finally:
            pg.start()
            store.close()

    def test_state_errors_are_store_errors(self, pg: PrivatePostgres) -> None:
        """The state store raises the tree's errors, never psycopg's or the pool's."""
        state = open_state(dsn=fresh_database(pg.admin_dsn), pool_timeout_s=1)
        try:
            pg.stop()
            with pytest.raises(BackendUnavailable) as caught:
                state.key_for_secret("sk-stn-nothing")
            assert "host=" not in str(caught.value)
            pg.start()
            assert state.key_for_secret("sk-stn-nothing") is None  # no failed call after the restart
        finally:
            state.close()


def _record(rid: str) -> AuditRecord:
    return AuditRecord("search", "acme", "ana", "k", rid, 200)


class TestAuditWriterWhileDown:
    def test_records_wait_bounded_and_are_written_when_the_database_is_back(
        self, pg: PrivatePostgres, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Nothing is lost to an outage but what exceeds the bound, and that is counted."""
        state = open_state(dsn=fresh_database(pg.admin_dsn), pool_timeout_s=1)

        async def scenario() -> tuple[int, int]:
            writer = AuditWriter(state, max_pending=3)
            pg.stop()
            for n in range(4):
                writer.record(_record(f"r{n}"))
            await writer.flush()
            waiting = writer.pending
            pg.start()
            await writer.flush()
            return waiting, writer.pending

        try:
            with caplog.at_level("WARNING", logger="stanchion.server.audit"):
                waiting, left = asyncio.run(scenario())
            assert (waiting, left) == (3, 0)
            assert sorted(r.request_id for r in state.audit_log()) == ["r1", "r2", "r3"]
            events = [r.getMessage() for r in caplog.records]
            assert "audit.dropped" in events and "audit.waiting" in events and "audit.recovered" in events
        finally:
            state.close()

    def test_a_record_the_database_refuses_is_dropped_alone(
        self, pg: PrivatePostgres, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A record PostgreSQL rejects (a count beyond its integer) does not hold up the others."""
        state = open_state(dsn=fresh_database(pg.admin_dsn), pool_timeout_s=1)
        writer = AuditWriter(state)
        writer.record(_record("before"))
        writer.record(dataclasses.replace(_record("poison"), input_tokens=2**40))
        writer.record(_record("after"))
        try:
            with caplog.at_level("WARNING", logger="stanchion.server.audit"):
                asyncio.run(writer.flush())
            assert sorted(r.request_id for r in state.audit_log()) == ["after", "before"]
            assert (writer.pending, writer.dropped) == (0, 1)
            assert "audit.record_rejected" in [r.getMessage() for r in caplog.records]
        finally:
            state.close()


class TestInProgressRecords:
    @pytest.mark.parametrize("backend", ["sqlite", "postgres"])
    def test_a_stream_is_audited_while_it_runs_and_once_when_it_ends(
        self, serve: ServerFactory, backend: str, _upstream: FakeOpenAIServer
    ) -> None:
        """A worker killed mid-stream would leave the in-progress record; a finished stream
        leaves exactly one record, with its final status."""
        _upstream.script(Reply(text=" ".join(f"w{i}" for i in range(40)), token_delay_s=0.1))
        api = serve(
            backend=backend,
            models={"up": _UP_MODEL, "extractive": {"provider": "extractive"}},
            routes={"gw": {"models": ["up"], "grounded": False}, "default": {"models": ["extractive"]}},
        )
        rid = uuid.uuid4().hex
        body = {"model": "gw", "stream": True, "messages": [{"role": "user", "content": "long one"}]}
        state = api.state()

        def records() -> list[AuditRecord]:
            return [a for a in state.audit_log("acme") if a.request_id == rid]

        try:
            with (
                api.client(api.keys.ops) as c,
                c.stream("POST", "/v1/chat/completions", json=body, headers={"X-Request-ID": rid}) as r,
            ):
                lines = r.iter_lines()
                next(line for line in lines if '"content"' in line)
                (running,) = _wait_for(records, "the in-progress record")
                assert running.status == 0 and running.query == "long one" and running.route == "gw"
                assert any(line.startswith("data: [DONE]") for line in lines)
            (done,) = _wait_for(lambda: [a for a in records() if a.status == 200], "the final record")
            assert len(records()) == 1 and done.output_tokens > 0
        finally:
            state.close()


class TestMetricsAccess:
    @pytest.mark.parametrize("backend", ["sqlite", "postgres"])
    def test_tenant_series_need_the_metrics_token(
        self, serve: ServerFactory, backend: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without credentials /metrics sums over tenants; the token shows them; a wrong one is 401."""
        monkeypatch.setenv("TEST_METRICS_TOKEN", "m-" + uuid.uuid4().hex)
        api = serve(
            backend=backend,
            server={"metrics_token_env": "TEST_METRICS_TOKEN"},
            models={"up": _UP_MODEL, "extractive": {"provider": "extractive"}},
            routes={"gw": {"models": ["up"], "grounded": False}, "default": {"models": ["extractive"]}},
        )
        chat = {"model": "gw", "messages": [{"role": "user", "content": "hi"}]}
        for key in (api.keys.ops, api.keys.globex):
            with api.client(key) as c:
                assert c.post("/v1/chat/completions", json=chat).status_code == 200
        public = httpx.get(api.url + "/metrics").text
        assert "tenant=" not in public and "globex" not in public
        out = [
            (sample.labels, sample.value)
            for family in text_string_to_metric_families(public)
            for sample in family.samples
            if sample.name == "stanchion_tokens_total" and sample.labels["direction"] == "out"
        ]
        assert [value for _, value in out] == [4.0] and "tenant" not in out[0][0]  # both tenants' 2 + 2
        token = {"Authorization": "Bearer " + os.environ["TEST_METRICS_TOKEN"]}
        private = httpx.get(api.url + "/metrics", headers=token).text
        assert 'tenant="globex"' in private and 'tenant="acme"' in private
        wrong = httpx.get(api.url + "/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_metrics_token"
