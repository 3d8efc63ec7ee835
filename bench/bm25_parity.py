"""Our ``bm25`` mode beside a plain BM25 (the ``bm25s`` package with Snowball English stemming),
on the same documents and queries, with the steps between them one at a time.

    pip install -e '.[bench]'   # bm25s
    python bench/bm25_parity.py ../shared/data/beir-scifact:test ../shared/data/beir-scifact:train
    python bench/squad_to_beir.py ../shared/data/covid-qa/covidQA_200423.squad.json /tmp/covidqa-beir
    python bench/bm25_parity.py /tmp/covidqa-beir:test

Each argument is a BEIR folder, optionally ``:SPLIT`` (default test). No embedding is needed: our
side is indexed exactly as the stores do it (the BEIR loader, the chunker at the default 256/32
tokens, ``index_text`` with the title, ``core/analyze.py``, ``index/bm25.py``), and a document
scores as its best chunk, as ``stanchion eval retrieval`` ranks documents. Rows:

* ``bm25s``: whole documents (title + text), bm25s's tokenizer and its 33 English stop words,
  PyStemmer Snowball English, Lucene BM25 with bm25s's defaults k1=1.5, b=0.75.
* ``ours``: the ``bm25`` mode as shipped.
* then ours with one thing changed at a time, to show where any gap comes from: each query term
  once (as before), repeats counted in short queries too, whole documents instead of
  chunks, bm25s's tokenizer and stop words, k1, and a chunk scored with half its document's BM25
  added (document-level evidence for best-chunk ranking).

Besides nDCG@10, R@100 and MRR@10, ``no self`` is nDCG@10 with a query's own id left out of its
ranking (BEIR's ``ignore_identical_ids``): in collections whose queries are also documents
(ArguAna, Quora, ``bench/long_query_sets.py``) every system finds the query itself first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


from stanchion.core import analyze
from stanchion.core.packaged import MINILM_NAME
from stanchion.core.text import index_text
from stanchion.evals.metrics import evaluate
from stanchion.evals.retrieval import DOC_DEPTH, BeirDataset
from stanchion.index import bm25 as bm25_module
from stanchion.index.bm25 import BM25Index
from stanchion.ingest.chunk import ChunkingOptions, chunk_document
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.beir import load_beir
from stanchion.ingest.tokens import tokenizer_for

try:
    import bm25s
    import Stemmer
except ImportError:  # pragma: no cover - bench dependency
    sys.exit("bm25s is a bench dependency: pip install -e '.[bench]'")

Analyzer = Callable[[str], list[str]]
_BM25S_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default token pattern


def bm25s_terms(text: str) -> list[str]:
    """bm25s's analysis: lower case, words of 2+ characters, its English stop words, Snowball."""
    stop = set(bm25s.stopwords.STOPWORDS_EN)
    words = [w for w in _BM25S_TOKEN.findall(text.lower()) if w not in stop]
    return list(Stemmer.Stemmer("english").stemWords(words))


class Corpus:
    """One BEIR corpus as documents (title + text) and as the chunks our stores index."""

    def __init__(self, corpus: Path) -> None:
        self.doc_ids: list[str] = []
        self.doc_texts: list[str] = []
        with corpus.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    self.doc_ids.append(str(record["_id"]))
                    self.doc_texts.append(f"{record.get('title') or ''} {record.get('text') or ''}".strip())
        tokenizer = tokenizer_for(MINILM_NAME)
        self.chunk_doc: list[str] = []
        self.chunk_texts: list[str] = []
        for doc in load_beir(corpus, LoadContext(source="corpus", relpath=corpus.name)):
            for chunk in chunk_document(doc, ChunkingOptions(), tokenizer):
                self.chunk_doc.append(str(doc.metadata["beir_id"]))
                self.chunk_texts.append(index_text(chunk))


def ours(
    texts: Sequence[str],
    owners: Sequence[str],
    queries: dict[str, str],
    *,
    terms: Analyzer = analyze.terms,
    query_terms: Analyzer = analyze.keyword_terms,
    k1: float = bm25_module.K1,
) -> dict[str, list[str]]:
    """BM25Index over ``texts`` (chunks or documents); a document ranks at its best text."""
    saved = bm25_module.K1
    bm25_module.K1 = k1  # read when the index computes its impacts
    try:
        index = BM25Index((i, " ".join(terms(t))) for i, t in enumerate(texts))
    finally:
        bm25_module.K1 = saved
    run: dict[str, list[str]] = {}
    for qid, text in queries.items():
        ranked = dict.fromkeys(owners[row] for row, _ in index.search(query_terms(text), 3 * DOC_DEPTH))
        run[qid] = list(ranked)[:DOC_DEPTH]
    return run


