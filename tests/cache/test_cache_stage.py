"""The cache stages and keys on their own: what makes two requests share an entry, what is never
stored, and ``stanchion cache stats|clear``. Through the server: tests/server/test_response_cache.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stanchion.cache.keys import CacheRequest, gateway_request, grounded_request, normalise
from stanchion.cache.sqlite_backend import SQLiteCacheBackend
from stanchion.cli import app as cli
from stanchion.core.embed import RecentQueries, SentenceTransformerEmbedder
from stanchion.core.filters import SearchFilter, caller_filter
from stanchion.pipeline import Call, Pipeline, RequestContext
from stanchion.pipeline.cache_stage import ResponseCache
from stanchion.spec import CacheSpec
from stanchion.types import Message, ToolCall, Usage

SETTINGS = CacheSpec(semantic=True)  # a gateway route's semantic tier is opt-in


def _gateway(text: str, *, user: str = "u1", tenant: str = "acme", **params: object) -> CacheRequest:
    return gateway_request(
        config="",
        route="gw", settings=SETTINGS, tenant=tenant, user=user,
        messages=[Message("user", text)], params={"temperature": None, **params},
    )  # fmt: skip


class TestKeys:
    def test_a_changed_route_or_model_setting_is_another_partition(self) -> None:
        """After a deploy that changes a route's model or its settings, the old answers are not
        served: the route's configuration is part of every key."""
        from stanchion.cache.keys import route_config
        from stanchion.spec import parse_spec

        raw = {"models": {"up": {"provider": "openai", "model": "m1", "base_url": "http://127.0.0.1:9/v1"}},
               "routes": {"gw": {"models": ["up"], "grounded": False, "cache": {}},
                          "default": {"models": ["up"]}}}  # fmt: skip
        base = route_config(parse_spec(raw), "gw")
        assert route_config(parse_spec(raw), "gw") == base
        raw["models"]["up"]["model"] = "m2"
        assert route_config(parse_spec(raw), "gw") != base
        raw["models"]["up"]["model"] = "m1"
        raw["routes"]["gw"]["cache"] = {"ttl_s": 60}  # the cache's own settings are not the answer's
        assert route_config(parse_spec(raw), "gw") == base
        raw["answer"] = {"k": 3}  # the answer settings matter to grounded routes only
        assert route_config(parse_spec(raw), "gw") == base
        assert route_config(parse_spec(raw), "default") != route_config(
            parse_spec({**raw, "answer": {}}), "default"
        )

    def test_whitespace_and_unicode_forms_are_one_request(self) -> None:
        assert normalise("  How   do I\u00a0reset\nit? ") == "How do I reset it?"
        assert _gateway("How do I  reset it?").exact_key == _gateway("How do I reset it?").exact_key

    def test_case_numbers_and_parameters_are_not(self) -> None:
        base = _gateway("Refund within 30 days?")
        for other in (_gateway("Refund within 60 days?"), _gateway("refund within 30 days?"),
                      _gateway("Refund within 30 days?", temperature=0.7)):  # fmt: skip
            assert other.exact_key != base.exact_key

    def test_a_user_scope_puts_the_user_in_the_partition_a_tenant_scope_does_not(self) -> None:
        assert _gateway("hi", user="a").partition == _gateway("hi", user="b").partition
        scoped = CacheSpec(scope="user")
        a, b = (
            gateway_request(
                config="",
                route="gw",
                settings=scoped,
                tenant="t",
                user=u,
                messages=[Message("user", "hi")],
                params={},
            )
            for u in ("a", "b")
        )
        assert a.partition != b.partition

    def test_groups_are_no_part_of_a_grounded_key(self) -> None:
        """Who may read an entry is checked against the index at lookup, never copied into keys."""

        def key(groups: frozenset[str]) -> tuple[str, str]:
            where = caller_filter(RequestContext("acme", "u", groups))
            r = grounded_request(config="", route="default", settings=SETTINGS, tenant="acme", user="u",
                                 question="What is the budget?", history=[], params={"k": None}, where=where)  # fmt: skip
            return r.partition, r.exact_key

        assert key(frozenset({"finance"})) == key(frozenset({"ops"}))

    def test_only_a_plain_last_user_message_is_compared_by_meaning(self) -> None:
        assert _gateway("What is the weather?").question == "What is the weather?"
        assert _gateway("What is the weather?", tools=[["weather", "", {}]]).question == ""
        call = ToolCall("c1", "weather", {"city": "Paris"})
        after_tool = gateway_request(
            config="",
            route="gw", settings=SETTINGS, tenant="t", user="u", params={},
            messages=[Message("user", "Weather?"), Message("assistant", "", tool_calls=(call,)),
                      Message("tool", "22 C", tool_call_id="c1")],
        )  # fmt: skip
        assert after_tool.question == ""


