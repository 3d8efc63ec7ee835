"""Does document-level evidence help our BM25? A chunk scored with its own BM25 plus ``w`` x the
BM25 of its document (or of the chunks around it), in ``bm25`` and ``hybrid`` modes, on the
indexes ``stanchion eval retrieval`` builds.

    python bench/squad_to_beir.py ../shared/data/covid-qa/covidQA_200423.squad.json /tmp/covidqa-beir
    python bench/bm25_document_evidence.py ../shared/data/beir-scifact:test \\
        ../shared/data/beir-scifact:train /tmp/covidqa-beir:test \\
        bench/collections/debian-manuals bench/collections/tables

Each dataset is a BEIR folder (``FOLDER:SPLIT``) or a collection (``bench/collections/*``), indexed
(or reused from the eval cache, ``STANCHION_CACHE_DIR``) exactly as the eval does. The chunks'
analysed terms are read from the SQLite index, so every variant ranks the same chunks with the
same terms and statistics as the ``bm25`` mode:

* ``chunks``: the ``bm25`` mode as shipped (a document ranks at its best chunk);
* ``+w doc``: each matching chunk scores its BM25 plus ``w`` x its document's, a document being
  its chunks' terms concatenated (tf and length summed), scored among all documents;
* ``+w doc≤M`` (``--caps``): as ``+w doc`` for documents of at most ``M`` chunks only;
* ``+w win±m``: as ``+w doc``, but the "document" of a chunk is itself and the ``m`` chunks
  either side of it in the same document (local context: a 900-page PDF is one document).

``hybrid`` fuses each variant's list with the store's dense list by z-score (the default), both
300 deep as the eval fetches them. Prints document nDCG@10 and, for collections, passage hit@10
and MRR@10.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from fusion_study import Lists, collect, score
from stanchion.core.analyze import keyword_terms
from stanchion.evals.retrieval import CHUNK_DEPTH, BeirDataset, collection_spec, eval_spec
from stanchion.index.bm25 import BM25Index
from stanchion.retrieve.fusion import fuse
from stanchion.spec import Spec

Ranking = list[tuple[str, float]]


class Evidence:
    """The chunk index and one pseudo-document index per variant, read from an eval index file."""

    def __init__(self, index_file: Path) -> None:
        db = sqlite3.connect(index_file)
        rows = db.execute(
            "SELECT c.id, c.document_id, t.terms FROM chunk_terms t JOIN chunks c ON c.rowid = t.rowid"
            " ORDER BY c.document_id, c.position, c.rowid"
        ).fetchall()
        db.close()
        self.ids = [r[0] for r in rows]
        self.owner = [r[1] for r in rows]
        self.terms = [r[2] for r in rows]
        self.chunks = BM25Index(enumerate(self.terms))
        self.pseudo: dict[str, BM25Index] = {}
        self.pseudo_of: dict[str, list[int]] = {}

    def add_documents(self, max_chunks: int | None = None) -> str:
        """Whole documents; with ``max_chunks``, only those of at most that many chunks (the
        chunks of longer ones get no evidence, and their documents count in no statistic)."""
        name = "doc" if max_chunks is None else f"doc≤{max_chunks}"
        sizes = Counter(self.owner)
        names: dict[str, int] = {}
        texts: list[list[str]] = []
        of: list[int] = []
        for owner, terms in zip(self.owner, self.terms, strict=True):
            if max_chunks is not None and sizes[owner] > max_chunks:
                of.append(-1)
                continue
            if owner not in names:
                names[owner] = len(texts)
                texts.append([])
            texts[names[owner]].append(terms)
            of.append(names[owner])
        self.pseudo[name] = BM25Index((i, " ".join(t)) for i, t in enumerate(texts))
        self.pseudo_of[name] = of
        return name

    def add_windows(self, m: int) -> str:
        name = f"win±{m}"
        texts = []
        for i, owner in enumerate(self.owner):
            around = [
                self.terms[j]
                for j in range(max(0, i - m), min(len(self.terms), i + m + 1))
                if self.owner[j] == owner
            ]
            texts.append(" ".join(around))
        self.pseudo[name] = BM25Index(enumerate(texts))
        self.pseudo_of[name] = list(range(len(texts)))
        return name

    def ranking(self, text: str, variant: str | None, weight: float) -> Ranking:
        terms = keyword_terms(text)
        scored = self.chunks.search(terms, len(self.chunks))
        if variant is not None and weight:
            of_pseudo = dict(self.pseudo[variant].search(terms, len(self.pseudo[variant])))
            of = self.pseudo_of[variant]
            scored = [(row, s + weight * of_pseudo.get(of[row], 0.0)) for row, s in scored]
            scored.sort(key=lambda rs: (-rs[1], rs[0]))
        return [(self.ids[row], s) for row, s in scored[:CHUNK_DEPTH]]


def index_file(target: str) -> Path:
    folder, _, split = target.partition(":")
    path = Path(folder)
    if (path / "collection.yaml").is_file():
        from stanchion.evals.collection import Collection

        spec = collection_spec(Collection.load(path), Spec())
    else:
        spec = eval_spec(BeirDataset.load(path, split or "test"), Spec())
    return Path(spec.resolve(spec.index.path))


def name_chunks(target: str, lists: Lists, chunk_ids: set[str]) -> None:
    """Add the document and passage names of chunks the store's own lists did not return."""
    missing = sorted(chunk_ids - lists.document_of.keys())
    if not missing:
        return
    from stanchion.evals.collection import Collection, chunk_document, chunk_passage
    from stanchion.index.sqlite import SQLiteStore

    store = SQLiteStore(index_file(target))
    try:
        chunks = store.chunks(missing)
    finally:
        store.close()
    path = Path(target.partition(":")[0])
    paths = Collection.load(path).source_paths() if (path / "collection.yaml").is_file() else None
    for chunk in chunks:
        if paths is None:
            document = str(chunk.metadata.get("beir_id") or chunk.document_id.split(":", 1)[-1])
            lists.document_of[chunk.id] = lists.passage_of[chunk.id] = document
        else:
            document = chunk_document(chunk, paths)
            lists.document_of[chunk.id], lists.passage_of[chunk.id] = document, chunk_passage(chunk, document)