def ours_with_document(corpus: Corpus, queries: dict[str, str], share: float = 0.5) -> dict[str, list[str]]:
    """As ``ours`` (chunks), but a chunk scores its own BM25 plus ``share`` x its whole document's."""
    chunks = BM25Index((i, " ".join(analyze.terms(t))) for i, t in enumerate(corpus.chunk_texts))
    docs = BM25Index((i, " ".join(analyze.terms(t))) for i, t in enumerate(corpus.doc_texts))
    run: dict[str, list[str]] = {}
    for qid, text in queries.items():
        terms = analyze.keyword_terms(text)
        of_doc = {corpus.doc_ids[row]: score for row, score in docs.search(terms, len(docs))}
        best: dict[str, float] = {}
        for row, score in chunks.search(terms, len(chunks)):
            doc = corpus.chunk_doc[row]
            best[doc] = max(best.get(doc, 0.0), score + share * of_doc.get(doc, 0.0))
        run[qid] = sorted(best, key=lambda d: -best[d])[:DOC_DEPTH]
    return run


def plain_bm25s(corpus: Corpus, queries: dict[str, str]) -> dict[str, list[str]]:
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()  # method="lucene", k1=1.5, b=0.75
    retriever.index(bm25s.tokenize(corpus.doc_texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)  # fmt: skip
    qids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
    k = min(DOC_DEPTH, len(corpus.doc_ids))
    rows, _ = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    return {q: [corpus.doc_ids[i] for i in row] for q, row in zip(qids, rows, strict=True)}


def systems(corpus: Corpus, queries: dict[str, str]) -> dict[str, Callable[[], dict[str, list[str]]]]:
    """Each system's run over ``queries``, computed when called."""
    chunks, docs = (corpus.chunk_texts, corpus.chunk_doc), (corpus.doc_texts, corpus.doc_ids)

    return {
        "bm25s (documents, Snowball, k1=1.5)": lambda: plain_bm25s(corpus, queries),
        "ours (chunks 256/32, best chunk)": lambda: ours(*chunks, queries),
        "ours, query terms once (before)": lambda: ours(*chunks, queries, query_terms=analyze.query_terms),
        "ours, repeats counted in every query": lambda: ours(*chunks, queries, query_terms=analyze.terms),
        "ours, whole documents": lambda: ours(*docs, queries),
        "ours, whole documents, k1=1.5": lambda: ours(*docs, queries, k1=1.5),
        "ours, whole documents, bm25s analysis": lambda: ours(
            *docs, queries, terms=bm25s_terms, query_terms=bm25s_terms
        ),
        "ours, chunks, k1=1.5": lambda: ours(*chunks, queries, k1=1.5),
        "ours, chunks + 0.5 x document score": lambda: ours_with_document(corpus, queries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("datasets", nargs="+", help="BEIR folders, FOLDER or FOLDER:SPLIT (default test)")
    args = parser.parse_args()
    print(f"{'data set':<24}{'system':<44}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}{'no self':>9}{'s':>7}")
    corpora: dict[Path, Corpus] = {}
    for target in args.datasets:
        folder, _, split = target.partition(":")
        data = BeirDataset.load(Path(folder), split or "test")
        if data.corpus not in corpora:
            corpora[data.corpus] = Corpus(data.corpus)
        name = f"{Path(folder).name}/{split or 'test'}"
        for system, run in systems(corpora[data.corpus], data.queries).items():
            started = time.perf_counter()
            ranked = run()
            scores = evaluate(ranked, data.qrels)
            # BEIR's ignore_identical_ids: a query that is itself a document (ArguAna, Quora)
            # must not be credited or blamed for finding itself.
            no_self = evaluate({q: [d for d in r if d != q] for q, r in ranked.items()}, data.qrels)
            print(
                f"{name:<24}{system:<44}{scores['ndcg@10']:>9.4f}{scores['recall@100']:>8.4f}"
                f"{scores['mrr@10']:>8.4f}{no_self['ndcg@10']:>9.4f}{time.perf_counter() - started:>7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
