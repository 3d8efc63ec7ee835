"""Keyword analysis and filter parsing."""

from __future__ import annotations

import pytest

from stanchion.core.analyze import LONG_QUERY_TERMS, keyword_terms, query_terms, terms
from stanchion.core.filters import Condition, build_filter, parse_condition
from stanchion.errors import SearchError


class TestAnalyzer:
    def test_stems_folds_and_drops_stop_words(self) -> None:
        assert terms("The Cafés are RUNNING quickly") == ["cafe", "run", "quick"]

    def test_query_terms_distinct(self) -> None:
        assert query_terms("scanner scanners Scanner rollout") == ["scanner", "rollout"]

    def test_keyword_terms_count_repeats_in_a_passage_only(self) -> None:
        """A question's terms go to BM25 once each; a passage's as often as they occur."""
        assert keyword_terms("scanner scanners rollout") == ["scanner", "rollout"]
        words = [f"w{i}" for i in range(LONG_QUERY_TERMS)]
        passage = " ".join(["scanner", *words, "scanners"])
        found = keyword_terms(passage)
        assert found.count("scanner") == 2 and len(found) == LONG_QUERY_TERMS + 2

    def test_punctuation_and_underscores_split(self) -> None:
        assert terms("routing_service/v2: p95-latency") == ["rout", "servic", "v2", "p95", "latenc"]


class TestFilterParsing:
    @pytest.mark.parametrize(
        ("expr", "expected"),
        [
            ("team=ops", Condition("team", "eq", "ops")),
            ("page=3", Condition("page", "eq", 3)),
            ("page>=2.5", Condition("page", "gte", 2.5)),
            ("channel=general,random", Condition("channel", "in", ("general", "random"))),
            ("created_at<2025-01-01", Condition("created_at", "lt", "2025-01-01")),
            ("draft!=true", Condition("draft", "ne", True)),
        ],
    )
    def test_parse(self, expr: str, expected: Condition) -> None:
        assert parse_condition(expr) == expected

    @pytest.mark.parametrize("expr", ["team", "=ops", "team=", "bad key=1", "a'b=1"])
    def test_bad_filters_explain(self, expr: str) -> None:
        with pytest.raises(SearchError, match="filter"):
            parse_condition(expr)

    def test_reference_semantics(self) -> None:
        where = build_filter(["participants=Ana", "page>2"], groups=["slack:ops"])
        assert where.admits({"participants": ["Ana", "Bo"], "page": 3}, ["slack:ops"])
        assert not where.admits({"participants": ["Ana"], "page": 3}, ["slack:hr"])
        assert where.admits({"participants": ["Ana"], "page": 3}, [])  # public chunk
        assert not where.admits({"participants": ["Bo"], "page": 3}, [])
