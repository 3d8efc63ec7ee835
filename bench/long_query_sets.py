"""Build BEIR folders whose queries are whole passages, as in ArguAna and Quora, from ../shared/data.

None of our collections has long queries, and in ArguAna and Quora each query is also a document
of the corpus, under the same id. These two are built from data here to reproduce both:

* ``scifact-halves``: every SciFact abstract of 4 or more sentences cut at its middle sentence; the
  corpus holds both halves (``ID-a``, ``ID-b``, no title), every fifth first half is a query (id
  ``ID-a``, the same as its own document, like ArguAna's), and its second half is the one relevant
  document. Queries of ~100 words, topical overlap rather than shared phrases.
* ``mrpc-pairs``: the MRPC train pairs judged paraphrases; the corpus holds every sentence of the
  train file, each first sentence is a query (id = its own document's) and its paraphrase is
  the relevant document, like Quora's duplicate questions.

    python bench/long_query_sets.py ../shared/data /tmp/long-queries
    python bench/bm25_parity.py /tmp/long-queries/scifact-halves /tmp/long-queries/mrpc-pairs
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from stanchion.core.sentences import split_sentences


def _write(out: Path, corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, str]) -> None:
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for doc_id, text in corpus.items():
            handle.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for qid, text in queries.items():
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{qid}\t{doc}\t1\n" for qid, doc in qrels.items())


def scifact_halves(scifact: Path, out: Path, every: int = 5) -> int:
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, str] = {}
    eligible = 0
    with (scifact / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            sentences = split_sentences(record.get("text") or "")
            if len(sentences) < 4:
                continue
            half = len(sentences) // 2
            a, b = f"{record['_id']}-a", f"{record['_id']}-b"
            corpus[a], corpus[b] = " ".join(sentences[:half]), " ".join(sentences[half:])
            if eligible % every == 0:
                queries[a], qrels[a] = corpus[a], b
            eligible += 1
    _write(out, corpus, queries, qrels)
    return len(queries)


def mrpc_pairs(mrpc: Path, out: Path) -> int:
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, str] = {}
    with mrpc.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            one, two = f"s{row['#1 ID']}", f"s{row['#2 ID']}"
            corpus[one], corpus[two] = row["#1 String"], row["#2 String"]
            if row["Quality"] == "1" and one not in queries:
                queries[one], qrels[one] = corpus[one], two
    _write(out, corpus, queries, qrels)
    return len(queries)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    n = scifact_halves(data / "beir-scifact", out / "scifact-halves")
    print(f"{out / 'scifact-halves'}: {n} queries")
    n = mrpc_pairs(data / "mrpc" / "msr_paraphrase_train.txt", out / "mrpc-pairs")
    print(f"{out / 'mrpc-pairs'}: {n} queries")


if __name__ == "__main__":
    main()
