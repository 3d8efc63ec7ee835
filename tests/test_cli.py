"""The command line: exit codes, --json shapes, errors that say what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stanchion.cli import app

runner = CliRunner()
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def invoke(
    *args: str, cwd: Path | None = None, monkeypatch: pytest.MonkeyPatch | None = None
) -> tuple[int, str, str]:
    if cwd is not None and monkeypatch is not None:
        monkeypatch.chdir(cwd)
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spec with one source, ingested once through the CLI for the search tests."""
    root = tmp_path_factory.mktemp("cli")
    docs = root / "docs"
    docs.mkdir()
    (docs / "fleet.md").write_text(
        "---\nteam: fleet\n---\n# Fleet\n\n## Tyres\n\nWinter tyres go on every truck by November 15.\n",
        encoding="utf-8",
    )
    (docs / "finance.md").write_text(
        "---\nteam: finance\n---\n# Finance\n\nInvoices are paid within thirty days of receipt.\n",
        encoding="utf-8",
    )
    (root / "stanchion.yaml").write_text(
        "sources:\n  - name: docs\n    path: docs\n    access_groups: [staff]\n", encoding="utf-8"
    )
    code, out, _ = invoke("ingest", "--spec", str(root / "stanchion.yaml"), "--json")
    assert code == 0, out
    return root


class TestInit:
    def test_writes_a_valid_spec_once(self, tmp_path: Path) -> None:
        code, _, _ = invoke("init", str(tmp_path))
        assert code == 0 and (tmp_path / "stanchion.yaml").is_file()
        code, _, err = invoke("init", str(tmp_path))
        assert code == 2 and "exists" in err


class TestIngest:
    def test_json_summary_keys(self, indexed: Path) -> None:
        code, out, _ = invoke("ingest", "--spec", str(indexed / "stanchion.yaml"), "--json")
        summary = json.loads(out)
        assert code == 0
        assert {"documents", "chunks", "skipped", "failed", "seconds"} <= set(summary)
        assert summary["documents"] == 0 and summary["skipped"] == 2  # nothing changed

    def test_partial_failure_exit_code_1(self, tmp_path: Path) -> None:
        (tmp_path / "ok.txt").write_text("Trucks leave the depot at five.", encoding="utf-8")
        (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.7 garbage")
        code, out, _ = invoke("ingest", str(tmp_path), "--spec", str(tmp_path / "none.yaml"), "--json")
        assert code == 2  # the named spec file does not exist: a usage error
        (tmp_path / "stanchion.yaml").write_text(f"index: {{path: {tmp_path / 'i.db'}}}\n", encoding="utf-8")
        code, out, _ = invoke("ingest", str(tmp_path), "--spec", str(tmp_path / "stanchion.yaml"), "--json")
        summary = json.loads(out)
        assert code == 1 and summary["documents"] == 1
        assert [Path(f["path"]).name for f in summary["failed"]] == ["bad.pdf"]

    def test_spec_error_exit_code_2(self, tmp_path: Path) -> None:
        (tmp_path / "stanchion.yaml").write_text(
            "sources:\n  - {name: a, path: x, chunking: {size: 100, overlap: 200}}\n", encoding="utf-8"
        )
        code, _, err = invoke("ingest", "--spec", str(tmp_path / "stanchion.yaml"))
        assert code == 2
        assert "sources[0].chunking.overlap: 200 must be smaller than size (100)" in err

    def test_unknown_source(self, indexed: Path) -> None:
        code, _, err = invoke("ingest", "--spec", str(indexed / "stanchion.yaml"), "--source", "nope")
        assert code == 2 and "no source named 'nope'" in err


class TestSearch:
    def test_json_hits(self, indexed: Path) -> None:
        code, out, _ = invoke(
            "search", "when do winter tyres go on", "--spec", str(indexed / "stanchion.yaml"), "--json"
        )
        result = json.loads(out)
        assert code == 0 and result["mode"] == "hybrid"
        top = result["hits"][0]
        assert top["document_id"] == "docs:fleet.md" and "November 15" in top["text"]
        assert top["metadata"]["heading_path"] == ["Fleet", "Tyres"]

    def test_filters_and_groups(self, indexed: Path) -> None:
        spec = str(indexed / "stanchion.yaml")
        code, out, _ = invoke(
            "search", "paid", "--spec", spec, "--mode", "bm25", "--filter", "team=fleet", "--json"
        )
        assert code == 0 and json.loads(out)["hits"] == []
        code, out, _ = invoke(
            "search", "paid", "--spec", spec, "--mode", "bm25", "--group", "contractors", "--json"
        )
        assert code == 0 and json.loads(out)["hits"] == []
        code, out, _ = invoke(
            "search", "paid", "--spec", spec, "--mode", "bm25", "--group", "staff", "--json"
        )
        assert [h["document_id"] for h in json.loads(out)["hits"]] == ["docs:finance.md"]

    def test_bad_mode_and_filter(self, indexed: Path) -> None:
        spec = str(indexed / "stanchion.yaml")
        code, _, err = invoke("search", "x", "--spec", spec, "--mode", "fast")
        assert code == 2 and "unknown search mode 'fast'" in err
        code, _, err = invoke("search", "x", "--spec", spec, "--filter", "team")
        assert code == 2 and "key=value" in err


class TestEvalRetrieval:
    def test_json_keys_and_quality(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("STANCHION_CACHE_DIR", str(tmp_path))
        code, out, _ = invoke(
            "eval", "retrieval", "--dataset", str(FIXTURES / "beir-mini"), "--mode", "hybrid", "--json"
        )
        report = json.loads(out)
        assert code == 0
        assert set(report) == {"ndcg@10", "recall@100", "mrr@10", "queries", "build_seconds", "latency_ms"}
        assert set(report["latency_ms"]) == {"p50", "p95"}
        assert report["queries"] == 4 and report["recall@100"] == 1.0
        assert report["ndcg@10"] > 0.8  # four unambiguous questions over twelve documents

    def test_missing_layout(self, tmp_path: Path) -> None:
        code, _, err = invoke("eval", "retrieval", "--dataset", str(tmp_path), "--json")
        assert code == 2 and "corpus.jsonl" in err
