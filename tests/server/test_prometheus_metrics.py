"""Prometheus metrics: labels, histograms, and one scrape that sums every worker process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from stanchion.server import metrics as metrics_module
from stanchion.server.metrics import (
    MULTIPROC_ENV,
    UNMATCHED_ROUTE,
    Metrics,
    mark_process_dead,
    prepare_multiprocess_dir,
    route_template,
)

DOC_ROUTE = "/v1/documents/{document_id}"


def sample(body: bytes, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels``; fails when absent."""
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return float(s.value)
    raise AssertionError(f"no sample {name}{labels} in:\n{body.decode()}")


@pytest.fixture
def single(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    return Metrics()


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Multiprocess mode in a fresh directory; single-process storage is restored afterwards."""
    directory = tmp_path / "prom"
    directory.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    yield directory
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    metrics_module._select_value_class()


class TestSingleProcess:
    def test_requests_counted_by_route_template(self, single: Metrics) -> None:
        """Requests are counted per route template, method and status."""
        single.observe_request(DOC_ROUTE, "GET", 200, 0.03)
        single.observe_request(DOC_ROUTE, "GET", 200, 0.04)
        single.observe_request(DOC_ROUTE, "DELETE", 404, 0.01)
        body, content_type = single.render()
        assert content_type.startswith("text/plain")
        assert sample(body, "stanchion_http_requests_total", route=DOC_ROUTE, method="GET", status="200") == 2
        assert (
            sample(body, "stanchion_http_requests_total", route=DOC_ROUTE, method="DELETE", status="404") == 1
        )

    def test_histogram_buckets(self, single: Metrics) -> None:
        """A duration lands in every bucket at or above it; sum and count follow."""
        single.observe_request("/v1/answer", "POST", 200, 0.03)
        single.observe_request("/v1/answer", "POST", 200, 2.0)
        body, _ = single.render()
        labels = {"route": "/v1/answer", "method": "POST"}
        assert sample(body, "stanchion_http_request_seconds_bucket", le="0.025", **labels) == 0
        assert sample(body, "stanchion_http_request_seconds_bucket", le="0.05", **labels) == 1
        assert sample(body, "stanchion_http_request_seconds_bucket", le="2.5", **labels) == 2
        assert sample(body, "stanchion_http_request_seconds_bucket", le="+Inf", **labels) == 2
        assert sample(body, "stanchion_http_request_seconds_count", **labels) == 2
        assert sample(body, "stanchion_http_request_seconds_sum", **labels) == pytest.approx(2.03)

    def test_tokens_and_cost(self, single: Metrics) -> None:
        """Input and output tokens are separate directions; cost accumulates per model and tenant."""
        single.tokens("gpt-4o-mini", "acme", input=1200, output=300, cost_usd=0.00036)
        single.tokens("gpt-4o-mini", "acme", input=800, output=100, cost_usd=0.00018)
        body, _ = single.render(tenants=True)
        base = {"model": "gpt-4o-mini", "tenant": "acme"}
        assert sample(body, "stanchion_tokens_total", direction="in", **base) == 2000
        assert sample(body, "stanchion_tokens_total", direction="out", **base) == 400
        assert sample(body, "stanchion_cost_usd_total", **base) == pytest.approx(0.00054)

    def test_other_metrics(self, single: Metrics) -> None:
        """Errors, upstream and stage timings, ingest jobs and rate limiting all appear."""
        single.error("model_timeout")
        single.upstream("gpt-4o-mini", 1.5)
        for stage in ("retrieve", "rerank", "generate", "verify"):
            single.stage(stage, 0.02)
        single.job("done")
        single.job("failed")
        single.rate_limited("tokens")
        body, _ = single.render()
        assert sample(body, "stanchion_errors_total", code="model_timeout") == 1
        assert sample(body, "stanchion_upstream_seconds_bucket", model="gpt-4o-mini", le="2.0") == 1
        assert sample(body, "stanchion_stage_seconds_count", stage="verify") == 1
        assert sample(body, "stanchion_stage_seconds_bucket", stage="retrieve", le="0.025") == 1
        assert sample(body, "stanchion_ingest_jobs_total", status="failed") == 1
        assert sample(body, "stanchion_rate_limited_total", limit="tokens") == 1

    def test_instances_are_independent(self, single: Metrics) -> None:
        """Each Metrics has a private registry: two in one process (tests) never collide."""
        other = Metrics()
        single.error("bad_request")
        assert b"bad_request" not in other.render()[0]


WORKER = textwrap.dedent(
    """
    from stanchion.server.metrics import Metrics

    m = Metrics()
    for _ in range(3):
        m.observe_request("/v1/search", "POST", 200, 0.2)
    m.tokens("local", "acme", input=10, output=5, cost_usd=0.5)
    m.stage("retrieve", 0.004)
    """
)


class TestMultiprocess:
    def test_render_sums_worker_processes(self, multiproc_dir: Path) -> None:
        """Two worker processes write; one render in a third shows the sum."""
        env = {**os.environ, MULTIPROC_ENV: str(multiproc_dir)}
        workers = [subprocess.Popen([sys.executable, "-c", WORKER], env=env) for _ in range(2)]
        assert [w.wait(timeout=60) for w in workers] == [0, 0]

        scraper = Metrics()
        scraper.observe_request("/v1/search", "POST", 200, 0.3)
        body, _ = scraper.render(tenants=True)
        labels = {"route": "/v1/search", "method": "POST"}
        assert sample(body, "stanchion_http_requests_total", status="200", **labels) == 7
        assert sample(body, "stanchion_http_request_seconds_count", **labels) == 7
        assert sample(body, "stanchion_http_request_seconds_bucket", le="0.25", **labels) == 6
        assert sample(body, "stanchion_tokens_total", direction="in", model="local", tenant="acme") == 20
        assert sample(body, "stanchion_cost_usd_total", model="local", tenant="acme") == pytest.approx(1.0)
        assert sample(body, "stanchion_stage_seconds_count", stage="retrieve") == 2

    def test_prepare_multiprocess_dir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """It exports the directory and removes stale value files, and only those."""
        monkeypatch.setenv(MULTIPROC_ENV, "")  # restored (unset) after the test
        directory = tmp_path / "prom"
        directory.mkdir()
        (directory / "counter_123.db").write_bytes(b"stale")
        (directory / "keep.txt").write_text("not ours")
        assert prepare_multiprocess_dir(directory) == directory
        assert os.environ[MULTIPROC_ENV] == str(directory)
        assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]

        fresh = prepare_multiprocess_dir()
        assert fresh.is_dir() and os.environ[MULTIPROC_ENV] == str(fresh)
        fresh.rmdir()

    def test_mark_process_dead(self, multiproc_dir: Path) -> None:
        """Passing a dead worker's pid is accepted, and a no-op without multiprocess mode."""
        mark_process_dead(999_999)
        os.environ.pop(MULTIPROC_ENV)
        mark_process_dead(999_999)


class TestRouteTemplate:
    def test_matched_route(self) -> None:
        """The template, not the raw path, labels a request."""

        async def endpoint() -> None:  # pragma: no cover - never called
            return None

        route = Route(DOC_ROUTE, endpoint)
        scope = {"type": "http", "path": "/v1/documents/abc123", "route": route}
        assert route_template(scope) == DOC_ROUTE

    def test_unmatched(self) -> None:
        assert route_template({"type": "http", "path": "/nope"}) == UNMATCHED_ROUTE


def test_event_loop_lag_is_measured(single: Metrics) -> None:
    """A call that blocks the loop shows up as lag of about its length."""

    async def run() -> None:
        watcher = asyncio.create_task(single.watch_event_loop(interval_s=0.01))
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # a blocking call on the loop
        await asyncio.sleep(0.05)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    asyncio.run(run())
    body, _ = single.render()
    count = sample(body, "stanchion_event_loop_lag_seconds_count")
    assert count >= 3
    assert sample(body, "stanchion_event_loop_lag_seconds_bucket", le="0.1") == count - 1  # one stall
