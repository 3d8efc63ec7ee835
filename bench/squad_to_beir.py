"""Turn a SQuAD-layout QA file into a BEIR folder (article = document, question -> its article).

Gives a second, very different retrieval collection (few long articles, many chunks each) to
check that fusion choices generalise beyond SciFact.

    python bench/squad_to_beir.py ../shared/data/covid-qa/covidQA_200423.squad.json /tmp/covidqa-beir
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def convert(squad_file: Path, out: Path) -> tuple[int, int]:
    data = json.loads(squad_file.read_text(encoding="utf-8"))["data"]
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    docs = queries = 0
    with (
        (out / "corpus.jsonl").open("w") as corpus,
        (out / "queries.jsonl").open("w") as qfile,
        (out / "qrels" / "test.tsv").open("w") as qrels,
    ):
        qrels.write("query-id\tcorpus-id\tscore\n")
        for a, article in enumerate(data):
            for p, para in enumerate(article["paragraphs"]):
                doc_id = str(para.get("document_id", f"{a}-{p}"))
                corpus.write(
                    json.dumps({"_id": doc_id, "title": article.get("title", ""), "text": para["context"]})
                    + "\n"
                )
                docs += 1
                for qa in para["qas"]:
                    qid = f"q{qa['id']}"  # never a document's id (an evaluation leaves those out)
                    qfile.write(json.dumps({"_id": qid, "text": qa["question"]}) + "\n")
                    qrels.write(f"{qid}\t{doc_id}\t1\n")
                    queries += 1
    return docs, queries


if __name__ == "__main__":
    docs, queries = convert(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{docs} documents, {queries} queries -> {sys.argv[2]}")
