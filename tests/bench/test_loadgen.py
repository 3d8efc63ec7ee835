"""The load generator and the fake upstream it is measured against, over real loopback sockets."""

from __future__ import annotations

import itertools
import json
import math
import resource
import socket
import time
from typing import Any

import httpx
import pytest

from stanchion.bench.loadgen import LoadConfig, LoadResult, Percentiles, raise_fd_limit, run_load
from stanchion.bench.upstream import UpstreamServer
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply

# Small timings keep the suite fast: 50 ms to the first token, then 10 ms per token. The upstream
# waits at least that long, so timings are checked only from below: how much longer a busy machine
# takes is not the code's behaviour (no wall-clock upper bounds in tests).
TTFT_S = 0.05
TOKENS_PER_S = 100.0
TOKENS = 5
ANSWER_S = TTFT_S + (TOKENS - 1) / TOKENS_PER_S


def chat(stream: bool, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "two words"}],
        "stream": stream,
        **extra,
    }


def sse_events(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


@pytest.fixture(scope="module")
def upstream() -> Any:
    with UpstreamServer(ttft_s=TTFT_S, tokens_per_s=TOKENS_PER_S, tokens=TOKENS) as up:
        yield up


class TestUpstream:
    def test_stream_timing_and_chunks(self, upstream: UpstreamServer) -> None:
        """The first content arrives after ttft_s, the rest at tokens_per_s, in OpenAI's chunk format."""
        body = chat(True, stream_options={"include_usage": True})
        start = time.perf_counter()
        first: float | None = None
        lines: list[str] = []
        with httpx.stream("POST", f"{upstream.url}/chat/completions", json=body) as response:
            assert response.headers["content-type"] == "text/event-stream"
            for line in response.iter_lines():
                if first is None and '"content":"' in line and '"content":""' not in line:
                    first = time.perf_counter() - start
                lines.append(line)
        total = time.perf_counter() - start
        assert first is not None and TTFT_S * 0.9 <= first <= total
        assert total >= ANSWER_S * 0.9
        events = sse_events(lines)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
        assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == TOKENS
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"] == {
            "prompt_tokens": 2,
            "completion_tokens": TOKENS,
            "total_tokens": 2 + TOKENS,
        }

    def test_stream_without_usage_option_has_no_usage_chunk(self, upstream: UpstreamServer) -> None:
        """The usage chunk is sent only when stream_options.include_usage asks for it."""
        with httpx.stream("POST", f"{upstream.url}/chat/completions", json=chat(True)) as response:
            events = sse_events(list(response.iter_lines()))
        assert all("usage" not in json.loads(e) for e in events[:-1])

    def test_plain_answer_waits_for_the_last_token(self, upstream: UpstreamServer) -> None:
        """A non-streamed answer comes when its last token would have, with a usage object."""
        start = time.perf_counter()
        response = httpx.post(f"{upstream.url}/chat/completions", json=chat(False, max_tokens=3))
        elapsed = time.perf_counter() - start
        answer = response.json()
        assert response.status_code == 200 and answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["content"] == "Stanchion serves answers"
        assert answer["usage"]["completion_tokens"] == 3
        assert elapsed >= TTFT_S + 2 / TOKENS_PER_S - 0.005

    def test_models_and_unknown_paths(self, upstream: UpstreamServer) -> None:
        """GET /v1/models lists the model; unknown paths are 404 with an OpenAI error object."""
        assert httpx.get(f"{upstream.url}/models").json()["data"][0]["id"] == "fake-model"
        missing = httpx.get(f"{upstream.url}/nothing")
        assert missing.status_code == 404 and "error" in missing.json()

    def test_thread_mode(self) -> None:
        """mode="thread" serves the same API from a background thread."""
        with UpstreamServer(ttft_s=0.0, tokens=2, mode="thread") as up:
            answer = httpx.post(f"{up.url}/chat/completions", json=chat(False)).json()
        assert answer["usage"]["completion_tokens"] == 2


def check_plausible(result: LoadResult, users: int, duration_s: float) -> None:
    expected = users * duration_s / ANSWER_S  # the most a user can finish in the time
    assert 1 <= result.requests <= 1.1 * expected
    assert result.errors == 0 and result.error_kinds == {}
    assert result.rps == pytest.approx(result.requests / result.duration_s)
    lat = result.latency_ms
    assert lat.p50 <= lat.p95 <= lat.p99
    assert lat.p50 >= ANSWER_S * 1000 * 0.95


