"""An in-memory BM25 index over the analysed terms the SQLite store keeps in FTS5.

Why beside FTS5: at 100k chunks FTS5's ``bm25()`` ranking costs ~29 ms per SciFact query on the
2-core reference machine (it scores every matching row through an auxiliary function), which alone
breaks the 50 ms hybrid budget. Precomputed per-posting impacts summed with ``np.bincount`` take
~2 ms. FTS5 remains the durable keyword index (and a selectable engine); this is a cache of it,
rebuilt lazily when the file changes, exactly like the vector matrix.

Scoring is Okapi BM25 with k1=1.2, b=0.75 and Lucene's non-negative IDF
``log(1 + (N - df + 0.5) / (df + 0.5))``. A term repeated in the query counts as often as it
occurs, as in Lucene and ``bm25s``: a long query (a whole paragraph) says what it is about by
repeating it (nDCG@10 +0.045 with paragraphs as queries, ``bench/bm25_parity.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

K1 = 1.2
B = 0.75


class BM25Index:
    """Postings per term with precomputed impacts; rows are positions in ``rowids``."""

    def __init__(self, docs: Iterable[tuple[int, str]]) -> None:
        vocab: dict[str, int] = {}
        rows: list[int] = []
        term_ids: list[npt.NDArray[np.int64]] = []
        counts: list[npt.NDArray[np.int64]] = []
        lengths: list[int] = []
        for rowid, text in docs:
            tokens = text.split()
            tf = Counter(vocab.setdefault(t, len(vocab)) for t in tokens)
            rows.append(rowid)
            lengths.append(len(tokens))
            term_ids.append(np.fromiter(tf.keys(), dtype=np.int64, count=len(tf)))
            counts.append(np.fromiter(tf.values(), dtype=np.int64, count=len(tf)))
        self.rowids = np.asarray(rows, dtype=np.int64)
        self.vocab = vocab
        n_docs = len(rows)
        if n_docs == 0:
            self._ptr = np.zeros(1, dtype=np.int64)
            self._docs = np.zeros(0, dtype=np.int64)
            self._impacts = np.zeros(0, dtype=np.float32)
            return
        doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), [len(t) for t in term_ids])
        terms = np.concatenate(term_ids)
        tf_all = np.concatenate(counts).astype(np.float32)
        length = np.asarray(lengths, dtype=np.float32)
        avg = float(length.mean()) or 1.0
        df = np.bincount(terms, minlength=len(vocab)).astype(np.float32)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        norm = K1 * (1 - B + B * length[doc_of] / avg)
        impacts = idf[terms] * tf_all * (K1 + 1) / (tf_all + norm)
        order = np.argsort(terms, kind="stable")  # group postings by term (CSR by term)
        self._docs = doc_of[order]
        self._impacts = impacts[order].astype(np.float32)
        self._ptr = np.concatenate([[0], np.cumsum(np.bincount(terms, minlength=len(vocab)))]).astype(
            np.int64
        )

    def __len__(self) -> int:
        return len(self.rowids)

    def _weighted(self, term: int, times: int) -> npt.NDArray[np.float32]:
        impacts = self._impacts[self._ptr[term] : self._ptr[term + 1]]
        return impacts if times == 1 else impacts * np.float32(times)

    def search(
        self, terms: Sequence[str], k: int, allowed: npt.NDArray[np.int64] | None = None
    ) -> list[tuple[int, float]]:
        """Top ``k`` (row position, score) among documents matching any term; ``allowed`` restricts rows.
        A term given n times weighs n times (query term frequency)."""
        ids = [(self.vocab[t], n) for t, n in Counter(terms).items() if t in self.vocab]
        if not ids or k <= 0:
            return []
        docs = np.concatenate([self._docs[self._ptr[i] : self._ptr[i + 1]] for i, _ in ids])
        weights = np.concatenate([self._weighted(i, n) for i, n in ids])
        scores = np.bincount(docs, weights=weights, minlength=len(self.rowids))
        matched = np.zeros(len(self.rowids), dtype=bool)
        matched[docs] = True
        if allowed is not None:
            mask = np.zeros(len(self.rowids), dtype=bool)
            mask[allowed] = True
            matched &= mask
        candidates = np.flatnonzero(matched)
        if not len(candidates):
            return []
        top = min(k, len(candidates))
        cand_scores = scores[candidates]
        best = np.argpartition(-cand_scores, top - 1)[:top]
        # Score descending, then row order: deterministic ties.
        best = best[np.lexsort((candidates[best], -cand_scores[best]))]
        return [(int(candidates[i]), float(cand_scores[i])) for i in best]
