"""The response cache in the benchmarks: ``bench gateway --cache`` (the spec it writes, prompts of
their own per request) and the question stream that ``bench/cache_replay.py`` replays."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from stanchion.bench import gateway
from stanchion.bench.loadgen import LoadConfig, _target, run_load, unique_prompt
from stanchion.cache.match import PairMatcher
from stanchion.cli.bench import bench_app
from stanchion.spec import load_spec
from stanchion.testing.fake_openai import FakeOpenAIServer, Reply

REPLAY = Path(__file__).resolve().parents[2] / "bench" / "cache_replay.py"


def _spec_route(tmp_path: Path, cache: gateway.CacheMode) -> Any:
    path = gateway._write_spec(tmp_path, "http://127.0.0.1:9/v1", "fake-model", 8080, 1, None, None, cache)
    return load_spec(path).routes["passthrough"]


class TestGatewayCacheOption:
    def test_the_spec_puts_the_chosen_tiers_on_the_route(self, tmp_path: Path) -> None:
        """off: no cache; exact: the exact tier alone; semantic: both tiers (a valid spec each time)."""
        assert _spec_route(tmp_path, "off").cache is None
        exact = _spec_route(tmp_path, "exact").cache
        assert exact is not None and exact.exact and not exact.semantic
        both = _spec_route(tmp_path, "semantic").cache
        assert both is not None and both.exact and both.semantic

    def test_unique_prompts_differ_per_request(self) -> None:
        """Each request carries a prompt of its own; without the option every request is the same."""
        config = LoadConfig(url="http://127.0.0.1:9/v1", unique_prompts=True)
        target = _target(config)
        requests = [target.next_request() for _ in range(3)]
        assert len(set(requests)) == 3
        assert all(b'"content": "Ticket 1000' in r for r in requests)
        same = _target(LoadConfig(url="http://127.0.0.1:9/v1"))
        assert same.next_request() == same.next_request()

    def test_the_upstream_receives_a_new_prompt_each_time(self) -> None:
        with FakeOpenAIServer(default=Reply(text="ok")) as server:
            config = LoadConfig(url=server.url, users=2, duration_s=0.3, stream=False, unique_prompts=True)
            result = run_load(config)
            prompts = [r.json["messages"][-1]["content"] for r in server.requests]
        assert result.errors == 0 and len(prompts) >= 4
        assert len(set(prompts)) == len(prompts)

    def test_unique_prompts_are_near_misses_to_the_semantic_tier(self) -> None:
        """The bench claims every request misses: the matcher refuses each prompt for any other,
        even at a cosine of 0.99 (the default prompt says "two": no ticket is numbered 2)."""
        matcher = PairMatcher()
        prompt = LoadConfig(url="http://x").prompt
        asked = [unique_prompt(prompt, n) for n in range(12)]
        for a in asked:
            for b in asked:
                if a != b:
                    assert not matcher.judge(a, b, 0.99).hit, (a, b)

    def test_the_cli_passes_the_cache_mode(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[dict[str, Any]] = []

        def fake_bench(*args: Any, **kwargs: Any) -> dict[str, Any]:
            seen.append(kwargs)
            return {"errors": 0, "direct": {"errors": 0}, "cache": kwargs["cache"]}

        monkeypatch.setattr(gateway, "run_gateway_bench", fake_bench)
        runner = CliRunner()
        result = runner.invoke(bench_app, ["gateway", "--cache", "semantic", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["cache"] == "semantic"
        assert seen[-1]["cache"] == "semantic" and seen[-1]["unique_prompts"] is None
        result = runner.invoke(bench_app, ["gateway", "--cache", "exact", "--same-prompt", "--json"])
        assert result.exit_code == 0 and seen[-1]["unique_prompts"] is False

    def test_an_unknown_cache_mode_is_a_usage_error(self) -> None:
        result = CliRunner().invoke(bench_app, ["gateway", "--cache", "fuzzy"])
        assert result.exit_code == 2
        assert "--cache must be one of off, exact, semantic" in result.stderr


@pytest.fixture(scope="module")
def replay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cache_replay", REPLAY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cache_replay"] = module
    spec.loader.exec_module(module)
    return module


class TestReplayStream:
    def test_the_question_file_has_families_paraphrases_and_near_misses(self, replay: ModuleType) -> None:
        families = replay.load_families()
        assert len(families) >= 150
        assert sum(1 for f in families if f.paraphrase) >= 100
        assert sum(1 for f in families if f.near_miss) >= 40

    def test_reused_questions_come_from_far_enough_back(self, replay: ModuleType) -> None:
        """A repeat, paraphrase or near-miss refers to a question asked at least ``gap`` before;
        a near-miss is a family of its own, a paraphrase shares its question's."""
        families = replay.load_families()
        stream = replay.build_stream(families, 360, seed=3, gap=12)
        first_seen: dict[str, int] = {}
        for position, ask in enumerate(stream):
            if ask.kind == "new":
                assert ask.family not in first_seen
                first_seen[ask.family] = position
            elif ask.kind == "repeat":
                assert any(a.text == ask.text for a in stream[: position - 11])
            else:
                base = f"Q{ask.family[1:]}"
                assert position - first_seen[base] >= 12
                assert ask.family == (base if ask.kind == "paraphrase" else f"N{ask.family[1:]}")
        kinds = Counter(a.kind for a in stream)
        assert kinds["repeat"] > 70 and kinds["paraphrase"] > 40 and kinds["near_miss"] > 10

    def test_answers_name_their_family(self, replay: ModuleType) -> None:
        upstream = replay.Upstream(replay.load_families())
        family = replay.load_families()[5]
        body = {"messages": [{"role": "user", "content": family.paraphrase}]}
        reply = upstream.reply(body)
        assert replay.answer_family(reply.text) == f"Q{family.id}"
        assert reply.usage == (len(family.paraphrase.split()), replay.ANSWER_WORDS)