class TestLoadGenerator:
    def test_streaming_load(self, upstream: UpstreamServer) -> None:
        """20 streaming users for 1 s: about users x duration / answer time requests, TTFT before the end."""
        result = run_load(LoadConfig(url=upstream.url, users=20, duration_s=1.0, warmup_s=0.2))
        check_plausible(result, 20, 1.0)
        assert result.ttft_ms is not None
        assert result.ttft_ms.p50 <= result.ttft_ms.p95 <= result.ttft_ms.p99
        assert TTFT_S * 1000 * 0.95 <= result.ttft_ms.p50 <= result.latency_ms.p50
        assert 0 <= result.client_cpu_pct < 100

    def test_plain_load(self, upstream: UpstreamServer) -> None:
        """Without streaming there is no TTFT; latency is the whole answer."""
        result = run_load(LoadConfig(url=upstream.url, users=10, duration_s=0.5, stream=False))
        check_plausible(result, 10, 0.5)
        assert result.ttft_ms is None
        assert result.to_dict()["ttft_ms"] is None

    def test_error_statuses_and_resets_are_counted(self) -> None:
        """HTTP 500s and connections reset before or during an answer count as errors, by kind."""
        kinds = itertools.cycle(
            [
                Reply(text="fine answer"),
                Reply(status=500),
                Reply(reset=True),
                Reply(text="a b c d", die_after_tokens=2),
            ]
        )
        with FakeOpenAIServer(lambda _body: next(kinds)) as server:
            result = run_load(LoadConfig(url=server.url, users=4, duration_s=0.5))
        assert result.requests > 8
        assert set(result.error_kinds) == {"http_500", "reset"}
        assert result.errors == sum(result.error_kinds.values())
        assert result.error_kinds["reset"] > result.error_kinds["http_500"]  # two kinds of reset per cycle
        assert result.errors < result.requests  # the good ones still counted, with latencies
        assert not math.isnan(result.latency_ms.p50)

    def test_timeouts_are_counted(self) -> None:
        """An answer slower than timeout_s is a "timeout" error and the connection is dropped."""
        with FakeOpenAIServer(default=Reply(text="late", delay_s=1.0)) as server:
            result = run_load(LoadConfig(url=server.url, users=2, duration_s=0.5, timeout_s=0.1))
        assert result.requests >= 2 and result.error_kinds.keys() == {"timeout"}
        assert result.to_dict()["latency_ms"] == {"p50": None, "p95": None, "p99": None}

    def test_refused_connections_are_counted(self) -> None:
        """Nothing listening: every attempt is "connect_refused", paced so the client does not spin."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # bound, never listening: connections are refused
            result = run_load(LoadConfig(url=f"http://127.0.0.1:{port}/v1", users=2, duration_s=0.3))
        assert result.error_kinds.keys() == {"connect_refused"}
        assert 2 <= result.errors <= 2 * 0.3 / 0.01 + 2

    def test_rejects_non_http_urls(self) -> None:
        with pytest.raises(ValueError, match="http://"):
            run_load(LoadConfig(url="https://example.invalid/v1", users=1, duration_s=0.1))


class TestHelpers:
    def test_percentiles_interpolate_like_numpy(self) -> None:
        """Linear interpolation between ranks, in milliseconds; no samples give None in to_dict."""
        p = Percentiles.of([0.001 * i for i in range(1, 101)])
        assert (p.p50, p.p95, p.p99) == pytest.approx((50.5, 95.05, 99.01))
        assert Percentiles.of([]).to_dict() == {"p50": None, "p95": None, "p99": None}

    def test_raise_fd_limit_keeps_a_sufficient_limit(self) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert raise_fd_limit(16) == soft


class TestCli:
    def test_load_json(self, upstream: UpstreamServer) -> None:
        """`bench load --json` prints one JSON object with the figures; exit 0 without errors."""
        from typer.testing import CliRunner

        from stanchion.cli.bench import bench_app

        args = ["load", "--url", upstream.url, "--users", "5", "--duration", "0.3", "--warmup", "0", "--json"]
        result = CliRunner().invoke(bench_app, args)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["users"] == 5 and report["errors"] == 0 and report["requests"] > 0
        assert set(report["latency_ms"]) == {"p50", "p95", "p99"}

    def test_load_table_and_exit_1_on_errors(self) -> None:
        """Failed requests still print the table, and the exit code says some failed."""
        from typer.testing import CliRunner

        from stanchion.cli.bench import bench_app

        with FakeOpenAIServer(default=Reply(status=500)) as server:
            args = ["load", "--url", server.url, "--users", "2", "--duration", "0.2", "--warmup", "0"]
            result = CliRunner().invoke(bench_app, args)
        assert result.exit_code == 1
        assert "http_500" in result.stdout
