"""``stanchion eval retrieval`` on a BEIR folder: what is scored as a query's ranking."""

from __future__ import annotations

import json
from pathlib import Path

from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.evals.retrieval import BeirDataset, run_retrieval_eval
from stanchion.spec import Spec

ARGUMENTS = {
    "pro1": "School uniforms save families money because one set of clothes lasts the whole school year.",
    "con1": "Uniforms cost families money too: a school set of clothes is dearer than ordinary clothes.",
    "other": "Wind farms change the landscape and the birds that live near the turbines.",
}


class TestQueriesThatAreDocuments:
    def test_a_query_does_not_find_itself(
        self, tmp_path: Path, embedder: SentenceTransformerEmbedder
    ) -> None:
        """As in ArguAna: the query is a document of the corpus under the same id; its own document is
        left out of its ranking (BEIR's ignore_identical_ids), so the counter-argument ranks first."""
        folder = tmp_path / "args"
        (folder / "qrels").mkdir(parents=True)
        (folder / "corpus.jsonl").write_text(
            "".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in ARGUMENTS.items())
        )
        (folder / "queries.jsonl").write_text(json.dumps({"_id": "pro1", "text": ARGUMENTS["pro1"]}) + "\n")
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\npro1\tcon1\t1\n")
        report = run_retrieval_eval(
            BeirDataset.load(folder), Spec(), mode="bm25", cache_dir=tmp_path / "cache", embedder=embedder
        )
        assert report.queries == 1
        assert report.mrr_at_10 == 1.0  # counted from 2nd place, it would be 0.5