def queries_of(target: str) -> dict[str, str]:
    folder, _, split = target.partition(":")
    path = Path(folder)
    if (path / "collection.yaml").is_file():
        from stanchion.evals.collection import Collection

        return Collection.load(path).queries
    return BeirDataset.load(path, split or "test").queries


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("datasets", nargs="+", help="BEIR folders (FOLDER:SPLIT) or collections")
    parser.add_argument("--weights", default="0.25,0.5", help="document weights w to try")
    parser.add_argument("--windows", default="1,2", help="window half-widths m to try")
    parser.add_argument("--caps", default="", help="document sizes (chunks) to cap the evidence at")
    args = parser.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    windows = [int(m) for m in args.windows.split(",") if m]
    print(f"{'data set':<24}{'variant':<16}{'mode':<8}{'nDCG@10':>9}{'passage hit@10':>16}{'MRR@10':>8}")
    for target in args.datasets:
        lists = collect(target, "test")  # builds or reuses the index; the store's bm25 and dense lists
        evidence = Evidence(index_file(target))
        variants: list[tuple[str, str | None, float]] = [("chunks", None, 0.0)]
        doc = evidence.add_documents()
        variants += [(f"+{w} doc", doc, w) for w in weights]
        for cap in [int(c) for c in args.caps.split(",") if c]:
            capped = evidence.add_documents(cap)
            variants += [(f"+{w} {capped}", capped, w) for w in weights]
        for m in windows:
            win = evidence.add_windows(m)
            variants += [(f"+{w} {win}", win, w) for w in weights]
        queries = queries_of(target)
        for label, variant, weight in variants:
            bm25 = {q: evidence.ranking(queries[q], variant, weight) for q in lists.bm25}
            name_chunks(target, lists, {c for r in bm25.values() for c, _ in r})
            for mode in ("bm25", "hybrid"):
                s = score(Lists(lists.name, bm25, lists.dense, *_names(lists)), _method(mode))
                passage = (
                    f"{s['passage_hit@10']:>16.4f}{s['passage_mrr@10']:>8.4f}"
                    if "passage_hit@10" in s
                    else ""
                )
                print(f"{lists.name:<24}{label:<16}{mode:<8}{s['ndcg@10']:>9.4f}{passage}", flush=True)


def _names(
    lists: Lists,
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    return lists.document_of, lists.passage_of, lists.qrels, lists.passage_qrels


def _method(mode: str) -> Callable[[Ranking, Ranking], Sequence[str]]:
    def run(bm25: Ranking, dense: Ranking) -> Sequence[str]:
        if mode == "bm25":
            return [c for c, _ in bm25]
        return [c for c, _ in fuse("zscore", {"bm25": bm25, "dense": dense})]

    return run


if __name__ == "__main__":
    sys.exit(main())
