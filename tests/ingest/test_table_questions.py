"""The table collection (bench/collections/tables): with rows that carry their headers and labels,
the row that answers a question ranks first in hybrid search, where the old flattening did not.

A small real index (the collection's four documents, the packaged MiniLM) is built twice: with the
loaders of this checkout and with HTML tables flattened as before (``measure.flattened_tables``
minus its PDF part, so the PDF is read the same way both times).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stanchion.app import build
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.core.filters import SearchFilter
from stanchion.ingest.loaders import html
from stanchion.spec import IndexSpec, SourceSpec, Spec

COLLECTION = Path(__file__).resolve().parents[2] / "bench" / "collections" / "tables"
# Questions whose evidence row ranked below first with flattened tables, and first with rows.
FLIPPED = {
    "t03": "dividends paid in 2019",
    "t16": "how long are geocoded addresses cached by default",
}


def _measure() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tables_measure", COLLECTION / "measure.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def _flattened_html(measure: ModuleType) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:

        def table(self: Any, tag: Any, context: str = "") -> None:
            self._flush()
            self._builder.block(measure.legacy_table(tag))

        patch.setattr(html._Renderer, "_table", table)
        patch.setattr(html, "_is_table_title", lambda tag: False)
        yield


@pytest.fixture(scope="module")
def ranks(embedder: SentenceTransformerEmbedder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Rank of the first chunk holding the evidence row with its header, per variant and query."""
    measure = _measure()
    questions = measure.read_questions(COLLECTION)
    out: dict[str, dict[str, int | None]] = {}
    variants: dict[str, AbstractContextManager[None]] = {
        "before": _flattened_html(measure),
        "after": nullcontext(),
    }
    for name, context in variants.items():
        folder = tmp_path_factory.mktemp(name)
        spec = Spec(
            index=IndexSpec(path=str(folder / "index.db")),
            sources=[SourceSpec(name="docs", type="auto", path=str(COLLECTION / "docs"))],
        )
        with context:
            app = build(spec, embedder=embedder)
            try:
                assert not app.pipeline.run().failed
                for qid, question in questions.items():
                    hits = app.retriever.search(
                        question["text"], k=10, mode="hybrid", where=SearchFilter()
                    ).hits
                    flags = [measure.row_hit(hit.chunk, question) for hit in hits]
                    out.setdefault(name, {})[qid] = measure.first_rank(flags)
            finally:
                app.close()
    return {"ranks": out, "questions": questions}


class TestTableQuestions:
    """Hybrid search over the table collection, rows with headers against flattened tables."""

    def test_the_questions_are_the_ones_named(self, ranks: dict[str, Any]) -> None:
        """The collection still asks what this test checks."""
        assert {q: ranks["questions"][q]["text"] for q in FLIPPED} == FLIPPED

    @pytest.mark.parametrize("qid", sorted(FLIPPED))
    def test_the_row_ranks_first(self, ranks: dict[str, Any], qid: str) -> None:
        """With table-aware extraction the evidence row, with its header, is the top hit."""
        assert ranks["ranks"]["after"][qid] == 1

    @pytest.mark.parametrize("qid", sorted(FLIPPED))
    def test_flattened_tables_did_not(self, ranks: dict[str, Any], qid: str) -> None:
        """With "cell | cell" rows the top hit was elsewhere (prose, or rows cut from the header)."""
        assert ranks["ranks"]["before"][qid] != 1

    def test_no_question_gets_worse_at_five(self, ranks: dict[str, Any]) -> None:
        """Every row found in the top five before is still found there."""
        before, after = ranks["ranks"]["before"], ranks["ranks"]["after"]
        lost = [
            q for q, r in before.items() if r is not None and r <= 5 and (after[q] is None or after[q] > 5)
        ]
        assert lost == []