@pytest.fixture
def stage(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> ResponseCache:
    backend = SQLiteCacheBackend(tmp_path / "cache.db")
    return ResponseCache(backend, RecentQueries(embedder), lambda ids: [], background=False)


def _answered(stage: ResponseCache, text: str) -> Call:
    """A gateway call that missed and was answered ``"fresh"``, closed through the stages."""
    call = Call(RequestContext("acme", "u1", None), "chat.completions")
    call.cache = _gateway(text)

    async def generate(c: Call) -> None:
        c.outcome.text, c.outcome.usage = "fresh", Usage(10, 2)

    pipeline = Pipeline([("cache_lookup", stage.lookup), ("cache_store", stage.store)])
    asyncio.run(pipeline.run(call, generate=generate))
    return call


class TestWhatIsStored:
    def test_an_answer_is_stored_and_served_to_the_same_request(self, stage: ResponseCache) -> None:
        first = _answered(stage, "How do I reset my password?")
        assert first.cache_result is not None and first.cache_result.status == "miss"
        second = _answered(stage, "How do I reset my password?")
        assert second.served and second.cache_result is not None and second.cache_result.tier == "exact"
        assert second.outcome.text == "fresh" and second.cache_result.tokens_saved == 12

    def test_values_restored_from_masked_pii_are_never_stored(self, stage: ResponseCache) -> None:
        call = Call(RequestContext("acme", "u1", None), "chat.completions")
        call.cache = _gateway("Email Jane at jane@example.com")

        async def generate(c: Call) -> None:
            c.outcome.text = "Sent to jane@example.com"
            c.pii_restored = True

        pipeline = Pipeline([("cache_lookup", stage.lookup), ("cache_store", stage.store)])
        asyncio.run(pipeline.run(call, generate=generate))
        stats = asyncio.run(stage.backend.stats("acme"))
        assert stats.entries.get("acme", 0) == 0
        again = _answered(stage, "Email Jane at jane@example.com")
        assert not again.served

    def test_a_bypass_skips_the_lookup_but_refreshes_the_entry(self, stage: ResponseCache) -> None:
        _answered(stage, "Status?")
        call = Call(RequestContext("acme", "u1", None), "chat.completions")
        call.cache = gateway_request(config="", route="gw", settings=SETTINGS, tenant="acme", user="u1",
                                     messages=[Message("user", "Status?")], params={"temperature": None},
                                     bypass=True)  # fmt: skip

        async def generate(c: Call) -> None:
            c.outcome.text = "newer"

        asyncio.run(
            Pipeline([("cache_lookup", stage.lookup), ("cache_store", stage.store)]).run(
                call, generate=generate
            )
        )
        assert call.cache_result is not None and call.cache_result.status == "bypass" and not call.served
        assert _answered(stage, "Status?").outcome.text == "newer"

    def test_a_near_miss_is_counted_with_its_reason(self, stage: ResponseCache) -> None:
        _answered(stage, "How do I enable single sign-on?")
        near = _answered(stage, "How do I disable single sign-on?")
        assert not near.served and near.cache_result is not None
        assert near.cache_result.near_misses == ("negation",)
        asyncio.run(stage.drain())
        counters = asyncio.run(stage.backend.stats("acme")).counters["acme"]
        assert counters["near_miss"] == 1 and counters["miss"] == 2


def test_grounded_entries_without_sources_are_never_served(stage: ResponseCache) -> None:
    """An entry of a grounded route must name the chunks behind it; one that names none (nothing
    can invalidate it) is refused and dropped."""
    from stanchion.cache.entry import CacheEntry

    request = grounded_request(config="", route="default", settings=SETTINGS, tenant="acme", user="u",
                               question="What is the budget?", history=[], params={}, where=SearchFilter())  # fmt: skip
    entry = CacheEntry("e1", "acme", request.partition, request.exact_key, request.question,
                       {"text": "4.2 million"}, created=0.0, expires=4e9)  # fmt: skip
    asyncio.run(stage.backend.put(entry, max_entries=10))
    call = Call(RequestContext("acme", "u", None), "answer")
    call.cache = request
    asyncio.run(stage.lookup(call))
    assert not call.served and call.cache_result is not None and call.cache_result.stale == 1


def test_cache_stats_and_clear_on_the_command_line(tmp_path: Path, stage: ResponseCache) -> None:
    spec = tmp_path / "stanchion.yaml"
    spec.write_text(
        f"server: {{state_path: {tmp_path / 'state.db'}}}\n"
        "routes: {default: {models: [extractive], cache: {}}}\n"
    )
    backend = SQLiteCacheBackend(tmp_path / "state.cache.db")
    cache = ResponseCache(backend, stage.embedder, lambda ids: [], background=False)
    for text in ("one?", "two?", "one?"):
        _answered(cache, text)
    asyncio.run(cache.drain())
    backend.close()
    runner = CliRunner()
    shown = runner.invoke(cli, ["cache", "stats", "--spec", str(spec), "--json"])
    assert shown.exit_code == 0, shown.output
    stats = json.loads(shown.output)
    assert stats["backend"] == "sqlite"
    acme = stats["tenants"]["acme"]
    assert acme["entries"] == 2 and acme["counters"]["hit_exact"] == 1 and acme["counters"]["miss"] == 2
    assert acme["hit_rate"] == pytest.approx(1 / 3)
    table = runner.invoke(cli, ["cache", "stats", "--spec", str(spec)])
    assert table.exit_code == 0 and "acme" in table.output
    cleared = runner.invoke(cli, ["cache", "clear", "--tenant", "acme", "--spec", str(spec), "--json"])
    assert cleared.exit_code == 0 and json.loads(cleared.output) == {"removed": 2, "tenant": "acme"}
    after = json.loads(runner.invoke(cli, ["cache", "stats", "--spec", str(spec), "--json"]).output)
    assert after["tenants"].get("acme", {"entries": 0})["entries"] == 0


def test_any_tenant_name_an_api_key_may_carry_is_cached_apart(stage: ResponseCache) -> None:
    """Key tenants are free text; the backends take plain names only, so others are hashed."""
    names = ("Acme Corp.", "acme:corp", "acme")
    requests = [_gateway("Where is the office?", tenant=name) for name in names]
    assert len({r.tenant for r in requests}) == 3 and requests[2].tenant == "acme"
    for request in requests:
        call = Call(RequestContext("x", "u1", None), "chat.completions")
        call.cache = request

        async def generate(c: Call) -> None:
            c.outcome.text = "fresh"

        pipeline = Pipeline([("cache_lookup", stage.lookup), ("cache_store", stage.store)])
        asyncio.run(pipeline.run(call, generate=generate))
        assert call.cache_result is not None and call.cache_result.status == "miss"  # no name sees another's


def test_a_failing_backend_never_fails_the_request(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(SQLiteCacheBackend):
        async def get_exact(self, tenant: str, partition: str, exact_key: str) -> None:
            raise ValueError("a bug in a backend")

    stage = ResponseCache(
        Broken(tmp_path / "c.db"), RecentQueries(embedder), lambda ids: [], background=False
    )
    with caplog.at_level("WARNING", logger="stanchion.cache"):
        call = _answered(stage, "Hello?")
    assert call.outcome.text == "fresh" and call.cache_result is not None
    assert call.cache_result.status == "unavailable"
    assert any(r.exc_info for r in caplog.records)  # a bug is logged with its traceback
