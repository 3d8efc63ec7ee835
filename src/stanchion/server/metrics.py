"""Prometheus metrics that stay correct under several uvicorn worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``prepare_multiprocess_dir`` does it before the workers
fork), every process writes its values to memory-mapped files in that directory and ``render``
merges the files of all processes, live and exited, so a scrape answered by any worker sees the
whole server. Without it, the metrics live in a private ``CollectorRegistry``.

Create one ``Metrics`` per process: two in one process in multiprocess mode would overwrite each
other's values in the shared per-process file.

Labels are bounded on purpose: ``route`` is the path template (``/v1/documents/{document_id}``,
see ``route_template``), never the raw path; ``tenant`` and ``model`` come from the spec.
Series labelled by tenant (tokens, cost) are rendered summed over tenants unless the scraper holds
the metrics token (``render(tenants=True)``): tenant names and usage are not public.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from stanchion.cache.result import CacheResult

__all__ = [
    "MULTIPROC_ENV",
    "UNMATCHED_ROUTE",
    "Metrics",
    "mark_process_dead",
    "prepare_multiprocess_dir",
    "route_template",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"  # the route label of requests no route matched (404s)
TENANT_LABEL = "tenant"  # series with it are shown only to holders of the metrics token

# HTTP requests include streamed answers that last minutes; pipeline stages range from a
# millisecond (BM25) to a minute (generation).
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_UPSTREAM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LAG_INTERVAL_S = 0.1
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# One value class per directory: prometheus_client keeps each process's open files in it.
_multiprocess_values: dict[str, Any] = {}


class Metrics:
    """The server's metrics; mode (multiprocess or private registry) is read from the environment."""

    def __init__(self) -> None:
        self.multiprocess_dir = _select_value_class()
        # In multiprocess mode the metrics belong to no registry: values go to the shared files and
        # render() reads them back; a private registry otherwise, so tests never collide.
        self._registry = None if self.multiprocess_dir else CollectorRegistry()
        registry = self._registry
        self._requests = Counter(
            "stanchion_http_requests",
            "HTTP requests answered.",
            ["route", "method", "status"],
            registry=registry,
        )
        self._request_seconds = Histogram(
            "stanchion_http_request_seconds",
            "Time to answer an HTTP request (streams: until the last byte).",
            ["route", "method"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self._tokens = Counter(
            "stanchion_tokens", "Model tokens.", ["model", "direction", "tenant"], registry=registry
        )
        self._cost = Counter(
            "stanchion_cost_usd",
            "Estimated model cost in US dollars.",
            ["model", "tenant"],
            registry=registry,
        )
        self._errors = Counter(
            "stanchion_errors", "Errors answered, by error code.", ["code"], registry=registry
        )
        self._charge_failures = Counter(
            "stanchion_token_charge_failures",
            "Token charges the rate limiter could not take (its backend failed).",
            registry=registry,
        )
        self._uncharged_tokens = Counter(
            "stanchion_uncharged_tokens",
            "Tokens used but not charged to an API key because the rate limiter failed.",
            registry=registry,
        )
        self._cache_lookups = Counter(
            "stanchion_cache_lookups",
            "Response cache lookups by result: hit-exact, hit-semantic, miss, bypass, unavailable.",
            ["route", "result", "tenant"],
            registry=registry,
        )
        self._cache_near_misses = Counter(
            "stanchion_cache_near_misses",
            "Similar cached questions the near-miss check refused, by reason (negation, number, ...).",
            ["route", "reason"],
            registry=registry,
        )
        self._cache_stale = Counter(
            "stanchion_cache_stale",
            "Cached answers refused because a chunk behind them changed or was deleted.",
            ["route"],
            registry=registry,
        )
        self._cache_tokens_saved = Counter(
            "stanchion_cache_tokens_saved",
            "Model tokens (prompt + completion) the cached answers served would have cost.",
            ["route", "tenant"],
            registry=registry,
        )
        self._cache_cost_saved = Counter(
            "stanchion_cache_cost_saved_usd",
            "Model cost in US dollars the cached answers served saved.",
            ["route", "tenant"],
            registry=registry,
        )
        self._upstream = Histogram(
            "stanchion_upstream_seconds",
            "Time of one call to a model provider.",
            ["model"],
            buckets=_UPSTREAM_BUCKETS,
            registry=registry,
        )
        self._stages = Histogram(
            "stanchion_stage_seconds",
            "Time of one pipeline stage (retrieve, rerank, generate, verify).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=registry,
        )
        self._jobs = Counter(
            "stanchion_ingest_jobs", "Ingest jobs finished, by status.", ["status"], registry=registry
        )
        self._rate_limited = Counter(
            "stanchion_rate_limited", "Requests refused by a rate limit.", ["limit"], registry=registry
        )
        self._loop_lag = Histogram(
            "stanchion_event_loop_lag_seconds",
            "How late a worker's event loop ran a timer: garbage-collector pauses, blocking calls, "
            "CPU saturation. Every request on that worker waited as long.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request; ``route`` is the path template, never the raw path."""
        self._requests.labels(route, method, str(status)).inc()
        self._request_seconds.labels(route, method).observe(seconds)

    def tokens(self, model: str, tenant: str, input: int, output: int, cost_usd: float) -> None:
        self._tokens.labels(model, "in", tenant).inc(input)
        self._tokens.labels(model, "out", tenant).inc(output)
        self._cost.labels(model, tenant).inc(cost_usd)

    def cache(self, route: str, tenant: str, result: CacheResult) -> None:
        self._cache_lookups.labels(route, result.header, tenant).inc()
        for reason in result.near_misses:
            self._cache_near_misses.labels(route, reason).inc()
        if result.stale:
            self._cache_stale.labels(route).inc(result.stale)
        if result.status == "hit":
            self._cache_tokens_saved.labels(route, tenant).inc(result.tokens_saved)
            self._cache_cost_saved.labels(route, tenant).inc(result.cost_saved_usd)

    def error(self, code: str) -> None:
        self._errors.labels(code).inc()

    def token_charge_failed(self, tokens: int) -> None:
        """A charge of ``tokens`` the rate limiter could not take (the request was answered)."""
        self._charge_failures.inc()
        self._uncharged_tokens.inc(tokens)

    def upstream(self, model: str, seconds: float) -> None:
        self._upstream.labels(model).observe(seconds)

    def stage(self, name: str, seconds: float) -> None:
        self._stages.labels(name).observe(seconds)

    def job(self, status: str) -> None:
        self._jobs.labels(status).inc()

    def rate_limited(self, limit: str) -> None:
        self._rate_limited.labels(limit).inc()

    def loop_lag(self, seconds: float) -> None:
        self._loop_lag.observe(seconds)

    async def watch_event_loop(self, interval_s: float = LAG_INTERVAL_S) -> None:
        """Until cancelled: sleep ``interval_s`` and record how much later than asked it woke.

        Stalls of the loop are what made the gateway's p99 at 1,000 users (server/heap.py);
        ten timer wake-ups a second cost nothing measurable."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            self.loop_lag(max(0.0, loop.time() - asked))

    def render(self, *, tenants: bool = False) -> tuple[bytes, str]:
        """The exposition body and its content type; in multiprocess mode, summed over processes.

        Without ``tenants``, series labelled by tenant are summed over tenants (the label is
        dropped): who the tenants are and what each used is for holders of the metrics token."""
        source = self._registry
        if source is None:
            source = CollectorRegistry()
            multiprocess.MultiProcessCollector(source, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        if tenants:
            return generate_latest(source), CONTENT_TYPE_LATEST
        public = CollectorRegistry()
        public.register(_WithoutTenants(source))
        return generate_latest(public), CONTENT_TYPE_LATEST


class _WithoutTenants(Collector):
    """The families of ``source``, those with a ``tenant`` label summed over it."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            if any(TENANT_LABEL in sample.labels for sample in family.samples):
                sums: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue  # a creation time does not add up
                    labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != TENANT_LABEL))
                    sums[sample.name, labels] = sums.get((sample.name, labels), 0.0) + sample.value
                family.samples = [Sample(name, dict(labels), value) for (name, labels), value in sums.items()]
            yield family


def _select_value_class() -> str | None:
    """Point prometheus_client at the storage the environment asks for; returns the directory.

    prometheus_client chooses between in-memory and file-backed values once, when it is imported,
    and the serve command may import it before it sets the variable; so choose again here, before
    our metrics are created.
    """
    directory = os.environ.get(MULTIPROC_ENV) or None
    if directory is None:
        values.ValueClass = values.MutexValue
        return None
    if directory not in _multiprocess_values:
        _multiprocess_values[directory] = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    values.ValueClass = _multiprocess_values[directory]
    return directory


def prepare_multiprocess_dir(path: Path | None = None) -> Path:
    """Create (or empty) the directory of multiprocess metrics and export it for the workers.

    Call it in the parent before the workers start; stale ``*.db`` files from a previous run would
    otherwise be summed in. Without ``path`` a fresh temporary directory is made; removing it at
    exit is the caller's job.
    """
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="stanchion-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    # Only prometheus_client's own files: the directory may have been given by mistake.
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def mark_process_dead(pid: int) -> None:
    """Tell prometheus_client a worker exited (uvicorn's worker-exit hook); no-op in one process."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's path template from an ASGI scope, or UNMATCHED_ROUTE.

    Starlette's router stores the matched route in ``scope["route"]``; read it after the app ran.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED_ROUTE
