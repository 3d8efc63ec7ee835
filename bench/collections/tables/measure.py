"""Table questions, before and after table-aware extraction, in one process.

For every question of this collection the evidence is one table row. Each variant ingests the
collection's documents into a fresh index and runs every question in bm25, dense and hybrid mode:

- ``before``: tables flattened as the HTML loader did until now (a ``cell | cell`` line per row,
  header rows on top of the table only) and PDF pages read without table detection;
- ``after``: the loaders of this checkout (one ``column: value; ...`` line per row that carries
  its headers and row label, see ``stanchion.ingest.tables``).

Two scores, hit@1 and hit@5 each:

- ``row``: a retrieved chunk holds the evidence row with its header: one line with the row label
  and the answer, and the column's name (the year, "Default") in the same chunk. A chunk that
  holds the numbers without saying which column they are in does not count.
- ``passage``: the collection's own judgement (``qrels.tsv``): the section or page ranks there,
  as ``stanchion eval retrieval --dataset bench/collections/tables`` scores it.

Run from the repository root (about two minutes on 2 cores, the model load included)::

    python bench/collections/tables/measure.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bs4 import Tag

from stanchion.app import build
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.core.filters import SearchFilter
from stanchion.evals.collection import Collection, rank_passages
from stanchion.evals.retrieval import collection_spec
from stanchion.ingest.loaders import html
from stanchion.spec import Spec
from stanchion.types import Chunk

FOLDER = Path(__file__).resolve().parent
MODES = ("bm25", "dense", "hybrid")
DEPTH = 20


def legacy_table(table: Tag) -> str:
    """The HTML loader's table text before this change: "cell | cell" rows, header rows first."""
    head: list[str] = []
    body: list[str] = []
    for row in table.find_all("tr"):
        if row.find_parent("table") is not table:
            continue
        cells = row.find_all(("td", "th"), recursive=False)
        texts = [html._text(cell) for cell in cells]
        if not any(texts):
            continue
        line = " | ".join(texts)
        is_head = row.find_parent("thead") is not None or all(c.name == "th" for c in cells)
        (head if is_head else body).append(line)
    caption = table.find("caption")
    lines = ([html._text(caption)] if isinstance(caption, Tag) and html._text(caption) else []) + head + body
    return "\n".join(lines)


@contextmanager
def flattened_tables() -> Iterator[None]:
    """The loaders as they were: HTML tables flattened, PDF pages read without table detection."""
    from stanchion.ingest.loaders import pdf

    saved: dict[tuple[Any, str], Any] = {}

    def patch(owner: Any, name: str, value: Any) -> None:
        if hasattr(owner, name):
            saved[(owner, name)] = getattr(owner, name)
            setattr(owner, name, value)

    def table(self: Any, tag: Tag, context: str = "") -> None:
        self._flush()
        self._builder.block(legacy_table(tag))

    patch(html._Renderer, "_table", table)
    patch(html, "_is_table_title", lambda tag: False)
    patch(pdf, "_tables", lambda *args, **kwargs: [])
    try:
        yield
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


def row_hit(chunk: Chunk, question: dict[str, Any]) -> bool:
    """The chunk holds the evidence row (label and answer on one line) and the column's name."""
    text = chunk.text
    row, answer, column = str(question["row"]), str(question["answer"]), str(question["column"])
    return column in text and any(row in line and answer in line for line in text.splitlines())


def first_rank(flags: list[bool]) -> int | None:
    return next((i + 1 for i, flag in enumerate(flags) if flag), None)


def measure(
    collection: Collection,
    questions: dict[str, dict[str, Any]],
    embedder: SentenceTransformerEmbedder,
    work: Path,
    modes: tuple[str, ...] = MODES,
) -> dict[str, dict[str, float]]:
    """hit@1 and hit@5 by mode, for rows and for the collection's passages; ingests into ``work``."""
    spec = collection_spec(collection, Spec(), cache_dir=work)
    passages = collection.passage_qrels()
    source_paths = collection.source_paths()
    app = build(spec, embedder=embedder)
    out: dict[str, dict[str, float]] = {}
    try:
        summary = app.pipeline.run()
        if summary.failed:
            raise SystemExit(f"ingest failed: {summary.failed[0].path}: {summary.failed[0].reason}")
        for mode in modes:
            ranks: dict[str, list[int | None]] = {"row": [], "passage": []}
            for qid, text in collection.queries.items():
                hits = app.retriever.search(text, k=DEPTH, mode=mode, where=SearchFilter()).hits
                chunks = [h.chunk for h in hits]
                ranks["row"].append(first_rank([row_hit(c, questions[qid]) for c in chunks]))
                judged = passages.get(qid, {})
                ranks["passage"].append(
                    first_rank([p in judged for p in rank_passages(chunks, source_paths)])
                )
            n = len(collection.queries)
            out[mode] = {
                f"{kind}_hit@{k}": sum(1 for r in found if r is not None and r <= k) / n
                for kind, found in ranks.items()
                for k in (1, 5)
            }
    finally:
        app.close()
    return out


def read_questions(folder: Path) -> dict[str, dict[str, Any]]:
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        return {str(q["_id"]): q for q in map(json.loads, filter(str.strip, handle))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    collection = Collection.load(FOLDER, data_root=FOLDER)
    questions = read_questions(FOLDER)
    embedder = SentenceTransformerEmbedder()
    embedder.warm_up()
    results: dict[str, dict[str, dict[str, float]]] = {}
    variants: dict[str, Callable[[], Any]] = {"before": flattened_tables, "after": _nothing}
    for name, context in variants.items():
        with tempfile.TemporaryDirectory(prefix=f"tables-{name}-") as work, context():
            results[name] = measure(collection, questions, embedder, Path(work))
    if args.json:
        print(json.dumps({"queries": len(collection.queries), **results}, indent=2))
        return 0
    print(f"{len(collection.queries)} table questions; row = the chunk holds the row with its header")
    print("| mode | row hit@1 before -> after | row hit@5 | passage hit@1 | passage hit@5 |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        b, a = results["before"][mode], results["after"][mode]
        cells = [
            f"{b[key]:.2f} -> {a[key]:.2f}"
            for key in ("row_hit@1", "row_hit@5", "passage_hit@1", "passage_hit@5")
        ]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    return 0


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    sys.exit(main())
